//! A pod's network namespace, as a CNI bridge plugin leaves it, for the tests of VMs that
//! share one (`RUNQ_NET=shared`).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::json;

use super::TestBundle;

/// A named network namespace with one veth to the host, as a CNI bridge plugin would leave
/// a pod's; removed on drop.
pub struct PodNamespace {
    name: String,
    host_link: String,
    pub host_ip: Ipv4Addr,
    pub pod_ip: Ipv4Addr,
}

impl PodNamespace {
    /// Names and a subnet of this process's own: one of four at a time per test binary.
    pub fn create() -> PodNamespace {
        static CREATED: AtomicU8 = AtomicU8::new(0);
        let number = CREATED.fetch_add(1, Ordering::Relaxed) % 4;
        let pid = std::process::id();
        let subnet = (pid % 250) as u8;
        let pod = PodNamespace {
            name: format!("runq-pod-{pid}-{number}"),
            host_link: format!("rq{pid}p{number}"),
            host_ip: Ipv4Addr::new(10, 251 - number, subnet, 1),
            pod_ip: Ipv4Addr::new(10, 251 - number, subnet, 2),
        };
        let (ns, link) = (pod.name.as_str(), pod.host_link.as_str());
        let host_cidr = format!("{}/24", pod.host_ip);
        let pod_cidr = format!("{}/24", pod.pod_ip);
        let host_ip = pod.host_ip.to_string();
        for args in [
            &["netns", "add", ns][..],
            &[
                "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
            &["addr", "add", &host_cidr, "dev", link],
            &["link", "set", link, "up"],
            &["-n", ns, "addr", "add", &pod_cidr, "dev", "eth0"],
            &["-n", ns, "link", "set", "eth0", "up"],
            &["-n", ns, "link", "set", "lo", "up"],
            &["-n", ns, "route", "add", "default", "via", &host_ip],
        ] {
            let status = Command::new("ip").args(args).status().expect("ip");
            assert!(status.success(), "ip {args:?} failed");
        }
        pod
    }

    /// Sets `net.ipv6.conf.{all,default,lo}.disable_ipv6` in the namespace, `all` first (it
    /// sets the other two).
    pub fn set_ipv6_off(&self, all: bool, default: bool, lo: bool) {
        for (scope, off) in [("all", all), ("default", default), ("lo", lo)] {
            let setting = format!("net.ipv6.conf.{scope}.disable_ipv6={}", u8::from(off));
            let status = Command::new("ip")
                .args(["netns", "exec", &self.name, "sysctl", "-qw", &setting])
                .status()
                .expect("ip netns exec sysctl");
            assert!(status.success(), "sysctl {setting} in {}", self.name);
        }
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// The processes in the namespace.
    pub fn pids(&self) -> Vec<String> {
        let pids = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&pids.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    /// A busybox bundle whose container joins this namespace.
    pub fn bundle(&self, args: &[&str]) -> TestBundle {
        let bundle = TestBundle::busybox(args);
        let path = self.path();
        bundle.edit(|spec| {
            let namespaces = spec["linux"]["namespaces"]
                .as_array_mut()
                .expect("namespaces");
            namespaces.retain(|ns| ns["type"] != "network");
            namespaces.push(json!({"type": "network", "path": path}));
        });
        bundle.add_env(&["RUNQ_NET=shared"]);
        bundle
    }
}

impl Drop for PodNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

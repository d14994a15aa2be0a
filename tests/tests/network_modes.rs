//! How the container's interfaces reach the VM: tap devices with tc redirects (the default)
//! and macvtap (`RUNQ_NET=macvtap`), on bridge and macvlan networks, and what is left on the
//! host afterwards: nothing.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::docker::{docker, run, Name, Runtime, IMAGE};
use common::net::{
    address_of, fetch_script, ip, start_server, wait_for_greeting, MacvlanParent, Network,
};

const MACVTAP: &str = "RUNQ_NET=macvtap";

/// Held by every test that makes macvtaps, so that the leftover check sees only its own.
static MACVTAP_DEVICES: Mutex<()> = Mutex::new(());

fn macvtap_lock() -> std::sync::MutexGuard<'static, ()> {
    MACVTAP_DEVICES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The macvtap character devices on the host: devtmpfs shows those of every namespace.
fn macvtap_nodes() -> BTreeSet<String> {
    std::fs::read_dir("/dev")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| {
                    name.strip_prefix("tap")
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn macvtap_mode_serves_a_published_port_and_reaches_a_runc_container() {
    let _lock = macvtap_lock();
    let vm = Name::new();
    start_server(
        Runtime::Runq,
        &vm,
        "from-macvtap",
        &["-e", MACVTAP, "-p", "127.0.0.1::8080"],
    );
    let port = docker(&["port", &vm.0, "8080/tcp"]).stdout_text();
    wait_for_greeting(
        port.lines().next().unwrap_or_default().trim(),
        "from-macvtap",
    );

    let plain = Name::new();
    let plain_ip = start_server(Runtime::Runc, &plain, "from-runc", &[]);
    let outcome = run(
        Runtime::Runq,
        &["-e", MACVTAP],
        &["sh", "-c", &fetch_script(&plain_ip)],
    );
    assert_eq!(outcome.stdout_text().trim(), "from-runc", "{outcome:?}");
}

#[test]
fn runq_containers_reach_each_other_on_a_macvlan_network_in_both_modes() {
    let _lock = macvtap_lock();
    let parent = MacvlanParent::create("a");
    let network = Network::macvlan(&parent, "10.231.1.0/24");
    let server = Name::new();
    let server_ip = start_server(
        Runtime::Runq,
        &server,
        "over-macvlan",
        &["--network", &network.0],
    );
    assert!(server_ip.starts_with("10.231.1."), "{server_ip}");
    for mode in ["RUNQ_NET=tap", MACVTAP] {
        let script = format!(
            "ping -c 1 -w 60 {server_ip} >/dev/null && {}",
            fetch_script(&server_ip)
        );
        let outcome = run(
            Runtime::Runq,
            &["--network", &network.0, "-e", mode],
            &["sh", "-c", &script],
        );
        assert_eq!(
            outcome.stdout_text().trim(),
            "over-macvlan",
            "{mode}: {outcome:?}"
        );
    }
}

/// The interfaces and addresses of a container on a bridge network, connected to another
/// bridge and two macvlan networks before start.
fn interfaces_on_four_networks(runtime: Runtime, networks: &[Network; 4], env: &str) -> String {
    let name = Name::new();
    let mut create = vec![
        "create",
        "--name",
        &name.0,
        "-e",
        env,
        "--network",
        &networks[0].0,
    ];
    if runtime == Runtime::Runq {
        create.extend(["--runtime", "runq"]);
    }
    let script = "ip -o -4 addr | awk '{print $2, $4}'; ls /sys/class/net";
    create.extend([IMAGE, "sh", "-c", script]);
    let created = docker(&create);
    assert_eq!(created.code(), 0, "{created:?}");
    for network in &networks[1..] {
        let connected = docker(&["network", "connect", &network.0, &name.0]);
        assert_eq!(connected.code(), 0, "{connected:?}");
    }
    let outcome = docker(&["start", "-a", &name.0]);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    let mut lines: Vec<String> = outcome.stdout_text().lines().map(str::to_string).collect();
    lines.sort();
    lines.join("\n")
}

#[test]
fn two_bridges_and_two_macvlans_all_reach_the_vm_as_under_runc() {
    let _lock = macvtap_lock();
    let parents = [MacvlanParent::create("b"), MacvlanParent::create("c")];
    let networks = [
        Network::create(&[]),
        Network::create(&[]),
        Network::macvlan(&parents[0], "10.231.2.0/24"),
        Network::macvlan(&parents[1], "10.231.3.0/24"),
    ];
    let reference = interfaces_on_four_networks(Runtime::Runc, &networks, "RUNQ_NET=tap");
    for mode in ["RUNQ_NET=tap", MACVTAP] {
        let text = interfaces_on_four_networks(Runtime::Runq, &networks, mode);
        assert_eq!(text, reference, "{mode}");
    }
    for expected in ["lo 127.0.0.1/8", " 10.231.2.", " 10.231.3.", "eth3"] {
        assert!(reference.contains(expected), "{expected}: {reference}");
    }
    assert_eq!(
        reference.lines().filter(|l| l.starts_with("eth")).count(),
        8
    );
}

#[test]
fn nothing_is_left_on_the_host_after_tap_and_macvtap_containers() {
    let _lock = macvtap_lock();
    let network = Network::create(&[]);
    let bridge = format!(
        "br-{}",
        &docker(&["network", "inspect", "-f", "{{.Id}}", &network.0]).stdout_text()[..12]
    );
    let parent = MacvlanParent::create("d");
    let macvlan = Network::macvlan(&parent, "10.231.4.0/24");
    let nodes_before = macvtap_nodes();

    let mut sandboxes = Vec::new();
    for mode in ["RUNQ_NET=tap", MACVTAP] {
        let name = Name::new();
        start_server(
            Runtime::Runq,
            &name,
            "bye",
            &["-e", mode, "--network", &network.0],
        );
        let connected = docker(&["network", "connect", &macvlan.0, &name.0]);
        assert_eq!(connected.code(), 0, "{connected:?}");
        wait_for_greeting(&format!("{}:8080", address_of(&name)), "bye");
        let sandbox = docker(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", &name.0])
            .stdout_text()
            .trim()
            .to_string();
        assert!(Path::new(&sandbox).exists(), "{sandbox}");
        sandboxes.push(sandbox);
        if mode == MACVTAP {
            assert!(
                macvtap_nodes().len() > nodes_before.len(),
                "no macvtap made"
            );
        }
        assert_eq!(docker(&["rm", "-f", &name.0]).code(), 0);
    }

    // Docker releases the sandbox, and the kernel the namespace, in the background after
    // `docker rm`.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = macvtap_nodes();
        let ports = ip(&["-o", "link", "show", "master", &bridge]);
        let sandboxes_left: Vec<_> = sandboxes.iter().filter(|s| Path::new(s).exists()).collect();
        if nodes == nodes_before && ports.trim().is_empty() && sandboxes_left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: macvtaps {nodes:?} (before: {nodes_before:?}), veths on {bridge}: \
             {ports}, network namespaces {sandboxes_left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_unknown_network_mode_is_refused_by_name() {
    let outcome = run(Runtime::Runq, &["-e", "RUNQ_NET=vhost"], &["true"]);
    assert_ne!(outcome.code(), 0);
    assert!(outcome.stderr_text().contains("RUNQ_NET"), "{outcome:?}");
}

//! Networks for the Docker tests: user-defined networks, parents for macvlan networks, and a
//! busybox greeting server to reach across them. Each is removed again on drop.

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use super::docker::{docker, Name, Runtime, IMAGE};
use super::RUN_DEADLINE;

/// A user-defined Docker network, removed on drop.
pub struct Network(pub String);

impl Network {
    pub fn create(extra: &[&str]) -> Network {
        let name = Name::new();
        let network = Network(format!("{}-net", name.0));
        let mut args = vec!["network", "create"];
        args.extend(extra);
        args.push(&network.0);
        let created = docker(&args);
        assert_eq!(created.code(), 0, "{created:?}");
        network
    }

    /// A macvlan network in bridge mode on `parent`, with an IPv4 subnet of its own.
    pub fn macvlan(parent: &MacvlanParent, subnet: &str) -> Network {
        let parent = format!("parent={}", parent.0);
        Network::create(&["-d", "macvlan", "--subnet", subnet, "-o", &parent])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.0]);
    }
}

/// A veth pair, both ends up, whose first end is the parent of a macvlan network: the tests
/// keep their macvlans off the machine's real interfaces. Docker takes one parent per
/// macvlan network, and this kernel has no 802.1q to make more from one.
pub struct MacvlanParent(pub String);

impl MacvlanParent {
    pub fn create(tag: &str) -> MacvlanParent {
        // Interface names have at most 15 bytes.
        let name = format!("rq{}{tag}", std::process::id() % 100_000);
        let peer = format!("{name}p");
        ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &name, "up"]);
        ip(&["link", "set", &peer, "up"]);
        MacvlanParent(name)
    }
}

impl Drop for MacvlanParent {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

pub fn ip(args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    assert!(output.status.success(), "ip {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A busybox server that answers every connection on port 8080 with a greeting; returns its
/// first network's address.
pub fn start_server(runtime: Runtime, name: &Name, greeting: &str, options: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", &name.0];
    if runtime == Runtime::Runq {
        args.extend(["--runtime", "runq"]);
    }
    args.extend(options);
    let script = format!("while true; do echo {greeting} | nc -l -p 8080; done");
    args.extend([IMAGE, "sh", "-c", &script]);
    let started = docker(&args);
    assert_eq!(started.code(), 0, "{started:?}");
    address_of(name)
}

/// The container's address on its first network.
pub fn address_of(name: &Name) -> String {
    let addresses = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        &name.0,
    ])
    .stdout_text();
    addresses
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Connects from the host until the greeting comes back: the server needs a boot to start
/// listening.
pub fn wait_for_greeting(address: &str, greeting: &str) {
    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        let mut answer = String::new();
        if let Ok(mut stream) = TcpStream::connect(address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.read_to_string(&mut answer);
        }
        if answer.trim() == greeting {
            return;
        }
        assert!(Instant::now() < deadline, "no {greeting:?} from {address}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A shell command that fetches the greeting from inside a container. The servers re-listen
/// after each answer: the client retries through that gap.
pub fn fetch_script(host: &str) -> String {
    format!("for i in $(seq 100); do nc -w 5 {host} 8080 && exit 0; sleep 0.2; done; exit 1")
}

//! The container's network inside the VM: Docker's address and MAC, routes, published
//! ports, and traffic between runq and runc containers in both directions.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::docker::{docker, run, Name, Runtime, IMAGE};

/// A busybox server that answers every connection on port 8080 with a greeting.
fn start_server(runtime: Runtime, name: &Name, greeting: &str, publish: Option<&str>) -> String {
    let mut args = vec!["run", "-d", "--name", &name.0];
    if runtime == Runtime::Runq {
        args.extend(["--runtime", "runq"]);
    }
    if let Some(publish) = publish {
        args.extend(["-p", publish]);
    }
    let script = format!("while true; do echo {greeting} | nc -l -p 8080; done");
    args.extend([IMAGE, "sh", "-c", &script]);
    let started = docker(&args);
    assert_eq!(started.code(), 0, "{started:?}");
    docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &name.0])
        .stdout_text()
        .trim()
        .to_string()
}

/// Connects until the greeting comes back: the server needs a boot to start listening.
fn wait_for_greeting(address: &str, greeting: &str) {
    let deadline = Instant::now() + common::RUN_DEADLINE;
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

#[test]
fn the_vm_has_the_containers_address_mac_and_default_route() {
    let name = Name::new();
    let started = docker(&[
        "run",
        "-d",
        "--runtime",
        "runq",
        "--name",
        &name.0,
        IMAGE,
        "sh",
        "-c",
        "ip -o -4 addr show eth0 | awk '{print $4}'; cat /sys/class/net/eth0/address; \
         ip route | awk '/^default/ {print $3}'; exec sleep 1000",
    ]);
    assert_eq!(started.code(), 0, "{started:?}");
    let inspect = |field: &str| {
        docker(&["inspect", "-f", field, &name.0])
            .stdout_text()
            .trim()
            .to_string()
    };
    let expected = format!(
        "{}/{}\n{}\n{}\n",
        inspect("{{.NetworkSettings.IPAddress}}"),
        inspect("{{.NetworkSettings.IPPrefixLen}}"),
        inspect("{{.NetworkSettings.MacAddress}}"),
        inspect("{{.NetworkSettings.Gateway}}"),
    );
    let deadline = Instant::now() + common::RUN_DEADLINE;
    loop {
        let logs = docker(&["logs", &name.0]).stdout_text();
        if logs.lines().count() >= 3 {
            assert_eq!(logs, expected);
            return;
        }
        assert!(Instant::now() < deadline, "the container printed {logs:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_published_port_answers_from_the_host() {
    let name = Name::new();
    start_server(
        Runtime::Runq,
        &name,
        "hello-from-vm",
        Some("127.0.0.1::8080"),
    );
    let port = docker(&["port", &name.0, "8080/tcp"]).stdout_text();
    let address = port.lines().next().unwrap_or_default().trim().to_string();
    assert!(address.starts_with("127.0.0.1:"), "{port}");
    wait_for_greeting(&address, "hello-from-vm");
}

#[test]
fn runq_and_runc_containers_reach_each_other() {
    let vm = Name::new();
    let vm_ip = start_server(Runtime::Runq, &vm, "from-runq", None);
    let plain = Name::new();
    let plain_ip = start_server(Runtime::Runc, &plain, "from-runc", None);
    wait_for_greeting(&format!("{vm_ip}:8080"), "from-runq");

    let outcome = run(Runtime::Runc, &[], &["nc", "-w", "5", &vm_ip, "8080"]);
    assert_eq!(
        outcome.stdout_text().trim(),
        "from-runq",
        "runc to runq: {outcome:?}"
    );
    let outcome = run(Runtime::Runq, &[], &["nc", "-w", "5", &plain_ip, "8080"]);
    assert_eq!(
        outcome.stdout_text().trim(),
        "from-runc",
        "runq to runc: {outcome:?}"
    );
}

#[test]
fn network_none_gives_loopback_only() {
    let outcome = run(
        Runtime::Runq,
        &["--network", "none"],
        &["sh", "-c", "ls /sys/class/net | tr '\\n' ' '"],
    );
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "lo ");
}

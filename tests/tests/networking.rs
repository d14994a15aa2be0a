//! The container's network inside the VM: Docker's address and MAC, routes, published
//! ports, and traffic between runq and runc containers in both directions.

mod common;

use std::time::{Duration, Instant};

use common::docker::{docker, run, start_detached, Name, Runtime, IMAGE};
use common::net::{fetch_script, start_server, wait_for_greeting, Network};

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
fn the_nic_is_up_when_the_application_starts_as_under_runc() {
    // `ip link` flags and /sys operstate, first thing: programs that wait for the network
    // (or print it) must not see NO-CARRIER on a NIC that already carries traffic.
    let command = [
        "sh",
        "-c",
        "cat /sys/class/net/eth0/operstate; ip link show eth0 | grep -c NO-CARRIER",
    ];
    for runtime in [Runtime::Runc, Runtime::Runq] {
        let outcome = run(runtime, &[], &command);
        assert_eq!(outcome.stdout_text(), "up\n0\n", "{runtime:?}: {outcome:?}");
    }
}

#[test]
fn loopback_ipv6_and_broadcast_addresses_look_as_under_runc() {
    // Docker switches IPv6 off in the namespace of a container without IPv6, so that
    // loopback has no ::1, also with no network at all; each IPv4 address has a broadcast.
    // The container's own sysctls may switch it on again: one at a time, as runc applies
    // several in no fixed order. (templates.rs checks the states a namespace itself has.)
    let script =
        "for scope in all default lo; do cat /proc/sys/net/ipv6/conf/$scope/disable_ipv6; done; \
                  ip -o addr show lo | awk '{print $3, $4}'; \
                  ip -o -4 addr show eth0 2>/dev/null | grep -o 'brd [0-9.]*'; \
                  ip -o -6 addr show eth0 2>/dev/null | awk '{print $4}'; true";
    let variants: [&[&str]; 5] = [
        &[],
        &["--network", "none"],
        &["--sysctl", "net.ipv6.conf.all.disable_ipv6=0"],
        &["--sysctl", "net.ipv6.conf.lo.disable_ipv6=0"],
        &["--sysctl", "net.ipv6.conf.default.disable_ipv6=0"],
    ];
    for options in variants {
        let reference = run(Runtime::Runc, options, &["sh", "-c", script]);
        assert_eq!(reference.code(), 0, "runc {options:?}: {reference:?}");
        if options.is_empty() {
            assert!(reference.stdout_text().contains("brd "), "{reference:?}");
        }
        let outcome = run(Runtime::Runq, options, &["sh", "-c", script]);
        assert_eq!(
            outcome.stdout_text(),
            reference.stdout_text(),
            "{options:?}: {outcome:?}"
        );
    }
}

#[test]
fn a_published_port_answers_from_the_host() {
    let name = Name::new();
    start_server(
        Runtime::Runq,
        &name,
        "hello-from-vm",
        &["-p", "127.0.0.1::8080"],
    );
    let port = docker(&["port", &name.0, "8080/tcp"]).stdout_text();
    let address = port.lines().next().unwrap_or_default().trim().to_string();
    assert!(address.starts_with("127.0.0.1:"), "{port}");
    wait_for_greeting(&address, "hello-from-vm");
}

#[test]
fn an_exposed_port_is_published_by_dash_capital_p() {
    let name = Name::new();
    start_server(
        Runtime::Runq,
        &name,
        "hello-exposed",
        &["--expose", "8080", "-P"],
    );
    let port = docker(&["port", &name.0, "8080/tcp"]).stdout_text();
    let host_port = port
        .lines()
        .next()
        .and_then(|line| line.rsplit_once(':'))
        .map(|(_, port)| port.trim().to_string())
        .unwrap_or_default();
    assert!(host_port.parse::<u16>().is_ok(), "docker port: {port:?}");
    wait_for_greeting(&format!("127.0.0.1:{host_port}"), "hello-exposed");
}

#[test]
fn a_linked_container_is_reached_by_its_alias() {
    let server = Name::new();
    let server_ip = start_server(Runtime::Runq, &server, "hello-link", &[]);
    wait_for_greeting(&format!("{server_ip}:8080"), "hello-link");
    let link = format!("{}:db", server.0);
    let outcome = run(
        Runtime::Runq,
        &["--link", &link],
        &[
            "sh",
            "-c",
            &format!("grep -w db /etc/hosts | cut -f1; {}", fetch_script("db")),
        ],
    );
    assert_eq!(
        outcome.stdout_text(),
        format!("{server_ip}\nhello-link\n"),
        "{outcome:?}"
    );
}

#[test]
fn runq_and_runc_containers_reach_each_other() {
    let vm = Name::new();
    let vm_ip = start_server(Runtime::Runq, &vm, "from-runq", &[]);
    let plain = Name::new();
    let plain_ip = start_server(Runtime::Runc, &plain, "from-runc", &[]);
    wait_for_greeting(&format!("{vm_ip}:8080"), "from-runq");

    let outcome = run(Runtime::Runc, &[], &["sh", "-c", &fetch_script(&vm_ip)]);
    assert_eq!(
        outcome.stdout_text().trim(),
        "from-runq",
        "runc to runq: {outcome:?}"
    );
    let outcome = run(Runtime::Runq, &[], &["sh", "-c", &fetch_script(&plain_ip)]);
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

/// The interfaces, addresses and IPv6 routes of a container on three networks, one with
/// IPv6, connected before start.
fn interfaces_on_three_networks(
    runtime: Runtime,
    networks: &[Network; 3],
    subnet_v6: &str,
) -> String {
    let name = Name::new();
    let mut create = vec!["create", "--name", &name.0, "--network", &networks[0].0];
    if runtime == Runtime::Runq {
        create.extend(["--runtime", "runq"]);
    }
    let script = format!(
        "ip -o addr | awk '$2 != \"lo\" && $4 !~ /^fe80/ {{print $2, $4}}'; \
         ip -6 route | grep {subnet_v6} | cut -d' ' -f1-3"
    );
    create.extend([IMAGE, "sh", "-c", &script]);
    let created = docker(&create);
    assert_eq!(created.code(), 0, "{created:?}");
    for network in &networks[1..] {
        assert_eq!(
            docker(&["network", "connect", &network.0, &name.0]).code(),
            0
        );
    }
    let outcome = docker(&["start", "-a", &name.0]);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    outcome.stdout_text()
}

#[test]
fn several_networks_and_ipv6_look_as_under_runc() {
    let subnet_v6 = "fd00:5e1f::";
    let networks = [
        Network::create(&[]),
        Network::create(&[]),
        Network::create(&["--ipv6", "--subnet", &format!("{subnet_v6}/64")]),
    ];
    // Interface numbering (ifindex order) may differ; names and addresses may not.
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines.join("\n")
    };
    let reference = sorted(interfaces_on_three_networks(
        Runtime::Runc,
        &networks,
        subnet_v6,
    ));
    let text = sorted(interfaces_on_three_networks(
        Runtime::Runq,
        &networks,
        subnet_v6,
    ));
    assert_eq!(text, reference);
    assert!(text.contains(" fd00:5e1f::2/64"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("eth")).count(),
        4,
        "{text}"
    );
}

#[test]
fn dns_variables_write_the_documented_resolv_conf() {
    let engine = run(Runtime::Runq, &[], &["cat", "/etc/resolv.conf"]).stdout_text();
    let keep = |line: &&str| {
        !line.starts_with("nameserver")
            && !line.starts_with("search")
            && !line.starts_with("options")
            && !line.starts_with("domain")
    };
    let kept: String = engine
        .lines()
        .filter(keep)
        .map(|l| format!("{l}\n"))
        .collect();

    let outcome = run(
        Runtime::Runq,
        &[
            "-e",
            "RUNQ_DNS=1.1.1.1,9.9.9.9",
            "-e",
            "RUNQ_DNS_SEARCH=a.example,b.example",
            "-e",
            "RUNQ_DNS_OPT=ndots:2",
        ],
        &["cat", "/etc/resolv.conf"],
    );
    assert_eq!(
        outcome.stdout_text(),
        format!(
            "{kept}nameserver 1.1.1.1\nnameserver 9.9.9.9\nsearch a.example b.example\noptions ndots:2\n"
        )
    );

    // An empty variable removes the lines; preserve keeps the engine's file untouched.
    let outcome = run(
        Runtime::Runq,
        &["-e", "RUNQ_DNS="],
        &["cat", "/etc/resolv.conf"],
    );
    assert!(!outcome.stdout_text().contains("nameserver"), "{outcome:?}");
    let outcome = run(
        Runtime::Runq,
        &["-e", "RUNQ_DNS=1.1.1.1", "-e", "RUNQ_DNS_PRESERVE=1"],
        &["cat", "/etc/resolv.conf"],
    );
    assert_eq!(outcome.stdout_text(), engine);
}

#[test]
fn the_hosts_network_is_refused_with_a_clear_message() {
    let outcome = run(Runtime::Runq, &["--network", "host"], &["true"]);
    assert_eq!(outcome.code(), 125, "{outcome:?}");
    assert!(
        outcome.stderr_text().contains("--network host"),
        "{outcome:?}"
    );
}

/// `--network container:X` shares X's namespace: its address and its localhost. A VM there
/// leaves X's interface alone and reaches it through passt; listening ports are mirrored
/// between the VMs and the namespace (README, Pods). X itself, when a runq container, is
/// started with RUNQ_NET=shared so that it too leaves the interface to the namespace.
#[test]
fn containers_sharing_a_network_namespace_reach_each_other_over_localhost() {
    let server = Name::new();
    start_detached(
        &server,
        &["-e", "RUNQ_NET=shared"],
        &["nc", "-ll", "-p", "8080", "-e", "echo", "hello-from-x"],
    );
    let joined = format!("container:{}", server.0);
    let ask = "for i in $(seq 300); do \
                 answer=$(nc 127.0.0.1 8080 </dev/null 2>/dev/null) && [ -n \"$answer\" ] && break; \
                 sleep 0.2; \
               done; \
               echo \"$answer\"; ip -o -4 addr show eth0 | awk '{print $4}'";
    let address = docker(&[
        "inspect",
        "-f",
        "{{.NetworkSettings.IPAddress}}/{{.NetworkSettings.IPPrefixLen}}",
        &server.0,
    ])
    .stdout_text();
    for runtime in [Runtime::Runq, Runtime::Runc] {
        let outcome = run(runtime, &["--network", &joined], &["sh", "-c", ask]);
        assert_eq!(outcome.code(), 0, "{runtime:?}: {outcome:?}");
        assert_eq!(
            outcome.stdout_text(),
            format!("hello-from-x\n{}", address),
            "{runtime:?} joining a runq container's namespace: {outcome:?}"
        );
    }

    // A runq container started without it took its interface into its VM: nothing is left
    // to share, and the joiner says so instead of starting without a network.
    let owner = Name::new();
    start_detached(&owner, &[], &["sh", "-c", "echo up; exec sleep 1000"]);
    common::docker::wait_for_log(&owner.0, "up", 1);
    let joined = format!("container:{}", owner.0);
    let outcome = run(Runtime::Runq, &["--network", &joined], &["true"]);
    assert_ne!(outcome.code(), 0, "{outcome:?}");
    assert!(
        outcome.stderr_text().contains("RUNQ_NET=shared"),
        "{outcome:?}"
    );
}

#[test]
fn containers_find_each_other_by_name_through_dockers_embedded_dns() {
    let network = Network::create(&[]);
    let server = Name::new();
    let started = docker(&[
        "run",
        "-d",
        "--runtime",
        "runq",
        "--network",
        &network.0,
        "--name",
        &server.0,
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert_eq!(started.code(), 0, "{started:?}");
    let server_ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &server.0,
    ])
    .stdout_text()
    .trim()
    .to_string();
    let outcome = run(
        Runtime::Runq,
        &["--network", &network.0],
        &[
            "sh",
            "-c",
            &format!(
                "grep nameserver /etc/resolv.conf; nslookup {0}; ping -c 1 -w 60 {0}",
                server.0
            ),
        ],
    );
    let text = outcome.stdout_text();
    assert!(text.contains("nameserver 127.0.0.11"), "{outcome:?}");
    assert!(
        text.contains(&server_ip),
        "{server_ip} not resolved: {outcome:?}"
    );
    assert!(
        text.contains(&format!("PING {} ({server_ip})", server.0))
            && text.contains("1 packets received"),
        "ping by name: {outcome:?}"
    );
}

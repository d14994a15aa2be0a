//! VMs that share one network namespace, as the containers of a Kubernetes pod do
//! (`RUNQ_NET=shared`, which runq picks by itself for CRI application containers). The
//! namespace keeps its interface; each VM reaches it through passt, and the VMs' listening
//! ports are mirrored, so that they reach each other over localhost and the pod's address.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::pod::PodNamespace;

/// The first line a server at `address` sends, retried until `deadline`: the mirror learns
/// of a new listener within a fraction of a second, the VM takes seconds to boot.
fn first_line_from(address: (Ipv4Addr, u16), deadline: Instant) -> String {
    loop {
        let attempt = TcpStream::connect_timeout(&address.into(), Duration::from_secs(5)).and_then(
            |mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut text = String::new();
                stream.read_to_string(&mut text)?;
                Ok(text)
            },
        );
        match attempt {
            Ok(text) if !text.is_empty() => return text,
            other => assert!(
                Instant::now() < deadline,
                "no answer from {address:?} in time: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn vms_in_one_namespace_reach_each_other_over_localhost_and_the_network_through_passt() {
    let pod = PodNamespace::create();
    // Outside the pod, on the host's end of the veth: reached through passt.
    let outside = TcpListener::bind((pod.host_ip, 0)).expect("listen outside the pod");
    let outside_port = outside.local_addr().expect("address").port();
    // Serves every connection: the client retries a slow one. The thread ends with the test.
    std::thread::spawn(move || {
        for mut stream in outside.incoming().map_while(Result::ok) {
            let _ = stream.write_all(b"hello-from-outside\n");
        }
    });

    // A serves on its loopback and on the wildcard.
    let server = pod.bundle(&[
        "sh",
        "-c",
        "httpd -f -p 127.0.0.1:8081 -h /etc & \
         nc -ll -p 8082 -e head -c 3000000 /dev/zero & \
         nc -ll -p 8080 -e echo hello-from-a & wait",
    ]);
    // A hostile image's user database: were passt to look "nobody" up in it, it would stay
    // root. It drops to the overflow ids whatever the image says.
    std::fs::write(
        server.rootfs().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:0:0:nobody:/:/bin/sh\n",
    )
    .expect("write the image's passwd");
    server.run_detached();

    // B asks A over localhost, and the host outside the pod over the network.
    // Every step is retried on a fresh connection, each bounded by `timeout`, so that one
    // slow connection under a loaded machine costs a retry, not the test.
    let client = pod.bundle(&[
        "sh",
        "-c",
        &format!(
            "try() {{ \
               for i in $(seq 150); do \
                 out=$(timeout 10 \"$@\" </dev/null 2>/dev/null) && [ -n \"$out\" ] && \
                   {{ echo \"$out\"; return 0; }}; \
                 sleep 0.2; \
               done; return 1; \
             }}; \
             echo \"a=$(try nc 127.0.0.1 8080)\"; \
             private=$(try wget -qO- http://127.0.0.1:8081/passwd); \
             echo \"a-private=${{private%%:*}}\"; \
             for i in 1 2 3; do \
               bulk=$(timeout 60 nc 127.0.0.1 8082 </dev/null | wc -c); \
               [ \"$bulk\" = 3000000 ] && break; \
             done; \
             echo \"bulk=$bulk\"; \
             echo \"outside=$(try nc {} {outside_port})\"; \
             netstat -ltn >&2",
            pod.host_ip
        ),
    ]);
    let outcome = client.run();
    assert!(outcome.status.success(), "{outcome:?}");
    let text = outcome.stdout_text();
    assert!(text.contains("a=hello-from-a\n"), "{outcome:?}");
    assert!(text.contains("a-private=root\n"), "{outcome:?}");
    assert!(text.contains("outside=hello-from-outside\n"), "{outcome:?}");
    // Far more than the channel's window per connection: credit flows back as B reads.
    assert!(text.contains("bulk=3000000\n"), "{outcome:?}");

    let passt_ids = pod
        .pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|line| String::from_utf8_lossy(&line).contains("/passt"))
        })
        .map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .filter(|line| line.starts_with("Uid:") || line.starts_with("Gid:"))
                .map(|line| {
                    line.split_whitespace()
                        .skip(1)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    assert!(!passt_ids.is_empty(), "no passt serves A");
    for ids in passt_ids {
        assert_eq!(
            ids,
            ["65534 65534 65534 65534", "65534 65534 65534 65534"],
            "passt's user and group"
        );
    }

    // From outside, A's wildcard port answers on the pod's address; its loopback-only port
    // stays inside the pod.
    let deadline = Instant::now() + common::RUN_DEADLINE;
    assert_eq!(
        first_line_from((pod.pod_ip, 8080), deadline),
        "hello-from-a\n"
    );
    assert!(
        TcpStream::connect_timeout(&(pod.pod_ip, 8081).into(), Duration::from_secs(5)).is_err(),
        "a port A listens on only on loopback is reachable from outside the pod"
    );

    // Deleting the containers leaves no process in the namespace: no proxy, QEMU or passt.
    drop(client);
    drop(server);
    assert_eq!(
        pod.pids(),
        Vec::<String>::new(),
        "processes left in the pod"
    );
}

//! A hostile guest against a real proxy: a build of runq-init with the test-only `hostile`
//! feature boots from its own initrd, speaks the real protocol over the real channel and
//! breaks it on purpose (see crates/runq-init/src/hostile.rs). Each attack must end the
//! container with exit 1 and a message naming the violation. Processes cannot be left behind:
//! the proxy is PID 1 of the container's PID namespace, QEMU and its helpers live in it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::docker::{docker, ExtraRuntime, Name, IMAGE};
use common::net::Network;
use common::{wait_until, TestBundle};

/// The hostile runq-init and an initrd around it, built once for every test of this file
/// (by the script `runq-bench hostside --attacks` uses too).
fn hostile_initrd() -> &'static Path {
    static INITRD: OnceLock<PathBuf> = OnceLock::new();
    INITRD.get_or_init(|| {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-hostile-initrd.sh");
        let built = Command::new(&script)
            .env("CARGO", env!("CARGO"))
            .env("RUNQ_ROOT", common::runq_root())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run build-hostile-initrd.sh");
        assert!(built.status.success(), "building the hostile initrd failed");
        PathBuf::from(String::from_utf8_lossy(&built.stdout).trim())
    })
}

/// Runs a container whose guest carries out `attack`, with `input` on its stdin; returns the
/// container's stderr.
fn attacked_by(attack: &str, input: &[u8]) -> String {
    attacked_with_env(attack, input, &[])
}

fn attacked_with_env(attack: &str, input: &[u8], env: &[&str]) -> String {
    attacked_with(attack, input, env, &[])
}

/// As [`attacked_with_env`], with more of runq's flags.
fn attacked_with(attack: &str, input: &[u8], env: &[&str], flags: &[&str]) -> String {
    let initrd = hostile_initrd().to_string_lossy().into_owned();
    let bundle = TestBundle::busybox(&["true"]);
    bundle.add_env(&[&format!("RUNQ_TEST_ATTACK={attack}")]);
    bundle.add_env(env);
    let flags = [&["--initrd", initrd.as_str()][..], flags].concat();
    let outcome = bundle.run_with(&flags, input);
    let stderr = outcome.stderr_text();
    assert_eq!(outcome.code(), 1, "{attack}: {stderr}");
    assert!(
        stderr.contains("the guest broke the control protocol"),
        "{attack}: {stderr}"
    );
    nothing_left_of(&bundle, attack);
    stderr
}

/// No state of the container is left, and no process in its cgroup (QEMU and the helpers
/// run there, below the proxy).
fn nothing_left_of(bundle: &TestBundle, attack: &str) {
    assert!(
        !bundle.state.join(&bundle.id).exists(),
        "{attack}: runc's state left"
    );
    assert!(
        !bundle.state.join(".runq").join(&bundle.id).exists(),
        "{attack}: runq's private directory left"
    );
    // Killed with the proxy's PID namespace; the last may still be on their way out.
    wait_until(
        &format!("{attack}: no process left in the container's cgroup"),
        || {
            !std::fs::read_dir("/proc")
                .expect("/proc")
                .flatten()
                .any(|entry| {
                    entry.file_name().to_string_lossy().parse::<u32>().is_ok()
                        && std::fs::read_to_string(entry.path().join("cgroup"))
                            .is_ok_and(|cgroup| cgroup.contains(&bundle.id))
                })
        },
    );
}

/// A VM restored from a template said its Hello to the template's builder, and the proxy
/// stood in for it: one more from the guest is a second Hello, as for a booted guest.
#[test]
fn a_restored_guest_is_held_to_the_same_protocol() {
    // A memory size of this test's own: its templates are made for it, and removed after.
    const MEM: &str = "RUNQ_MEM=244";
    let initrd = hostile_initrd().to_path_buf();
    let ours = |meta: &runq_shared::template::Meta| {
        meta.shape.mem_mib == 244 && meta.shape.initrd.path == initrd
    };
    struct Cleanup<'a>(&'a dyn Fn(&runq_shared::template::Meta) -> bool);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            for (dir, meta) in common::templates() {
                if (self.0)(&meta) {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
    }
    let _cleanup = Cleanup(&ours);
    // Templates on, even where the suite runs with them off (`RUNQ_TEST_TEMPLATE=off`).
    let on = ["--template", "on"];
    // The first boots, and has runq make the hostile initrd's templates.
    attacked_with("hello-twice", b"", &[MEM], &on);
    wait_until("the hostile initrd's templates are made", || {
        let made = common::templates();
        (0..=runq_shared::template::MAX_NICS).all(|nics| {
            made.iter()
                .any(|(_, meta)| ours(meta) && meta.shape.nics == nics)
        })
    });
    let stderr = attacked_with("hello-twice", b"", &[MEM, "RUNQ_TIMELINE=1"], &on);
    assert!(
        stderr.contains("\"qemu_restore\""),
        "not restored: {stderr}"
    );
    assert!(stderr.contains("a second Hello"), "{stderr}");
}

#[test]
fn frames_the_guest_state_does_not_allow_end_the_container_naming_them() {
    let cases = [
        ("hello-twice", "a second Hello"),
        ("started-twice", "a second Started"),
        (
            "phantom-session",
            "exec session 77, which was never started",
        ),
        ("host-message", "a message the guest may not send: Signal"),
    ];
    let checks: Vec<_> = cases
        .into_iter()
        .map(|(attack, named)| {
            std::thread::spawn(move || {
                let stderr = attacked_by(attack, b"");
                assert!(stderr.contains(named), "{attack}: {stderr}");
            })
        })
        .collect();
    for check in checks {
        check.join().expect("attack checked");
    }
}

#[test]
fn output_past_the_window_is_refused_not_queued() {
    let stderr = attacked_by("flood", b"");
    assert!(
        stderr.contains("Stdout beyond its window of 262144 bytes"),
        "{stderr}"
    );
}

#[test]
fn dns_queries_without_the_embedded_server_end_the_container_at_the_first() {
    let stderr = attacked_by("dns-flood", b"");
    assert!(
        stderr.contains("a DNS query, though the container has no embedded DNS server"),
        "{stderr}"
    );
}

/// The guest grants the host all the stdin it has, then reads nothing: the host's writes fill
/// the channel and time out (after 30 s) instead of holding the proxy forever.
#[test]
fn a_guest_that_stops_reading_is_stopped_after_the_write_timeout() {
    let stdin = vec![b'x'; 16 << 20];
    let stderr = attacked_by("stop-reading", &stdin);
    assert!(
        stderr.contains("it read nothing from its control channel for 30 s"),
        "{stderr}"
    );
}

/// The proxy's threads by name.
fn thread_names(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
                .map(|name| name.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// What the proxy holds, read from /proc.
#[derive(Debug, Default, Clone, Copy)]
struct HostSide {
    threads: usize,
    descriptors: usize,
    rss_kib: u64,
}

/// The proxy's budget under attack (README, "Bounds against a hostile guest"): the mirror's
/// 256 listeners and 1024 connections, the DNS relay's 4 sockets and the proxy's own few
/// descriptors; its threads; its memory with the event queue full of the largest frames
/// (16 MiB) and the rest.
const BUDGET: HostSide = HostSide {
    threads: 16,
    descriptors: 1400,
    rss_kib: 32 << 10,
};

impl HostSide {
    fn of(pid: i32) -> HostSide {
        let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        HostSide {
            threads: thread_names(pid).len(),
            descriptors: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count),
            rss_kib,
        }
    }

    /// The most the proxy held, sampled for three seconds of an attack, each within the
    /// budget.
    fn most_during_attack(pid: i32, attack: &str) -> HostSide {
        let mut most = HostSide::default();
        let window = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < window {
            let now = HostSide::of(pid);
            assert!(
                now.threads <= BUDGET.threads
                    && now.descriptors <= BUDGET.descriptors
                    && now.rss_kib <= BUDGET.rss_kib,
                "{attack}: the proxy holds {now:?}, beyond {BUDGET:?}"
            );
            most = HostSide {
                threads: most.threads.max(now.threads),
                descriptors: most.descriptors.max(now.descriptors),
                rss_kib: most.rss_kib.max(now.rss_kib),
            };
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The figures of bench/RESULTS.md.
        eprintln!("{attack}: the proxy held at most {most:?}");
        most
    }
}

/// Starts a detached container of the hostile runtime that carries out `attack`; returns its
/// name and the proxy's PID.
fn attacking(runtime: &str, attack: &str, options: &[&str]) -> (Name, i32) {
    let name = Name::new();
    let attack = format!("RUNQ_TEST_ATTACK={attack}");
    let mut args = vec!["run", "-d", "--runtime", runtime, "--name", &name.0];
    args.extend(options);
    args.extend(["-e", &attack, IMAGE, "true"]);
    let started = docker(&args);
    assert_eq!(started.code(), 0, "{started:?}");
    let proxy = name.pid();
    (name, proxy)
}

/// Removes the container and waits until the proxy and everything below it are gone: an
/// attack leaves no process behind.
fn removed_without_leftovers(name: &Name, proxy: i32) {
    let processes: Vec<i32> = std::iter::once(proxy)
        .chain(common::descendants(proxy))
        .collect();
    assert!(processes.len() > 2, "QEMU and its helpers: {processes:?}");
    let removed = docker(&["rm", "-f", &name.0]);
    assert_eq!(removed.code(), 0, "{removed:?}");
    wait_until("the container's processes are gone", || {
        processes.iter().all(|&pid| !common::alive(pid))
    });
}

fn still_running(name: &Name) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", &name.0])
        .stdout_text()
        .trim()
        == "true"
}

/// With Docker's embedded DNS server the queries are legitimate: the guest floods 200k of
/// them, and the proxy answers with its fixed pool, dropping what does not fit.
#[test]
fn a_dns_flood_through_the_embedded_server_is_held_to_the_relay_s_pool() {
    let initrd = hostile_initrd().to_string_lossy().into_owned();
    let _runtime = ExtraRuntime::register("runq-hostile-dns", &["--initrd", &initrd]);
    let network = Network::create(&[]);
    let (name, proxy) = attacking(
        "runq-hostile-dns",
        "dns-flood-embedded",
        &["--network", &network.0],
    );
    wait_until("the DNS relay's workers run", || {
        thread_names(proxy).iter().any(|name| name == "dns")
    });
    HostSide::most_during_attack(proxy, "dns-flood-embedded");
    let dns = thread_names(proxy)
        .iter()
        .filter(|name| *name == "dns")
        .count();
    assert!(dns <= 4, "DNS threads: {dns}");
    assert!(still_running(&name), "a legitimate flood is no violation");
    removed_without_leftovers(&name, proxy);
}

/// The proxy's listening sockets: its socket descriptors whose inode the namespace's TCP
/// tables show listening (state 0A).
fn listeners(pid: i32) -> usize {
    let sockets: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|target| {
                    let target = target.to_string_lossy().into_owned();
                    target
                        .strip_prefix("socket:[")
                        .and_then(|inode| inode.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    ["tcp", "tcp6"]
        .iter()
        .map(|table| {
            std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.get(3) == Some(&"0A")
                        && fields.get(9).is_some_and(|inode| sockets.contains(*inode))
                })
                .count()
        })
        .sum()
}

/// In a pod (a shared network namespace) the guest announces 60k listening ports over and
/// over, and asks for 10k connections: the proxy's mirror holds to its caps (the default
/// ones, and the operator's `--mirror-listeners`, `--mirror-conns`), and the frames, which a
/// pod's guest may send, are no violation.
#[test]
fn pod_floods_of_ports_and_connections_are_held_to_the_mirror_s_caps() {
    let initrd = hostile_initrd().to_string_lossy().into_owned();
    let _runtime = ExtraRuntime::register("runq-hostile-pod", &["--initrd", &initrd]);
    let _capped = ExtraRuntime::register(
        "runq-hostile-pod-capped",
        &[
            "--initrd",
            &initrd,
            "--mirror-listeners",
            "16",
            "--mirror-conns",
            "64",
        ],
    );
    let shared = ["-e", "RUNQ_NET=shared"];
    let (ports, ports_proxy) = attacking("runq-hostile-pod", "listen-flood", &shared);
    let (conns, conns_proxy) = attacking("runq-hostile-pod-capped", "connect-flood", &shared);

    wait_until("the mirror listens on the guest's ports", || {
        listeners(ports_proxy) > 100
    });
    let flooded = std::thread::spawn(move || {
        let mut most = 0;
        let window = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < window {
            most = most.max(listeners(ports_proxy));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        most
    });
    HostSide::most_during_attack(ports_proxy, "listen-flood");
    let most_listeners = flooded.join().expect("listeners sampled");
    assert!(
        most_listeners <= 256,
        "{most_listeners} ports listen in the pod, beyond the default cap of 256"
    );
    assert!(still_running(&ports), "announcing ports is no violation");
    removed_without_leftovers(&ports, ports_proxy);

    // The operator's caps: the one port announced and 64 connections (half of them the
    // mirror's own connects, half the ends its listener accepted), where the default caps
    // let the proxy hold over a thousand descriptors (bench/RESULTS.md).
    wait_until("the mirror carries connections", || {
        HostSide::of(conns_proxy).descriptors >= 40
    });
    let most = HostSide::most_during_attack(conns_proxy, "connect-flood");
    assert!(
        most.descriptors <= 64 + 1 + 32,
        "{most:?}: beyond 64 connections, 1 listener and the proxy's own"
    );
    assert!(
        still_running(&conns),
        "asking for connections is no violation"
    );
    removed_without_leftovers(&conns, conns_proxy);
}

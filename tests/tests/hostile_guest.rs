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
use common::{assets_dir, guest_release, wait_until, TestBundle};

/// The hostile runq-init and an initrd around it, built once for every test of this file.
fn hostile_initrd() -> &'static Path {
    static INITRD: OnceLock<PathBuf> = OnceLock::new();
    INITRD.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root")
            .to_path_buf();
        let target = workspace.join("target/hostile-guest");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--release",
                "--locked",
                "--quiet",
                "-p",
                "runq-init",
            ])
            .args(["--features", "hostile", "--target-dir"])
            .arg(&target)
            .current_dir(&workspace)
            .status()
            .expect("run cargo");
        assert!(status.success(), "building the hostile runq-init failed");
        let init = target.join("x86_64-unknown-linux-gnu/release/runq-init");
        let initrd = target.join("initrd");
        let status = Command::new(workspace.join("assets/build-initrd.sh"))
            .arg(&init)
            .arg(assets_dir().join("kernel/modules"))
            .arg(guest_release())
            .arg(&initrd)
            .status()
            .expect("run build-initrd.sh");
        assert!(status.success(), "building the hostile initrd failed");
        initrd
    })
}

/// Runs a container whose guest carries out `attack`, with `input` on its stdin; returns the
/// container's stderr.
fn attacked_by(attack: &str, input: &[u8]) -> String {
    let initrd = hostile_initrd().to_string_lossy().into_owned();
    let bundle = TestBundle::busybox(&["true"]);
    bundle.add_env(&[&format!("RUNQ_TEST_ATTACK={attack}")]);
    let outcome = bundle.run_with(&["--initrd", &initrd], input);
    let stderr = outcome.stderr_text();
    assert_eq!(outcome.code(), 1, "{attack}: {stderr}");
    assert!(
        stderr.contains("the guest broke the control protocol"),
        "{attack}: {stderr}"
    );
    stderr
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

/// With Docker's embedded DNS server the queries are legitimate: the guest floods 200k of
/// them, and the proxy answers with its fixed pool, dropping what does not fit.
#[test]
fn a_dns_flood_through_the_embedded_server_is_held_to_the_relay_s_pool() {
    let initrd = hostile_initrd().to_string_lossy().into_owned();
    let _runtime = ExtraRuntime::register("runq-hostile", &["--initrd", &initrd]);
    let network = Network::create(&[]);
    let name = Name::new();
    let started = docker(&[
        "run",
        "-d",
        "--runtime",
        "runq-hostile",
        "--network",
        &network.0,
        "--name",
        &name.0,
        "-e",
        "RUNQ_TEST_ATTACK=dns-flood-embedded",
        IMAGE,
        "true",
    ]);
    assert_eq!(started.code(), 0, "{started:?}");
    let proxy = name.pid();
    wait_until("the DNS relay's workers run", || {
        thread_names(proxy).iter().any(|name| name == "dns")
    });
    // Sampled for three seconds of the flood: never more than the pool, and the proxy stays
    // small.
    let mut most = 0;
    let window = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < window {
        let names = thread_names(proxy);
        let dns = names.iter().filter(|name| *name == "dns").count();
        assert!(dns <= 4, "DNS threads: {names:?}");
        most = most.max(names.len());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(most <= 16, "the proxy ran {most} threads");
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &name.0]).stdout_text();
    assert_eq!(running.trim(), "true", "a legitimate flood is no violation");
}

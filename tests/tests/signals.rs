//! `runq kill` reaches the application in the VM; `runq delete` leaves nothing running.

mod common;

use std::time::Duration;

use common::{alive, descendants, TestBundle};

#[test]
fn sigterm_reaches_a_trapping_shell_and_nothing_is_left_running() {
    let bundle = TestBundle::busybox(&[
        "sh",
        "-c",
        "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 1; done",
    ]);
    // The first line says the trap is set.
    let (running, first) = bundle.start_and_wait_for_line(&[]);
    assert_eq!(first, "ready");
    let processes = descendants(running.pid());
    assert!(
        processes.len() >= 3,
        "expected runc, proxy, QEMU and virtiofsd below runq: {processes:?}"
    );

    let kill = bundle
        .runq(&[], &["kill", &bundle.id, "TERM"])
        .status()
        .unwrap();
    assert!(kill.success());
    assert_eq!(
        running
            .lines
            .recv_timeout(Duration::from_secs(30))
            .as_deref(),
        Ok("got-term")
    );
    let outcome = running.finish();
    assert_eq!(outcome.code(), 3, "{outcome:?}");
    let left: Vec<i32> = processes.into_iter().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
}

#[test]
fn delete_force_of_a_running_container_leaves_no_process() {
    let bundle = TestBundle::busybox(&["sleep", "1000"]);
    assert!(bundle.create(&[]));
    let start = bundle.runq(&[], &["start", &bundle.id]).status().unwrap();
    assert!(start.success());
    let state = bundle.runq(&[], &["state", &bundle.id]).output().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    let proxy = state["pid"].as_i64().unwrap() as i32;
    let mut processes = descendants(proxy);
    processes.push(proxy);

    let delete = bundle
        .runq(&[], &["delete", "--force", &bundle.id])
        .status()
        .unwrap();
    assert!(delete.success());
    let left: Vec<i32> = processes.into_iter().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
    // The bundle is the engine's again, without the mount points runc made for runq, and
    // runq's private directory is gone.
    assert!(!bundle.path().join("runq").exists());
    assert!(!bundle.state.join(".runq").join(&bundle.id).exists());
    assert!(!bundle.rootfs().join(".runq").exists());
    assert!(!bundle.rootfs().join("lib").exists());
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.config_path()).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"][0], "sleep");
}

#[test]
fn death_by_sigkill_gives_137() {
    // As with runc, the application is PID 1 of its namespace: only SIGKILL from outside ends
    // it, so the kill comes from the runtime, as `docker kill` sends it.
    let bundle = TestBundle::busybox(&["sh", "-c", "echo ready; exec sleep 1000"]);
    let (running, first) = bundle.start_and_wait_for_line(&[]);
    assert_eq!(first, "ready");
    let kill = bundle
        .runq(&[], &["kill", &bundle.id, "KILL"])
        .status()
        .unwrap();
    assert!(kill.success());
    let outcome = running.finish();
    assert_eq!(outcome.code(), 137, "{outcome:?}");
}

#[test]
fn the_applications_environment_is_on_no_host_command_line() {
    let bundle = TestBundle::busybox(&["sh", "-c", "echo ready; exec sleep 1000"]);
    bundle.add_env(&["RUNQ_TEST_SECRET=s3cr3t-v4lue"]);
    let (running, _) = bundle.start_and_wait_for_line(&[]);
    for pid in descendants(running.pid()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("s3cr3t-v4lue"),
            "the secret is on the command line of {pid}"
        );
    }
    let kill = bundle
        .runq(&[], &["kill", &bundle.id, "KILL"])
        .status()
        .unwrap();
    assert!(kill.success());
    running.finish();
}

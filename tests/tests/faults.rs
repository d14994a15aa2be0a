//! When a part of the VM fails, the container ends non-zero with a message naming the part,
//! and nothing is left running.

mod common;

use common::{alive, descendants, descendants_running, TestBundle};

fn assert_all_gone(pids: &[i32]) {
    let left: Vec<i32> = pids.iter().copied().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "processes left running: {left:?}");
}

#[test]
fn a_guest_that_misses_the_boot_deadline_is_stopped_with_a_clear_error() {
    let bundle = TestBundle::busybox(&["true"]);
    // No TCG boot reaches the application in one second.
    let outcome = bundle.run_with(&["--boot-timeout", "1"], b"");
    assert_eq!(outcome.code(), 1, "{outcome:?}");
    let stderr = outcome.stderr_text();
    assert!(
        stderr.contains("did not start the application within 1 s"),
        "{stderr}"
    );
}

#[test]
fn qemu_killed_ends_the_container_and_names_qemu() {
    let bundle = TestBundle::busybox(&["sh", "-c", "echo ready; exec sleep 1000"]);
    let (running, first) = bundle.start_and_wait_for_line(&[]);
    assert_eq!(first, "ready");
    let everything = descendants(running.pid());
    let qemu = descendants_running(running.pid(), "qemu-system-x86_64");
    assert_eq!(qemu.len(), 1, "one QEMU expected: {everything:?}");
    // SAFETY: kill with a pid of our own child tree.
    unsafe { libc::kill(qemu[0], libc::SIGKILL) };
    let outcome = running.finish();
    assert_ne!(outcome.code(), 0, "{outcome:?}");
    let stderr = outcome.stderr_text();
    assert!(stderr.contains("QEMU ended"), "{stderr}");
    assert!(stderr.contains("SIGKILL"), "{stderr}");
    assert_all_gone(&everything);
}

#[test]
fn virtiofsd_killed_ends_the_container_and_names_virtiofsd() {
    let bundle = TestBundle::busybox(&["sh", "-c", "echo ready; exec sleep 1000"]);
    let (running, first) = bundle.start_and_wait_for_line(&[]);
    assert_eq!(first, "ready");
    let everything = descendants(running.pid());
    let virtiofsd = descendants_running(running.pid(), "virtiofsd");
    assert!(!virtiofsd.is_empty(), "no virtiofsd: {everything:?}");
    for pid in &virtiofsd {
        // SAFETY: kill with pids of our own child tree.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    let outcome = running.finish();
    assert_ne!(outcome.code(), 0, "{outcome:?}");
    let stderr = outcome.stderr_text();
    assert!(stderr.contains("virtiofsd"), "{stderr}");
    assert_all_gone(&everything);
}

/// A line of /proc/PID/status.
fn status_field(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .map(|value| value.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn qemu_runs_under_its_seccomp_sandbox_with_almost_no_capabilities() {
    for (flags, bounding) in [
        // CAP_DAC_OVERRIDE only: disk images may belong to anyone.
        (&[][..], "0000000000000002"),
        // A 9p root adds what its passthrough file server needs: chown, dac_override,
        // dac_read_search, fowner, fsetid, setgid, setuid, mknod.
        (&["--fs", "9p"][..], "00000000080000df"),
    ] {
        let bundle = TestBundle::busybox(&["sh", "-c", "echo ready; exec sleep 1000"]);
        let (running, first) = bundle.start_and_wait_for_line(flags);
        assert_eq!(first, "ready");
        let qemu = descendants_running(running.pid(), "qemu-system-x86_64");
        assert_eq!(qemu.len(), 1);
        assert_eq!(status_field(qemu[0], "CapBnd:"), bounding, "{flags:?}");
        assert_eq!(status_field(qemu[0], "CapEff:"), bounding, "{flags:?}");
        assert_eq!(status_field(qemu[0], "Seccomp:"), "2", "{flags:?}");
        assert_eq!(status_field(qemu[0], "NoNewPrivs:"), "1", "{flags:?}");
        let killed = bundle.runq(&[], &["kill", &bundle.id, "KILL"]).status();
        assert!(killed.is_ok_and(|s| s.success()));
        assert_eq!(running.finish().code(), 137);
    }
}

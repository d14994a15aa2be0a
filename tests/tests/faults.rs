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
    // No TCG boot reaches the application in one second (a restore may).
    let outcome = bundle.run_with(&["--boot-timeout", "1", "--template", "off"], b"");
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
    // By its binary: QEMU's command line names virtiofsd's socket, and QEMU is left for the
    // proxy to stop.
    let virtiofsd = descendants_running(running.pid(), "bin/virtiofsd");
    assert!(!virtiofsd.is_empty(), "no virtiofsd: {everything:?}");
    let qemu = descendants_running(running.pid(), "qemu-system-x86_64");
    assert!(
        virtiofsd.iter().all(|pid| !qemu.contains(pid)),
        "{virtiofsd:?} {qemu:?}"
    );
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
fn qemu_and_virtiofsd_run_sandboxed_with_almost_no_capabilities() {
    // The proxy keeps QEMU's set and CAP_SYS_NICE (0x800000) once QEMU runs.
    for (flags, bounding, proxy) in [
        // CAP_DAC_OVERRIDE only: disk images may belong to anyone.
        (&[][..], "0000000000000002", "0000000000800002"),
        // A 9p root adds what its passthrough file server needs: chown, dac_override,
        // dac_read_search, fowner, fsetid, setgid, setuid, mknod.
        (&["--fs", "9p"][..], "00000000080000df", "00000000088000df"),
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
        let proxy_pid: i32 = status_field(qemu[0], "PPid:").parse().unwrap();
        assert_eq!(status_field(proxy_pid, "CapBnd:"), proxy, "{flags:?}");
        assert_eq!(status_field(proxy_pid, "Seccomp:"), "2", "{flags:?}");
        // virtiofsd confines its own worker: empty bounding set, seccomp, no new privileges.
        if flags.is_empty() {
            // By its binary: QEMU's command line names virtiofsd's socket.
            let workers: Vec<i32> = descendants_running(running.pid(), "bin/virtiofsd")
                .into_iter()
                .filter(|pid| status_field(*pid, "Seccomp:") == "2")
                .collect();
            assert!(!workers.is_empty(), "no sandboxed virtiofsd worker");
            for worker in workers {
                assert_eq!(status_field(worker, "CapBnd:"), "0000000000000000");
                assert_eq!(status_field(worker, "NoNewPrivs:"), "1");
            }
        }
        let killed = bundle.runq(&[], &["kill", &bundle.id, "KILL"]).status();
        assert!(killed.is_ok_and(|s| s.success()));
        assert_eq!(running.finish().code(), 137);
    }
}

#[test]
fn the_proxy_killed_takes_qemu_and_virtiofsd_with_it() {
    let bundle = TestBundle::busybox(&["sh", "-c", "echo ready; exec sleep 1000"]);
    let (running, first) = bundle.start_and_wait_for_line(&[]);
    assert_eq!(first, "ready");
    let state = bundle.runq(&[], &["state", &bundle.id]).output().unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    let proxy = state["pid"].as_i64().unwrap() as i32;
    let everything = descendants(proxy);
    assert!(
        !descendants_running(proxy, "qemu-system-x86_64").is_empty()
            && !descendants_running(proxy, "virtiofsd").is_empty(),
        "{everything:?}"
    );
    // SAFETY: kill with the pid runc reported for this test's container.
    unsafe { libc::kill(proxy, libc::SIGKILL) };
    // As the container's PID 1 its end takes the whole PID namespace: runc reports it.
    let outcome = running.finish();
    assert_eq!(outcome.code(), 137, "{outcome:?}");
    assert_all_gone(&everything);
}

#[test]
fn a_guest_kernel_panic_ends_the_container_with_the_panic_in_the_message() {
    let outcome = common::docker::run(
        common::docker::Runtime::Runq,
        &["--privileged"],
        &["sh", "-c", "echo c > /proc/sysrq-trigger; sleep 100"],
    );
    assert_eq!(outcome.code(), 1, "{outcome:?}");
    let text = outcome.stderr_text();
    assert!(text.contains("QEMU ended"), "{text}");
    assert!(text.contains("Kernel panic"), "{text}");
}

#[test]
fn a_guest_out_of_memory_kill_is_named() {
    let outcome = common::docker::run(
        common::docker::Runtime::Runq,
        &["-e", "RUNQ_MEM=128"],
        // A string that doubles until the guest has no memory left.
        &[
            "awk",
            "BEGIN { s = \"0123456789abcdef\"; while (1) s = s s }",
        ],
    );
    assert_eq!(outcome.code(), 137, "{outcome:?}");
    let text = outcome.stderr_text();
    assert!(text.contains("ran out of memory"), "{text}");
    assert!(text.contains("RUNQ_MEM"), "{text}");
}

#[test]
fn a_full_host_file_system_is_the_applications_error_as_under_runc() {
    let dir = tempfile::Builder::new()
        .prefix("runq-full-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "runq-test-full"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.path().to_path_buf());
    let volume = format!("{}:/full", dir.path().display());
    let script = "dd if=/dev/zero of=/full/big bs=1M count=64 2>&1 | grep -o 'No space left on \
                  device'; echo still-running";
    let reference = common::docker::run(
        common::docker::Runtime::Runc,
        &["-v", &volume],
        &["sh", "-c", script],
    );
    std::fs::remove_file(dir.path().join("big")).unwrap();
    let outcome = common::docker::run(
        common::docker::Runtime::Runq,
        &["-v", &volume],
        &["sh", "-c", script],
    );
    assert_eq!(outcome.code(), reference.code(), "{outcome:?}");
    assert_eq!(
        outcome.stdout_text(),
        "No space left on device\nstill-running\n",
        "{outcome:?}"
    );
    assert_eq!(outcome.stdout_text(), reference.stdout_text());
}

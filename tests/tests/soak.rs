//! Soak: 200 `docker run --rm` one after another and 20 at once, then nothing of them is
//! left: no process, file descriptor, mount, network interface or bundle.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::{run, Name, Runtime, DOCKER, IMAGE};

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    /// QEMU, virtiofsd, proxies and exec relays.
    vm_processes: usize,
    mounts: usize,
    links: usize,
    /// containerd's task bundles (one per running container) and Docker's containers.
    bundles: usize,
    dockerd_fds: usize,
}

fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

fn snapshot() -> Snapshot {
    let mut vm_processes = 0;
    let mut dockerd_fds = 0;
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if [
            "qemu-system-x86_64",
            "virtiofsd",
            "/.runq/qemu/proxy",
            "runq-exec",
        ]
        .iter()
        .any(|needle| cmdline.contains(needle))
        {
            vm_processes += 1;
        }
        if cmdline.starts_with("dockerd") || cmdline.starts_with("/usr/sbin/dockerd") {
            dockerd_fds = count_entries(&format!("{}/fd", entry.path().display()));
        }
    }
    Snapshot {
        vm_processes,
        mounts: std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count(),
        links: count_entries("/sys/class/net"),
        bundles: count_entries("/run/containerd/io.containerd.runtime.v2.task/moby")
            + count_entries("/var/lib/docker/containers"),
        dockerd_fds,
    }
}

#[test]
fn two_hundred_runs_in_a_row_and_twenty_at_once_leave_nothing_behind() {
    let before = snapshot();
    for round in 0..200 {
        let outcome = run(Runtime::Runq, &[], &["true"]);
        assert_eq!(outcome.code(), 0, "run {round}: {outcome:?}");
    }
    // Twenty VMs on two cores boot slowly: give each all the time it needs.
    let names: Vec<Name> = (0..20).map(|_| Name::new()).collect();
    let runs: Vec<_> = names
        .iter()
        .map(|name| {
            Command::new(DOCKER)
                .args(["run", "--rm", "--runtime", "runq", "--name", &name.0])
                .args(["-e", "RUNQ_BOOT_TIMEOUT=900", IMAGE, "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in runs {
        let outcome = common::finish(child, Vec::new(), Duration::from_secs(1200));
        assert_eq!(outcome.code(), 0, "{outcome:?}");
    }
    // Docker and the kernel finish some of their cleaning after the client returns; dockerd
    // holds on to some connections of parallel clients for a minute or two, with runc too.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let after = snapshot();
        // A leak would grow with the 220 runs; dockerd's idle client connections do not.
        let fds_kept = after.dockerd_fds <= before.dockerd_fds + 40;
        let same = Snapshot {
            dockerd_fds: before.dockerd_fds,
            ..after
        };
        if same == before && fds_kept {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: before {before:?}, after {:?}",
            snapshot()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

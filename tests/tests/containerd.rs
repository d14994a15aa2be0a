//! containerd without Docker: runq as the runc binary of containerd's standard
//! `io.containerd.runc.v2` shim (`ctr run --runc-binary`), on a private containerd with its
//! own root, state and socket, so that Docker's containerd is left alone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::Outcome;

const NAMESPACE: &str = "runq-test";
const IMAGE: &str = "docker.io/library/busybox:latest";

/// A containerd of this test alone, stopped and removed on drop with all it made.
struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("runq-containerd-")
            .tempdir_in("/var/tmp")
            .expect("temporary directory");
        let daemon = common::containerd::start_daemon(dir.path(), &config_toml(dir.path()));
        let containerd = Containerd { dir, daemon };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !containerd.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 60 s: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd.import_busybox();
        containerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Outcome {
        common::containerd::ctr(&self.socket(), NAMESPACE, args)
    }

    /// The busybox image the tests build for Docker, moved over with `docker save`.
    fn import_busybox(&self) {
        let archive = self.dir.path().join("busybox.tar");
        common::docker::save_busybox(&archive);
        let imported = self.ctr(&["images", "import", &archive.to_string_lossy()]);
        assert!(imported.status.success(), "ctr images import: {imported:?}");
    }

    /// `ctr run --rm --runc-binary runq IMAGE ID COMMAND...`
    fn run(&self, id: &str, command: &[&str]) -> Outcome {
        let runq = common::runq_binary();
        let mut args = vec![
            "run",
            "--rm",
            "--runc-binary",
            runq.to_str().expect("runq path"),
            IMAGE,
            id,
        ];
        args.extend(command);
        self.ctr(&args)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks first, so that their shims and VMs go with them.
        let tasks = self.ctr(&["tasks", "list", "--quiet"]).stdout_text();
        for id in tasks.lines().map(str::trim).filter(|id| !id.is_empty()) {
            let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
            let _ = self.ctr(&["tasks", "delete", "--force", id]);
            let _ = self.ctr(&["containers", "delete", id]);
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        common::unmount_below(self.dir.path());
    }
}

fn config_toml(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"
"#
    )
}

fn unique(name: &str) -> String {
    format!("runq-{name}-{}", std::process::id())
}

#[test]
fn ctr_run_boots_busybox_in_a_vm_and_returns_its_exit_code() {
    let containerd = Containerd::start();
    let outcome = containerd.run(&unique("uname"), &["uname", "-r"]);
    assert!(
        outcome.status.success(),
        "{outcome:?}\n{}",
        containerd.log()
    );
    assert_eq!(outcome.stdout_text().trim(), common::guest_release());

    let outcome = containerd.run(&unique("exit"), &["sh", "-c", "exit 3"]);
    assert_eq!(outcome.code(), 3, "{outcome:?}");
}

#[test]
fn ctr_task_exec_runs_beside_the_application_in_the_vm() {
    let containerd = Containerd::start();
    let id = unique("exec");
    let runq = common::runq_binary();
    let started = containerd.ctr(&[
        "run",
        "--detach",
        "--runc-binary",
        runq.to_str().expect("runq path"),
        IMAGE,
        &id,
        "sh",
        "-c",
        "echo booted > /tmp/ready; exec sleep 1000",
    ]);
    assert!(started.status.success(), "{started:?}");

    // The VM boots after `ctr run -d` returns; the first exec that sees the marker proves it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut exec_number = 0;
    let mut exec = |command: &[&str]| {
        exec_number += 1;
        let exec_id = format!("e{exec_number}");
        let mut args = vec!["tasks", "exec", "--exec-id", &exec_id, &id];
        args.extend(command);
        containerd.ctr(&args)
    };
    loop {
        let outcome = exec(&["cat", "/tmp/ready"]);
        if outcome.status.success() && outcome.stdout_text() == "booted\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container never answered an exec: {outcome:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let outcome = exec(&["sh", "-c", "echo $((6 * 7)); uname -r"]);
    assert!(outcome.status.success(), "{outcome:?}");
    assert_eq!(
        outcome.stdout_text(),
        format!("42\n{}\n", common::guest_release())
    );
    let outcome = exec(&["sh", "-c", "exit 5"]);
    assert_eq!(outcome.code(), 5, "{outcome:?}");
}

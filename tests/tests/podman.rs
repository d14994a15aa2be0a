//! Podman with runq as its OCI runtime (`podman run --runtime /var/lib/runq/runq`): conmon
//! calls runq with runc's command line, and the container's network namespace is one Podman
//! prepared and named (/run/netns/...). Each test has a Podman store of its own.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{finish, Outcome, RUN_DEADLINE};

const PODMAN: &str = "/usr/bin/podman";
const IMAGE: &str = "localhost/busybox:latest";

/// A private Podman store (images, containers, run state), removed on drop with all in it.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("runq-podman-")
            .tempdir_in("/var/tmp")
            .expect("temporary directory");
        let podman = Podman { dir };
        let archive = podman.dir.path().join("busybox.tar");
        common::docker::save_busybox(&archive);
        let loaded = podman.podman(&["load", "-i", &archive.to_string_lossy()]);
        assert!(loaded.status.success(), "podman load: {loaded:?}");
        podman
    }

    fn podman_with_input(&self, args: &[&str], input: &[u8]) -> Outcome {
        let dir = self.dir.path();
        let child = Command::new(PODMAN)
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podman (make test installs it)");
        finish(child, input.to_vec(), RUN_DEADLINE)
    }

    fn podman(&self, args: &[&str]) -> Outcome {
        self.podman_with_input(args, b"")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.podman(&["rmi", "--all", "--force"]);
        common::unmount_below(self.dir.path());
    }
}

fn runq() -> String {
    common::runq_binary().to_string_lossy().into_owned()
}

#[test]
fn podman_run_boots_a_vm_on_podmans_network_and_returns_the_exit_code() {
    let podman = Podman::new();
    let outcome = podman.podman(&[
        "run",
        "--rm",
        "--runtime",
        &runq(),
        IMAGE,
        "sh",
        "-c",
        "uname -r; ip -o -4 addr show eth0 | wc -l; exit 7",
    ]);
    assert_eq!(outcome.code(), 7, "{outcome:?}");
    assert_eq!(
        outcome.stdout_text(),
        format!("{}\n1\n", common::guest_release()),
        "{outcome:?}"
    );
}

#[test]
fn podman_exec_runs_beside_the_application_in_the_vm() {
    let podman = Podman::new();
    let name = format!("runq-test-exec-{}", std::process::id());
    let started = podman.podman(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--runtime",
        &runq(),
        IMAGE,
        "sh",
        "-c",
        "echo booted > /tmp/ready; exec sleep 1000",
    ]);
    assert!(started.status.success(), "{started:?}");

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let outcome = podman.podman(&["exec", &name, "cat", "/tmp/ready"]);
        if outcome.status.success() && outcome.stdout_text() == "booted\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container never answered an exec: {outcome:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let outcome = podman.podman(&["exec", &name, "sh", "-c", "echo $((6 * 7)); uname -r"]);
    assert!(outcome.status.success(), "{outcome:?}");
    assert_eq!(
        outcome.stdout_text(),
        format!("42\n{}\n", common::guest_release())
    );
    let outcome = podman.podman(&["exec", &name, "sh", "-c", "exit 5"]);
    assert_eq!(outcome.code(), 5, "{outcome:?}");
    let outcome = podman.podman_with_input(&["exec", "-i", &name, "cat"], b"through stdin\n");
    assert_eq!(outcome.stdout_text(), "through stdin\n", "{outcome:?}");
}

/// `podman run --init`: Podman bind-mounts an init at /run/podman-init and makes it the
/// process; in the VM it is PID 1 of the application's namespace and passes the exit code on.
/// Debian's podman names catatonit, which Debian lacks; tini-static (Docker's init) serves.
#[test]
fn podman_run_init_puts_its_init_under_the_application_in_the_vm() {
    let podman = Podman::new();
    let outcome = podman.podman(&[
        "run",
        "--rm",
        "--runtime",
        &runq(),
        "--init",
        "--init-path",
        "/usr/bin/tini-static",
        IMAGE,
        "sh",
        "-c",
        "uname -r; tr '\\0' ' ' </proc/1/cmdline; echo; exit 4",
    ]);
    assert_eq!(outcome.code(), 4, "{outcome:?}");
    let text = outcome.stdout_text();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(common::guest_release().as_str()),
        "{outcome:?}"
    );
    assert!(
        lines
            .next()
            .is_some_and(|init| init.starts_with("/run/podman-init -- sh")),
        "{outcome:?}"
    );
}

/// The operator's per-container options are annotations (`run.runq.<flag>`), which the engine
/// takes from its own command line, never from the image; the environment, which includes the
/// image's ENV, may not pick 9p.
#[test]
fn an_annotation_picks_what_the_environment_may_not() {
    let podman = Podman::new();
    let runq = runq();
    let outcome = podman.podman(&[
        "run",
        "--rm",
        "--runtime",
        &runq,
        "--annotation",
        "run.runq.fs=9p",
        IMAGE,
        "sh",
        "-c",
        "grep ' / ' /proc/mounts | cut -d' ' -f3",
    ]);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "9p\n", "{outcome:?}");

    let outcome = podman.podman(&[
        "run",
        "--rm",
        "--runtime",
        &runq,
        "-e",
        "RUNQ_FS=9p",
        IMAGE,
        "true",
    ]);
    assert_ne!(outcome.code(), 0, "{outcome:?}");
    let message = outcome.stderr_text();
    assert!(
        message.contains("RUNQ_FS=9p") && message.contains("run.runq.fs=9p"),
        "{message}"
    );
}

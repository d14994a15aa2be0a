//! The runc commands engines use, on a runq container: create, start, state, ps, pause,
//! resume, kill with names and --all, delete; and a Kubernetes pod sandbox, which runq leaves
//! to runc.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::TestBundle;

fn state_of(bundle: &TestBundle) -> serde_json::Value {
    let output = bundle.runq(&[], &["state", &bundle.id]).output().unwrap();
    assert!(output.status.success(), "state: {output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn create_start_pause_resume_kill_delete() {
    let bundle = TestBundle::busybox(&[
        "sh",
        "-c",
        "trap 'echo got-usr1' USR1; trap 'echo got-hup' HUP; trap 'echo got-term; exit 0' TERM; \
         echo ready; while true; do sleep 1; done",
    ]);
    let output = bundle.path().join("output");
    // The engine's bundle stays as the engine wrote it, bytes and mode, the whole time: runc
    // gets runq's spec from runq's own directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bundle.config_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let engines_spec = std::fs::read(bundle.config_path()).unwrap();
    let untouched = || {
        assert_eq!(std::fs::read(bundle.config_path()).unwrap(), engines_spec);
        let mode = std::fs::metadata(bundle.config_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    };
    let create = bundle
        .runq(&[], &["create", "--bundle"])
        .arg(bundle.path())
        .arg(&bundle.id)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(create.success());
    untouched();
    let state = state_of(&bundle);
    assert_eq!(state["status"], "created");
    assert_eq!(
        std::path::Path::new(state["bundle"].as_str().unwrap()),
        bundle.path(),
        "state shows the engine's bundle: {state}"
    );
    assert!(
        !state["annotations"].to_string().contains("runq"),
        "state shows the engine's annotations only: {state}"
    );
    // The VM config holds the application's environment: root only, in runq's private
    // directory below runc's state root, never in the bundle.
    let mode =
        |path: std::path::PathBuf| std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    let private = bundle.state.join(".runq").join(&bundle.id);
    assert_eq!(mode(private.clone()), 0o700);
    assert_eq!(mode(private.join("vm.json")), 0o600);
    assert!(!bundle.path().join("runq").exists());
    assert!(bundle
        .runq(&[], &["start", &bundle.id])
        .status()
        .unwrap()
        .success());
    assert_eq!(state_of(&bundle)["status"], "running");
    wait_for_text(&output, "ready");
    // runq's private directory in runc's state root is no container.
    let list = bundle.runq(&[], &["list"]).output().unwrap();
    assert!(list.status.success(), "list: {list:?}");
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with(&bundle.id) && line.contains("running")),
        "{listed}"
    );
    assert_eq!(String::from_utf8_lossy(&list.stderr), "");

    let ps = bundle
        .runq(&[], &["ps", "--format", "json", &bundle.id])
        .output()
        .unwrap();
    let pids: Vec<i64> = serde_json::from_slice(&ps.stdout).unwrap();
    assert!(pids.len() >= 2, "proxy and QEMU at least: {pids:?}");

    assert!(bundle
        .runq(&[], &["pause", &bundle.id])
        .status()
        .unwrap()
        .success());
    assert_eq!(state_of(&bundle)["status"], "paused");
    assert!(bundle
        .runq(&[], &["resume", &bundle.id])
        .status()
        .unwrap()
        .success());
    assert_eq!(state_of(&bundle)["status"], "running");

    // Signals by name, by number and with --all all reach the application.
    assert!(bundle
        .runq(&[], &["kill", &bundle.id, "USR1"])
        .status()
        .unwrap()
        .success());
    wait_for_text(&output, "got-usr1");
    assert!(bundle
        .runq(&[], &["kill", &bundle.id, "1"])
        .status()
        .unwrap()
        .success());
    wait_for_text(&output, "got-hup");
    assert!(bundle
        .runq(&[], &["kill", "--all", &bundle.id, "SIGTERM"])
        .status()
        .unwrap()
        .success());
    wait_for_text(&output, "got-term");
    wait_for_status(&bundle, "stopped");
    assert!(bundle
        .runq(&[], &["delete", &bundle.id])
        .status()
        .unwrap()
        .success());
    assert!(!private.exists());
    untouched();
}

/// Waits for text in a file another process writes; a deadline, not a fixed sleep.
fn wait_for_text(path: &std::path::Path, text: &str) {
    wait_until(|| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "{text:?} did not appear: {:?}",
            std::fs::read_to_string(path)
        )
    });
}

fn wait_for_status(bundle: &TestBundle, status: &str) {
    wait_until(|| state_of(bundle)["status"] == status)
        .unwrap_or_else(|| panic!("container never became {status}"));
}

/// Re-checks a condition that only another process makes true (a file it writes, runc's
/// state), until the run deadline.
fn wait_until(mut condition: impl FnMut() -> bool) -> Option<()> {
    let deadline = std::time::Instant::now() + common::RUN_DEADLINE;
    while std::time::Instant::now() < deadline {
        if condition() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_kubernetes_pod_sandbox_is_left_to_runc_untouched() {
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let bundle = TestBundle::busybox(&["uname", "-r"]);
    bundle.edit(|spec| {
        spec["annotations"] = serde_json::json!({ "io.kubernetes.cri.container-type": "sandbox" });
    });
    let before = std::fs::read(bundle.config_path()).unwrap();
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(
        outcome.stdout_text(),
        host,
        "the sandbox ran in a VM: {outcome:?}"
    );
    assert_eq!(std::fs::read(bundle.config_path()).unwrap(), before);
    assert!(!bundle.path().join("runq").exists());
}

#[test]
fn exec_into_a_pod_sandbox_is_runcs() {
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let bundle = TestBundle::busybox(&["sleep", "1000"]);
    bundle.edit(|spec| {
        spec["annotations"] = serde_json::json!({ "io.kubernetes.cri.container-type": "sandbox" });
    });
    bundle.run_detached();
    let output = bundle
        .runq(&[], &["exec", &bundle.id, "uname", "-r"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), host);
}

/// How a runtime is driven in [`signal_right_after_start`]: the runtime's command with its
/// state root, and how the container is brought to running.
struct Driver {
    binary: std::path::PathBuf,
    root: std::path::PathBuf,
    id: String,
    detached_run: bool,
}

impl Driver {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(&self.binary);
        command.arg("--root").arg(&self.root).args(args);
        command
    }

    fn status(&self) -> String {
        let output = self.command(&["state", &self.id]).output().unwrap();
        let state: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        state["status"].as_str().unwrap_or("gone").to_string()
    }
}

/// Starts the container (create and start, or run --detach), sends TERM a short moment after
/// that returned, and tells whether the application's TERM trap ran and the container then
/// ended; deletes the container.
fn signal_right_after_start(bundle: &TestBundle, driver: &Driver) -> Result<(), String> {
    let output = bundle.path().join(format!("output-{}", driver.id));
    let stdout = || std::fs::File::create(&output).unwrap();
    let bundle_dir = bundle.path().to_str().unwrap();
    let started = if driver.detached_run {
        driver
            .command(&["run", "--detach", "--bundle", bundle_dir, &driver.id])
            .stdin(Stdio::null())
            .stdout(stdout())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    } else {
        let created = driver
            .command(&["create", "--bundle", bundle_dir, &driver.id])
            .stdin(Stdio::null())
            .stdout(stdout())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        created.success()
            && driver
                .command(&["start", &driver.id])
                .status()
                .unwrap()
                .success()
    };
    let outcome = if !started {
        Err("did not start".to_string())
    } else {
        // The same moment for both runtimes: what an engine or a test does right after start.
        std::thread::sleep(Duration::from_millis(500));
        let killed = driver
            .command(&["kill", &driver.id, "TERM"])
            .status()
            .unwrap();
        let stopped = wait_until(|| driver.status() == "stopped");
        let text = std::fs::read_to_string(&output).unwrap_or_default();
        match (killed.success(), stopped, text.contains("got-term")) {
            (true, Some(()), true) => Ok(()),
            other => Err(format!("kill, stopped, trap: {other:?}; output {text:?}")),
        }
    };
    let _ = driver
        .command(&["delete", "--force", &driver.id])
        .stderr(Stdio::null())
        .status();
    outcome
}

#[test]
fn a_signal_right_after_start_reaches_the_application_as_under_runc() {
    let bundle = TestBundle::busybox(&[
        "sh",
        "-c",
        "trap 'echo got-term; exit 0' TERM; sleep 10 & wait",
    ]);
    let runc = Driver {
        binary: "runc".into(),
        root: bundle.path().join("runc-state"),
        id: format!("{}-runc", bundle.id),
        detached_run: false,
    };
    assert_eq!(signal_right_after_start(&bundle, &runc), Ok(()), "runc");
    for (detached_run, suffix) in [(false, "start"), (true, "run-d")] {
        let runq = Driver {
            binary: common::runq_binary(),
            root: bundle.state.clone(),
            id: format!("{}-{suffix}", bundle.id),
            detached_run,
        };
        assert_eq!(
            signal_right_after_start(&bundle, &runq),
            Ok(()),
            "runq {suffix}"
        );
    }
}

#[test]
fn a_guest_that_never_starts_the_application_makes_start_fail_with_the_reason() {
    let bundle = TestBundle::busybox(&["true"]);
    assert!(bundle.create(&["--boot-timeout", "1", "--template", "off"]));
    // No TCG boot reaches the application in one second (a restore may).
    let start = bundle.runq(&[], &["start", &bundle.id]).output().unwrap();
    assert!(!start.status.success(), "{start:?}");
    let stderr = String::from_utf8_lossy(&start.stderr);
    assert!(
        stderr.contains("did not start the application within 1 s"),
        "{stderr}"
    );
    wait_for_status(&bundle, "stopped");
    let delete = bundle.runq(&[], &["delete", &bundle.id]).status().unwrap();
    assert!(delete.success());
    assert!(!bundle.state.join(".runq").join(&bundle.id).exists());
}

//! Docker with runq registered (`make test` runs scripts/docker-setup.sh first): containers
//! from the local busybox image, each removed again however the test ends.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{finish, Outcome, RUN_DEADLINE};

/// Debian's docker.io client, matching its daemon.
pub const DOCKER: &str = "/usr/bin/docker";
pub const IMAGE: &str = "busybox:latest";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A container name unique to this test run; the container is removed on drop.
pub struct Name(pub String);

impl Name {
    pub fn new() -> Name {
        Name(format!(
            "runq-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

impl Name {
    /// The container's first process on the host: for runq, the proxy.
    pub fn pid(&self) -> i32 {
        docker(&["inspect", "-f", "{{.State.Pid}}", &self.0])
            .stdout_text()
            .trim()
            .parse()
            .expect("the container's pid")
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        let _ = Command::new(DOCKER)
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn docker(args: &[&str]) -> Outcome {
    docker_with_input(args, b"")
}

pub fn docker_with_input(args: &[&str], input: &[u8]) -> Outcome {
    let child = Command::new(DOCKER)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker client (make test installs docker.io)");
    finish(child, input.to_vec(), RUN_DEADLINE)
}

/// Docker options of every runq container of the run: with `RUNQ_TEST_TEMPLATE=off` (see
/// [`super::templates_off`]) the runtime `runq-booted`, runq with `--template off`, which
/// `make docker` registers (the last `--runtime` wins).
pub fn runq_test_options() -> &'static [&'static str] {
    if super::templates_off() {
        &["--runtime", "runq-booted"]
    } else {
        &[]
    }
}

/// `docker run --rm [--runtime runq] OPTIONS busybox COMMAND...`
pub fn run(runtime: Runtime, options: &[&str], command: &[&str]) -> Outcome {
    let name = Name::new();
    let mut args = vec!["run", "--rm", "--name", &name.0];
    if runtime == Runtime::Runq {
        args.extend(["--runtime", "runq"]);
        args.extend(runq_test_options());
    }
    args.extend(options);
    args.push(IMAGE);
    args.extend(command);
    docker(&args)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Runc,
    Runq,
}

/// Runs the same container under runc and runq; both must exit alike with the same stdout.
pub fn same_as_runc(options: &[&str], command: &[&str]) -> String {
    let reference = run(Runtime::Runc, options, command);
    let outcome = run(Runtime::Runq, options, command);
    assert_eq!(
        outcome.code(),
        reference.code(),
        "runq: {outcome:?}\nrunc: {reference:?}"
    );
    assert_eq!(
        outcome.stdout_text(),
        reference.stdout_text(),
        "runq: {outcome:?}\nrunc: {reference:?}"
    );
    outcome.stdout_text()
}

/// `docker run -d --runtime runq --name NAME OPTIONS busybox COMMAND...`
pub fn start_detached(name: &Name, options: &[&str], command: &[&str]) {
    let mut args = vec!["run", "-d", "--runtime", "runq", "--name", &name.0];
    args.extend(runq_test_options());
    args.extend(options);
    args.push(IMAGE);
    args.extend(command);
    let started = docker(&args);
    assert_eq!(started.code(), 0, "{started:?}");
}

/// Waits until the container's log holds `count` lines with `text`: `docker logs` is the only
/// window onto a detached container, so it is read again until the deadline.
pub fn wait_for_log(name: &str, text: &str, count: usize) {
    let deadline = std::time::Instant::now() + RUN_DEADLINE;
    while std::time::Instant::now() < deadline {
        let logs = docker(&["logs", name]).stdout_text();
        if logs.lines().filter(|line| line.contains(text)).count() >= count {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{name} never logged {text:?} {count} times");
}

/// Runs an image builder of this repository (a path relative to its root) with `args`: they
/// debootstrap Debian images, which takes minutes on a fresh machine, and do nothing when the
/// image exists.
pub fn build_image(builder: &str, args: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(builder);
    let child = Command::new(&script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let built = finish(child, Vec::new(), std::time::Duration::from_secs(1200));
    assert_eq!(built.code(), 0, "{built:?}");
}

/// The busybox image the tests build, saved as an archive other engines can load.
pub fn save_busybox(archive: &std::path::Path) {
    let saved = Command::new(DOCKER)
        .args(["save", "-o"])
        .arg(archive)
        .arg(IMAGE)
        .output()
        .expect("docker save");
    assert!(saved.status.success(), "docker save: {saved:?}");
}

/// A second runtime entry whose `runtimeArgs` carry runq flags, added to daemon.json for
/// the test and removed again.
pub struct ExtraRuntime(pub &'static str);

impl ExtraRuntime {
    pub fn register(name: &'static str, args: &[&str]) -> ExtraRuntime {
        set_runtime(
            name,
            Some(serde_json::json!({
                "path": super::runq_root().join("runq"),
                "runtimeArgs": args,
            })),
        );
        ExtraRuntime(name)
    }
}

impl Drop for ExtraRuntime {
    fn drop(&mut self) {
        set_runtime(self.0, None);
    }
}

/// Adds or removes a runtime in /etc/docker/daemon.json and has dockerd reread it (SIGHUP),
/// waiting until `docker info` agrees.
/// Tests of one binary run in parallel: one rewrite of daemon.json at a time.
fn set_runtime(name: &str, entry: Option<serde_json::Value>) {
    static DAEMON_JSON: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = DAEMON_JSON
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = "/etc/docker/daemon.json";
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let present = entry.is_some();
    match entry {
        Some(entry) => config["runtimes"][name] = entry,
        None => {
            if let Some(runtimes) = config["runtimes"].as_object_mut() {
                runtimes.remove(name);
            }
        }
    }
    std::fs::write(path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let pid = std::process::Command::new("pidof")
        .arg("dockerd")
        .output()
        .unwrap();
    let pid: i32 = String::from_utf8_lossy(&pid.stdout).trim().parse().unwrap();
    // SAFETY: kill with the pid of the running dockerd.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + RUN_DEADLINE;
    let quoted = format!("\"{name}\"");
    while docker(&["info", "--format", "{{json .Runtimes}}"])
        .stdout_text()
        .contains(&quoted)
        != present
    {
        assert!(
            std::time::Instant::now() < deadline,
            "dockerd did not reload"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

//! The harness: busybox bundles built from Debian's busybox-static and runc's default spec,
//! driven through the installed runq (`make test` installs it first) with a private runc
//! state root, and removed again however the test ends.

#![allow(dead_code)]

pub mod containerd;
pub mod docker;
pub mod net;
pub mod pod;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Generous: boots under TCG on a loaded two-core machine are slow.
pub const RUN_DEADLINE: Duration = Duration::from_secs(120);

pub fn runq_root() -> PathBuf {
    runq_shared::layout::install_root()
}

pub fn runq_binary() -> PathBuf {
    let binary = runq_root().join("runq");
    assert!(
        binary.exists(),
        "{} not found: the integration tests need root and an installed runq (make test)",
        binary.display()
    );
    binary
}

/// The templates on this host, with their metas (see `runq_shared::template`).
pub fn templates() -> Vec<(PathBuf, runq_shared::template::Meta)> {
    std::fs::read_dir(runq_shared::template::dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let key = entry.file_name().to_string_lossy().into_owned();
            let meta = runq_shared::template::read_meta(&entry.path(), &key).ok()?;
            Some((entry.path(), meta))
        })
        .collect()
}

/// `RUNQ_TEST_TEMPLATE=off` runs the tests with every VM booted rather than restored from a
/// template: runq's flag for `runq` commands, its annotation for Docker's containers.
pub fn templates_off() -> bool {
    std::env::var("RUNQ_TEST_TEMPLATE").is_ok_and(|value| value == "off")
}

/// The runq flags of the run: `--template off` with [`templates_off`].
pub fn runq_test_flags() -> &'static [&'static str] {
    if templates_off() {
        &["--template", "off"]
    } else {
        &[]
    }
}

pub fn assets_dir() -> PathBuf {
    runq_shared::layout::installed_assets()
}

pub fn guest_release() -> String {
    std::fs::read_to_string(assets_dir().join(runq_shared::layout::assets::KERNEL_RELEASE))
        .expect("installed kernel release")
        .trim()
        .to_string()
}

pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Outcome {
    pub fn code(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.status
            .code()
            .unwrap_or_else(|| 128 + self.status.signal().unwrap_or(0))
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} stdout {:?} stderr {:?}",
            self.code(),
            truncate(&self.stdout_text()),
            truncate(&self.stderr_text())
        )
    }
}

fn truncate(text: &str) -> &str {
    &text[..text.len().min(2000)]
}

/// A busybox bundle with its own runc state root; deleted on drop.
pub struct TestBundle {
    pub dir: tempfile::TempDir,
    pub id: String,
    pub state: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestBundle {
    pub fn busybox(args: &[&str]) -> TestBundle {
        let dir = tempfile::Builder::new()
            .prefix("runq-test-")
            .tempdir()
            .expect("temp dir");
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "root", "home"] {
            std::fs::create_dir_all(rootfs.join(sub)).expect("mkdir");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("copy /bin/busybox (apt-get install busybox-static)");
        let applets = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&applets.stdout).lines() {
            let link = rootfs.join("bin").join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", link).expect("applet link");
            }
        }
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
        )
        .expect("passwd");
        let status = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .status()
            .expect("runc spec");
        assert!(status.success(), "runc spec failed");
        let id = format!(
            "runq-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let state = dir.path().join("state");
        let bundle = TestBundle { dir, id, state };
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        bundle.edit(|spec| {
            spec["process"]["terminal"] = Value::Bool(false);
            spec["process"]["args"] = serde_json::json!(args);
        });
        bundle
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.path().join("rootfs")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("config.json")
    }

    pub fn edit(&self, change: impl FnOnce(&mut Value)) {
        let path = self.config_path();
        let mut spec: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read config")).expect("json");
        change(&mut spec);
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json")).expect("write");
    }

    pub fn add_env(&self, entries: &[&str]) {
        self.edit(|spec| {
            let env = spec["process"]["env"].as_array_mut().expect("env array");
            env.extend(entries.iter().map(|e| Value::String(e.to_string())));
        });
    }

    /// `runq [runq_flags] --root STATE ARGS...`
    pub fn runq(&self, runq_flags: &[&str], args: &[&str]) -> Command {
        let mut command = Command::new(runq_binary());
        command
            .args(runq_test_flags())
            .args(runq_flags)
            .arg("--root")
            .arg(&self.state)
            .args(args);
        command
    }

    /// `runq run` in the foreground, stdin from `input`.
    pub fn run_with(&self, runq_flags: &[&str], input: &[u8]) -> Outcome {
        let child = self
            .runq(runq_flags, &["run", "--bundle"])
            .arg(self.path())
            .arg(&self.id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runq run");
        finish(child, input.to_vec(), RUN_DEADLINE)
    }

    pub fn run(&self) -> Outcome {
        self.run_with(&[], b"")
    }

    /// `runq run --detach`: the container keeps running after this returns.
    pub fn run_detached(&self) {
        let status = self
            .runq(&[], &["run", "--detach", "--bundle"])
            .arg(self.path())
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("runq run --detach");
        assert!(status.success(), "runq run --detach: {status}");
    }

    /// `runq [runq_flags] create` with no stdio; whether it succeeded.
    pub fn create(&self, runq_flags: &[&str]) -> bool {
        self.runq(runq_flags, &["create", "--bundle"])
            .arg(self.path())
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("runq create")
            .success()
    }

    /// Runs the bundle under runc and then under runq; both must succeed with the same
    /// stdout, which is returned with runq's outcome.
    pub fn same_as_runc(&self) -> Outcome {
        let reference = self.run_under_runc();
        assert_eq!(reference.code(), 0, "runc: {reference:?}");
        let outcome = self.run();
        assert_eq!(outcome.code(), 0, "runq: {outcome:?}");
        assert_eq!(outcome.stdout_text(), reference.stdout_text());
        outcome
    }

    /// The same bundle under plain runc, for comparison; the bundle is left as it was.
    pub fn run_under_runc(&self) -> Outcome {
        let child = Command::new("runc")
            .arg("--root")
            .arg(self.path().join("runc-state"))
            .args(["run", "--bundle"])
            .arg(self.path())
            .arg(format!("{}-runc", self.id))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runc run");
        finish(child, Vec::new(), RUN_DEADLINE)
    }
}

impl Drop for TestBundle {
    fn drop(&mut self) {
        // Whatever the test did, no container may outlive it.
        let _ = self
            .runq(&[], &["delete", "--force", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs a shell command line under `script`, which gives it a terminal as an interactive shell
/// would have.
pub fn under_script(command_line: &str) -> Outcome {
    let child = Command::new("script")
        .args(["-qec", command_line, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (bsdutils)");
    finish(child, Vec::new(), RUN_DEADLINE)
}

/// Feeds stdin, collects stdout and stderr, and waits for the exit; kills the process and
/// fails the test if the deadline passes first.
pub fn finish(mut child: Child, input: Vec<u8>, deadline: Duration) -> Outcome {
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(stdin) = stdin.as_mut() {
            let _ = stdin.write_all(&input);
        }
        drop(stdin);
    });
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (done, outcome) = mpsc::channel();
    std::thread::spawn(move || {
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(stderr) = stderr.as_mut() {
                let _ = stderr.read_to_end(&mut buf);
            }
            buf
        });
        let mut out = Vec::new();
        if let Some(stdout) = stdout.as_mut() {
            let _ = stdout.read_to_end(&mut out);
        }
        let err = err_reader.join().unwrap_or_default();
        let status = child.wait().expect("wait");
        let _ = done.send(Outcome {
            status,
            stdout: out,
            stderr: err,
        });
    });
    match outcome.recv_timeout(deadline) {
        Ok(outcome) => {
            let _ = writer.join();
            outcome
        }
        Err(_) => {
            // SAFETY: kill with a pid we started; at worst it is already gone.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("runq did not finish within {deadline:?}");
        }
    }
}

/// Waits until `condition` holds, checking every 100 ms; fails the test at the run deadline.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + RUN_DEADLINE;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every process below `pid`, found through /proc's children lists.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// Descendants of `pid` whose command line contains `needle`.
pub fn descendants_running(pid: i32, needle: &str) -> Vec<i32> {
    descendants(pid)
        .into_iter()
        .filter(|child| {
            std::fs::read(format!("/proc/{child}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A `runq run` in the background whose application printed its first line.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl TestBundle {
    /// Starts `runq run` and waits (with the run deadline) for the application's first line.
    pub fn start_and_wait_for_line(&self, runq_flags: &[&str]) -> (Running, String) {
        use std::io::BufRead;
        let mut child = self
            .runq(runq_flags, &["run", "--bundle"])
            .arg(self.path())
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runq run");
        let stdout = child.stdout.take().expect("stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        let first = match lines.recv_timeout(RUN_DEADLINE) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("the application printed nothing within {RUN_DEADLINE:?}");
            }
        };
        (Running { child, lines }, first)
    }
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn finish(self) -> Outcome {
        finish(self.child, Vec::new(), RUN_DEADLINE)
    }
}

/// Mounts left under `dir` (snapshots, storage layers), unmounted deepest first.
pub fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|point| point.starts_with(prefix.as_str()))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let _ = Command::new("umount").args(["-l", point]).status();
    }
}

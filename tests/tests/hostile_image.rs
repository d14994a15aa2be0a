//! The host side against a hostile image and a hostile guest: nothing of theirs runs, loads or
//! is read on the host side outside the container's root, and what the guest changes in its
//! tree cannot change what the host side uses. Each test would have failed before runq's
//! host side ran in a root of its own.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::docker::{docker, start_detached, wait_for_log, Name, DOCKER};
use common::{descendants, finish, guest_release, runq_root, wait_until, TestBundle, RUN_DEADLINE};

/// A Docker image built for one test, removed again however the test ends.
struct Image(String);

impl Image {
    /// `docker build` of `context` (its Dockerfile starts from the local busybox image).
    fn build(context: &Path) -> Image {
        let image = Image(format!("runq-test-hostile-{}", std::process::id()));
        let child = Command::new(DOCKER)
            .args(["build", "-q", "-t", &image.0])
            .arg(context)
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker build");
        let built = finish(child, Vec::new(), RUN_DEADLINE);
        assert_eq!(built.code(), 0, "{built:?}");
        image
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new(DOCKER)
            .args(["rmi", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn cc(source: &str, output: &Path, flags: &[&str]) {
    let dir = output.parent().unwrap();
    let file = dir.join("source.c");
    std::fs::write(&file, source).unwrap();
    let status = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(output)
        .arg(&file)
        .status()
        .expect("cc (the C compiler Rust links with)");
    assert!(status.success(), "cc {flags:?} failed");
}

/// Leaves /preload-markers/<pid> holding its process's command line, wherever it is loaded.
const PRELOAD_LIBRARY: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {
    char path[64], cmdline[512];
    ssize_t n = 0;
    int in = open("/proc/self/cmdline", O_RDONLY);
    if (in >= 0) { n = read(in, cmdline, sizeof cmdline - 1); close(in); }
    if (n < 0) n = 0;
    for (ssize_t i = 0; i < n; i++) if (cmdline[i] == 0) cmdline[i] = ' ';
    mkdir("/preload-markers", 0777);
    snprintf(path, sizeof path, "/preload-markers/%d", (int)getpid());
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (out >= 0) { write(out, cmdline, n); write(out, "\n", 1); close(out); }
}
"#;

const HELLO: &str = r#"
#include <stdio.h>
int main(void) { puts("hello from a dynamic program"); return 0; }
"#;

/// The library names a process on the host side of the container would have: anything the
/// runtime, not the application, started.
const HOST_SIDE: [&str; 6] = [
    "qemu",
    "virtiofsd",
    "passt",
    "proxy",
    "runq-exec",
    "ld-linux",
];

#[test]
fn an_images_ld_so_preload_never_runs_on_the_host_side() {
    let context = tempfile::Builder::new()
        .prefix("runq-preload-")
        .tempdir()
        .unwrap();
    let dir = context.path();
    cc(
        PRELOAD_LIBRARY,
        &dir.join("evil.so"),
        &["-shared", "-fPIC", "-O2"],
    );
    cc(HELLO, &dir.join("hello"), &["-O2"]);
    // The dynamic program's C library and loader, so that the library does run in the guest:
    // proof that it works and would have run wherever the image's loader set-up was used.
    std::fs::copy("/lib/x86_64-linux-gnu/libc.so.6", dir.join("libc.so.6")).unwrap();
    std::fs::copy(
        "/lib64/ld-linux-x86-64.so.2",
        dir.join("ld-linux-x86-64.so.2"),
    )
    .unwrap();
    std::fs::write(dir.join("ld.so.preload"), "/lib/evil.so\n").unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox:latest\n\
         COPY evil.so /lib/evil.so\n\
         COPY libc.so.6 /lib/x86_64-linux-gnu/libc.so.6\n\
         COPY ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2\n\
         COPY hello /hello\n\
         COPY ld.so.preload /etc/ld.so.preload\n",
    )
    .unwrap();
    let image = Image::build(dir);

    let name = Name::new();
    let started = docker(&[
        "run",
        "-d",
        "--runtime",
        "runq",
        "--name",
        &name.0,
        &image.0,
        "sh",
        "-c",
        "/hello; echo ready; sleep 100000",
    ]);
    assert_eq!(started.code(), 0, "{started:?}");
    wait_for_log(&name.0, "ready", 1);
    let exec = docker(&["exec", &name.0, "/hello"]);
    assert_eq!(exec.code(), 0, "{exec:?}");
    assert_eq!(exec.stdout_text(), "hello from a dynamic program\n");

    let markers = docker(&["exec", &name.0, "sh", "-c", "cat /preload-markers/*"]);
    let markers = markers.stdout_text();
    assert!(
        markers.lines().filter(|l| l.contains("/hello")).count() >= 2,
        "the library never ran in the guest: {markers:?}"
    );
    for line in markers.lines() {
        assert!(
            !HOST_SIDE.iter().any(|host| line.contains(host)),
            "the image's library ran on the host side: {line}"
        );
    }
    // Nor is it mapped by any host-side process of the container.
    let proxy = name.pid();
    let mut processes = descendants(proxy);
    processes.push(proxy);
    assert!(
        processes.len() >= 3,
        "proxy, virtiofsd, QEMU: {processes:?}"
    );
    for pid in processes {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        assert!(
            !maps.contains("evil.so"),
            "process {pid} maps the image's library"
        );
    }
    assert!(!Path::new(&format!("/proc/{proxy}/root/preload-markers")).exists());
}

#[test]
fn the_guest_cannot_plant_or_unmount_what_the_host_side_uses() {
    let volume = tempfile::Builder::new()
        .prefix("runq-hostile-volume-")
        .tempdir()
        .unwrap();
    // The guest binds the shared tree without its own mounts on top, then removes, replaces
    // and plants what the host side used to find there.
    let attack = "mkdir -p /mnt/tree && mount --bind / /mnt/tree && cd /mnt/tree && \
        rm -rf .runq qemu; mkdir -p .runq/qemu qemu; \
        for f in .runq/qemu/runq-exec .runq/qemu/proxy .runq/exec.sock qemu/runq-exec; do \
          printf '#!/bin/sh\\ntouch /planted-ran\\n' > $f; chmod 755 $f; done; \
        rm -rf proc dev; ln -s /etc proc; ln -s /tmp dev; \
        rm -f etc/resolv.conf etc/hostname etc/hosts; ln -sf /dev/zero etc/resolv.conf; \
        umount /data; rmdir /data; ln -s /proc/sys/kernel /data; \
        cd / && umount /mnt/tree; echo attacked; sleep 100000";
    let name = Name::new();
    let volume_arg = format!("{}:/data", volume.path().display());
    let started = docker(&[
        "run",
        "-d",
        "--runtime",
        "runq",
        "--privileged",
        "--name",
        &name.0,
        "-v",
        &volume_arg,
        "--health-cmd",
        "test ! -e /planted-ran",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "--health-timeout",
        "100s",
        "busybox:latest",
        "sh",
        "-c",
        attack,
    ]);
    assert_eq!(started.code(), 0, "{started:?}");
    wait_for_log(&name.0, "attacked", 1);

    let release = guest_release();
    let exec = docker(&["exec", &name.0, "uname", "-r"]);
    assert_eq!(exec.code(), 0, "{exec:?}");
    assert_eq!(exec.stdout_text().trim(), release);
    wait_until("the health check passes", || {
        docker(&["inspect", "-f", "{{.State.Health.Status}}", &name.0])
            .stdout_text()
            .trim()
            == "healthy"
    });
    let runq_exec = Command::new(runq_root().join("runq-exec"))
        .args([&name.0, "uname", "-r"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let runq_exec = finish(runq_exec, Vec::new(), RUN_DEADLINE);
    assert_eq!(runq_exec.code(), 0, "{runq_exec:?}");
    assert_eq!(runq_exec.stdout_text().trim(), release);

    let planted = docker(&["exec", &name.0, "test", "-e", "/planted-ran"]);
    assert_eq!(planted.code(), 1, "the guest's file ran: {planted:?}");
    let proxy = docker(&["inspect", "-f", "{{.State.Pid}}", &name.0]).stdout_text();
    assert!(!Path::new(&format!("/proc/{}/root/planted-ran", proxy.trim())).exists());
}

/// A path outside the container's root holding what a link in the image points at.
struct HostFiles(tempfile::TempDir);

impl HostFiles {
    fn new() -> HostFiles {
        let dir = tempfile::Builder::new()
            .prefix("runq-host-files-")
            .tempdir()
            .unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            "nobody:x:4242:4242:host:/:/bin/sh\n",
        )
        .unwrap();
        HostFiles(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

fn runq_exec(bundle: &TestBundle, options: &[&str], command: &[&str]) -> common::Outcome {
    let child = Command::new(runq_root().join("runq-exec"))
        .arg("--root")
        .arg(&bundle.state)
        .args(options)
        .arg(&bundle.id)
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child, Vec::new(), RUN_DEADLINE)
}

#[test]
fn links_fifos_and_devices_in_the_image_are_never_followed_out_of_it() {
    let host = HostFiles::new();
    let bundle = TestBundle::busybox(&["sleep", "100000"]);
    let etc = bundle.rootfs().join("etc");
    std::fs::remove_file(etc.join("passwd")).unwrap();
    std::os::unix::fs::symlink(host.path("passwd"), etc.join("passwd")).unwrap();
    nix::unistd::mkfifo(&etc.join("resolv.conf"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    std::os::unix::fs::symlink("/dev/zero", etc.join("hosts")).unwrap();
    // The proxy reads resolv.conf before it boots the VM: a FIFO there must not hang it.
    bundle.run_detached();
    wait_until("exec works", || {
        runq_exec(&bundle, &[], &["true"]).code() == 0
    });
    // Made once the container runs, as the guest could: runc itself reads /etc/group while it
    // creates a container, and waits on a FIFO there under runc as well.
    nix::unistd::mkfifo(&etc.join("group"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    // The host's passwd, named by an absolute link, is not the container's.
    let user = runq_exec(&bundle, &["-u", "nobody"], &["id", "-u"]);
    assert_ne!(user.code(), 0, "{user:?}");
    assert!(!user.stdout_text().contains("4242"), "{user:?}");
    assert!(
        user.stderr_text().contains("no user \"nobody\""),
        "{user:?}"
    );
    let group = runq_exec(&bundle, &["-u", "0:staff"], &["id", "-g"]);
    assert_ne!(group.code(), 0, "{group:?}");
    assert!(group.stderr_text().contains("a FIFO"), "{group:?}");
}

#[test]
fn an_image_with_a_link_at_runqs_own_path_is_refused_by_name() {
    let bundle = TestBundle::busybox(&["true"]);
    std::os::unix::fs::symlink("/tmp", bundle.rootfs().join(".runq")).unwrap();
    let outcome = bundle.run();
    assert_ne!(outcome.code(), 0, "{outcome:?}");
    let message = outcome.stderr_text();
    assert!(
        message.contains(".runq") && message.contains("symbolic link"),
        "{message}"
    );
    assert!(!message.contains("panicked"), "{message}");
    // Nothing left: no container, no private directory, the bundle as it was.
    assert!(!bundle.state.join(&bundle.id).exists());
    assert!(!bundle.state.join(".runq").join(&bundle.id).exists());
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.config_path()).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"][0], "true");
}

/// runc runs startContainer hooks from the container's root; under runq that root is the
/// host side's, so the hook would be the image's binary outside the VM. Refused at create.
#[test]
fn a_start_container_hook_from_the_image_is_refused_and_never_runs() {
    let bundle = TestBundle::busybox(&["true"]);
    bundle.edit(|spec| {
        spec["hooks"] = serde_json::json!({
            "startContainer": [
                { "path": "/bin/sh", "args": ["sh", "-c", "touch /hook-ran"] }
            ]
        });
    });
    let outcome = bundle.run();
    assert_ne!(outcome.code(), 0, "{outcome:?}");
    let message = outcome.stderr_text();
    assert!(message.contains("startContainer hook"), "{message}");
    assert!(!bundle.rootfs().join("hook-ran").exists());
    assert!(!bundle.state.join(&bundle.id).exists());
    assert!(!bundle.state.join(".runq").join(&bundle.id).exists());
}

#[test]
fn runq_mem_in_the_environment_never_raises_dockers_memory_limit() {
    let outcome = common::docker::run(
        common::docker::Runtime::Runq,
        &["-m", "256m", "-e", "RUNQ_MEM=1024"],
        &["true"],
    );
    assert_ne!(outcome.code(), 0, "{outcome:?}");
    let message = outcome.stderr_text();
    assert!(
        message.contains("RUNQ_MEM=1024") && message.contains("256 MiB"),
        "{message}"
    );
}

/// The runtime sees one environment: the image's ENV and `docker run -e` alike. 9p (a file
/// server inside QEMU) and QEMU's CPU model are only the operator's to pick: the runtime's
/// flags or an annotation, which the engine never takes from an image.
#[test]
fn the_environment_cannot_pick_what_weakens_the_host_side() {
    for variable in ["RUNQ_FS=9p", "RUNQ_CPUARGS=host"] {
        let outcome =
            common::docker::run(common::docker::Runtime::Runq, &["-e", variable], &["true"]);
        assert_ne!(outcome.code(), 0, "{variable}: {outcome:?}");
        let message = outcome.stderr_text();
        assert!(
            message.contains(variable) && message.contains("--annotation"),
            "{variable}: {message}"
        );
    }
}

/// One field of /proc/PID/status, as the kernel prints it.
fn status_field(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn cmdline(pid: i32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// What the README's confinement table says of each host-side process, read from the
/// kernel's view of them: no_new_privs everywhere, QEMU with its own seccomp filter and
/// only DAC_OVERRIDE left in its bounding set, virtiofsd's file server in its own filter with
/// an empty bounding set, and the proxy in runq's own root, not the image's.
#[test]
fn the_host_side_processes_are_confined_as_the_readme_says() {
    let name = Name::new();
    start_detached(&name, &[], &["sh", "-c", "echo ready; sleep 1000"]);
    wait_for_log(&name.0, "ready", 1);
    let proxy = name.pid();

    let root = PathBuf::from(format!("/proc/{proxy}/root"));
    assert!(
        root.join("qemu").is_dir(),
        "the proxy is not in runq's own root"
    );
    assert!(
        !root.join("bin").exists(),
        "the proxy sees the image's /bin"
    );

    let helpers = descendants(proxy);
    let qemu: Vec<i32> = helpers
        .iter()
        .copied()
        .filter(|pid| cmdline(*pid).contains("/qemu-system-"))
        .collect();
    let virtiofsd: Vec<i32> = helpers
        .iter()
        .copied()
        .filter(|pid| cmdline(*pid).contains("/virtiofsd "))
        .collect();
    assert_eq!(qemu.len(), 1, "QEMU among {helpers:?}");
    assert!(!virtiofsd.is_empty(), "no virtiofsd among {helpers:?}");

    for pid in std::iter::once(proxy).chain(helpers.iter().copied()) {
        assert_eq!(
            status_field(pid, "NoNewPrivs"),
            "1",
            "no_new_privs of {}",
            cmdline(pid)
        );
    }
    assert_eq!(status_field(qemu[0], "Seccomp"), "2", "QEMU's seccomp mode");
    assert_eq!(
        status_field(qemu[0], "CapBnd"),
        "0000000000000002",
        "QEMU's bounding set: DAC_OVERRIDE only"
    );
    for pid in &virtiofsd {
        assert_eq!(
            status_field(*pid, "CapBnd"),
            "0000000000000000",
            "virtiofsd's bounding set"
        );
    }
    assert!(
        virtiofsd
            .iter()
            .any(|pid| status_field(*pid, "Seccomp") == "2"),
        "virtiofsd's file server runs without its seccomp filter"
    );

    // The proxy confines itself once QEMU runs, every thread of it: SYS_NICE (paging the
    // boot images out of QEMU) and QEMU's DAC_OVERRIDE, runq's seccomp filter, and the
    // engine's read-only /proc/sys (Docker's readonlyPaths), which QEMU shares.
    let threads: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{proxy}/task"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(threads.len() > 1, "the proxy's threads: {threads:?}");
    for thread in &threads {
        let status = std::fs::read_to_string(thread.join("status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            assert_eq!(field(set), "0000000000800002", "{set} of {thread:?}");
        }
        assert_eq!(field("Seccomp"), "2", "seccomp of {thread:?}");
    }
    // The proxy's own descriptors are bounded once the helpers run, and QEMU's, which serves
    // no files with virtio-fs; virtiofsd keeps runc's (one per inode the guest holds).
    let open_files = |pid: i32| {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .unwrap_or_default()
            .split_whitespace()
            .skip(3)
            .take(2)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        open_files(proxy),
        ["4096", "4096"],
        "the proxy's RLIMIT_NOFILE"
    );
    assert_eq!(
        open_files(qemu[0]),
        ["1024", "1024"],
        "QEMU's RLIMIT_NOFILE"
    );
    let mounts = std::fs::read_to_string(format!("/proc/{proxy}/mountinfo")).unwrap();
    let proc_sys = mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.get(4) == Some(&"/proc/sys")).then(|| fields[5].to_string())
        })
        .next_back();
    assert!(
        proc_sys
            .as_deref()
            .is_some_and(|options| options.starts_with("ro,")),
        "/proc/sys on the host side: {proc_sys:?}"
    );
    // The exec relay, host side too: no capabilities, runq's filter. A detached exec keeps it
    // running (a child of the engine's shim), in the proxy's PID namespace.
    let exec = docker(&["exec", "-d", &name.0, "sleep", "1000"]);
    assert_eq!(exec.code(), 0, "{exec:?}");
    let pid_namespace = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let mut relay = Vec::new();
    wait_until("the exec relay runs", || {
        relay = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| cmdline(*pid).contains("runq-exec --relay"))
            .filter(|pid| pid_namespace(*pid) == pid_namespace(proxy))
            .collect();
        !relay.is_empty()
    });
    for pid in relay {
        assert_eq!(status_field(pid, "CapBnd"), "0000000000000000", "relay");
        assert_eq!(
            status_field(pid, "Seccomp"),
            "2",
            "the relay's seccomp mode"
        );
        assert_eq!(status_field(pid, "NoNewPrivs"), "1", "relay");
    }
    let removed = docker(&["rm", "-f", &name.0]);
    assert_eq!(removed.code(), 0, "{removed:?}");
}

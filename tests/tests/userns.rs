//! User namespaces: a spec with uid/gid mappings runs under runq as under runc, and Docker's
//! `userns-remap` works with runq as its runtime. The mapping is applied once, on the host, by
//! virtiofsd running in the container's user namespace: the guest sees container ids and the
//! host gets mapped ones.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestBundle;
use serde_json::json;

/// The host ids container root maps to; Docker's `default` remapping takes the same range.
const MAPPED_ROOT: u32 = 100_000;

fn chown_tree(path: &Path, uid: u32) {
    let status = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_spec_with_a_user_namespace_runs_as_under_runc() {
    let bundle = TestBundle::busybox(&[
        "sh",
        "-c",
        "id; touch /tmp/made; mkdir /tmp/dir; ls -ln /tmp | sed 1d | awk '{print $1, $3, $4, $9}'; \
         grep -E '^(Uid|CapEff)' /proc/self/status",
    ]);
    bundle.edit(|spec| {
        spec["root"]["readonly"] = false.into();
        let namespaces = spec["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.push(json!({"type": "user"}));
        let mapping = json!([{"containerID": 0, "hostID": MAPPED_ROOT, "size": 65536}]);
        spec["linux"]["uidMappings"] = mapping.clone();
        spec["linux"]["gidMappings"] = mapping;
    });
    chown_tree(&bundle.rootfs(), MAPPED_ROOT);
    let tmp = bundle.rootfs().join("tmp");
    let clear_tmp = || {
        for entry in std::fs::read_dir(&tmp).unwrap().flatten() {
            let _ = std::fs::remove_dir_all(entry.path())
                .or_else(|_| std::fs::remove_file(entry.path()));
        }
    };
    let reference = bundle.run_under_runc();
    assert_eq!(reference.code(), 0, "runc: {reference:?}");
    clear_tmp();
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "runq: {outcome:?}");
    assert_eq!(outcome.stdout_text(), reference.stdout_text());
    let text = outcome.stdout_text();
    assert!(text.contains("uid=0(root)"), "{text}");
    assert!(text.contains("-rw-r--r-- 0 0 made"), "{text}");
    // Mapped once: what the guest's root made belongs to the mapped root on the host.
    for made in ["made", "dir"] {
        let owner = std::fs::metadata(tmp.join(made)).unwrap();
        assert_eq!(
            (owner.uid(), owner.gid()),
            (MAPPED_ROOT, MAPPED_ROOT),
            "{made}"
        );
    }
    clear_tmp();
}

/// A second dockerd with `userns-remap`, its own data root, socket and bridge, stopped and
/// removed on drop; the main daemon and its bridge are left alone.
struct RemappedDocker {
    daemon: Child,
    dir: tempfile::TempDir,
}

const BRIDGE: &str = "runq-userns0";
const SOCKET: &str = "unix:///run/runq-test-userns.sock";

impl RemappedDocker {
    fn start() -> RemappedDocker {
        let _ = Command::new("ip")
            .args(["link", "del", BRIDGE])
            .stderr(Stdio::null())
            .status();
        for args in [
            &["link", "add", BRIDGE, "type", "bridge"][..],
            &["addr", "add", "10.98.0.1/24", "dev", BRIDGE],
            &["link", "set", BRIDGE, "up"],
        ] {
            assert!(Command::new("ip").args(args).status().unwrap().success());
        }
        let dir = tempfile::Builder::new()
            .prefix("runq-userns-docker-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let config = json!({
            "userns-remap": "default",
            "bridge": BRIDGE,
            "iptables": false,
            "ip6tables": false,
            "data-root": dir.path().join("data"),
            "exec-root": dir.path().join("exec"),
            "pidfile": dir.path().join("dockerd.pid"),
            "hosts": [SOCKET],
            "runtimes": {"runq": {"path": common::runq_binary()}}
        });
        let config_path = dir.path().join("daemon.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::File::create(dir.path().join("dockerd.log")).unwrap();
        let daemon = Command::new("dockerd")
            .arg("--config-file")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        let docker = RemappedDocker { daemon, dir };
        let deadline = Instant::now() + common::RUN_DEADLINE;
        while !docker.docker(&["info"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the userns-remap dockerd did not answer: {}",
                std::fs::read_to_string(docker.dir.path().join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let archive = docker.dir.path().join("busybox.tar");
        common::docker::save_busybox(&archive);
        let loaded = docker.docker(&["load", "-q", "-i", archive.to_str().unwrap()]);
        assert!(loaded.status.success(), "{loaded:?}");
        docker
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(["-H", SOCKET])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn run(&self, runtime: Option<&str>, options: &[&str], command: &str) -> (i32, String) {
        let mut args = vec!["run", "--rm"];
        if let Some(runtime) = runtime {
            args.extend(["--runtime", runtime]);
        }
        args.extend(options);
        args.extend([common::docker::IMAGE, "sh", "-c", command]);
        let output = self.docker(&args);
        (
            output.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }
}

impl Drop for RemappedDocker {
    fn drop(&mut self) {
        let running = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&running.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        // SAFETY: kill with the pid of our own child.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.daemon.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        common::unmount_below(self.dir.path());
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
    }
}

#[test]
fn docker_with_userns_remap_runs_runq_containers_as_runc_ones() {
    let docker = RemappedDocker::start();
    let volume = tempfile::Builder::new()
        .prefix("runq-userns-volume-")
        .tempdir_in("/var/tmp")
        .unwrap();
    chown_tree(volume.path(), MAPPED_ROOT);
    let mount = format!("{}:/data", volume.path().display());
    let script = "id; ls -ln /data | sed 1d | awk '{print $3, $4, $9}'; \
                  ping -c 1 -W 5 10.98.0.1 > /dev/null && echo gateway answers; exit 3";
    let (runc_code, runc_text) = docker.run(None, &["-v", &mount], script);
    let (code, text) = docker.run(
        Some("runq"),
        &["-v", &mount],
        &format!("echo x > /data/f; {script}"),
    );
    assert_eq!(runc_code, 3, "runc: {runc_text}");
    assert_eq!(code, 3, "runq: {text}");
    assert!(text.contains("uid=0(root)"), "{text}");
    assert!(
        text.contains("0 0 f"),
        "the guest's root owns its file: {text}"
    );
    assert!(text.contains("gateway answers"), "{text}");
    assert!(runc_text.contains("gateway answers"), "{runc_text}");
    let owner = std::fs::metadata(volume.path().join("f")).unwrap();
    assert_eq!((owner.uid(), owner.gid()), (MAPPED_ROOT, MAPPED_ROOT));
    // Kernel and user: the VM's, with the mapped root's files.
    let (_, uname) = docker.run(Some("runq"), &[], "uname -r");
    assert_eq!(uname.trim(), common::guest_release());
}

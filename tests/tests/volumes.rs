//! Docker volumes and bind mounts in runq containers: the guest's writes are on the host at
//! once, read-only mounts stay read-only, and a shared writable mmap works on the shared root
//! and on volumes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::docker::{
    docker, run, same_as_runc, start_detached, ExtraRuntime, Name, Runtime, IMAGE,
};

/// A directory on the host for a bind mount, removed on drop.
fn host_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("runq-volume-")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn wait_for_file(path: &Path, text: &str) {
    let deadline = Instant::now() + common::RUN_DEADLINE;
    while std::fs::read_to_string(path).unwrap_or_default() != text {
        assert!(
            Instant::now() < deadline,
            "{} never held {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A named Docker volume, removed on drop.
struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "-f", &self.0]);
    }
}

#[test]
fn writes_to_binds_and_named_volumes_are_on_the_host_while_the_container_runs() {
    let bind = host_dir();
    let name = Name::new();
    let volume = Volume(format!("{}-vol", name.0));
    assert_eq!(docker(&["volume", "create", &volume.0]).code(), 0);
    let mount = format!("type=bind,src={},dst=/bound", bind.path().display());
    let named = format!("{}:/named", volume.0);
    start_detached(
        &name,
        &["--mount", &mount, "-v", &named],
        &[
            "sh",
            "-c",
            "echo from-guest > /bound/file; echo in-volume > /named/file; exec sleep 100000",
        ],
    );
    wait_for_file(&bind.path().join("file"), "from-guest\n");
    let mountpoint = docker(&["volume", "inspect", "-f", "{{.Mountpoint}}", &volume.0]);
    wait_for_file(
        &Path::new(mountpoint.stdout_text().trim()).join("file"),
        "in-volume\n",
    );

    // And the other way: the host's change is in the guest.
    std::fs::write(bind.path().join("from-host"), "host\n").unwrap();
    let seen = docker(&["exec", &name.0, "cat", "/bound/from-host"]);
    assert_eq!(seen.stdout_text(), "host\n", "{seen:?}");

    let other = run(
        Runtime::Runq,
        &["--volumes-from", &name.0],
        &["cat", "/bound/file", "/named/file"],
    );
    assert_eq!(other.stdout_text(), "from-guest\nin-volume\n", "{other:?}");
}

#[test]
fn read_only_binds_stay_read_only_as_under_runc() {
    let bind = host_dir();
    std::fs::write(bind.path().join("file"), "ro\n").unwrap();
    let volume = format!("{}:/ro:ro", bind.path().display());
    let text = same_as_runc(
        &["-v", &volume],
        &[
            "sh",
            "-c",
            "cat /ro/file; (echo x > /ro/file) 2>&1; echo status=$?; touch /ro/new 2>&1; \
             echo status=$?",
        ],
    );
    assert!(text.contains("Read-only file system"), "{text}");
    assert_eq!(
        std::fs::read_to_string(bind.path().join("file")).unwrap(),
        "ro\n"
    );
}

#[test]
fn a_shared_writable_mmap_works_on_the_root_and_on_a_volume() {
    let bind = host_dir();
    let helper = env!("CARGO_BIN_EXE_runq-test-mmap");
    let tool = format!("{helper}:/runq-test-mmap:ro");
    let volume = format!("{}:/vol", bind.path().display());
    let outcome = run(
        Runtime::Runq,
        &["-v", &tool, "-v", &volume],
        &[
            "sh",
            "-c",
            "/runq-test-mmap /root/mapped && /runq-test-mmap /vol/mapped",
        ],
    );
    assert_eq!(outcome.stdout_text(), "mmap-ok\nmmap-ok\n", "{outcome:?}");
    let on_host = std::fs::read(bind.path().join("mapped")).unwrap();
    assert!(on_host.starts_with(b"written-through-mmap\n"));
}

#[test]
fn each_9p_cache_mode_shows_in_the_mount_table_and_virtiofs_is_the_default() {
    let root = || ["sh", "-c", "grep ' / ' /proc/mounts | cut -d' ' -f3,4"];
    let default = run(Runtime::Runq, &[], &root());
    assert!(
        default.stdout_text().starts_with("virtiofs "),
        "{default:?}"
    );
    // 9p is the operator's choice (runq's --fs, here in a runtime's runtimeArgs); its cache
    // mode is the container's.
    let nine_p = ExtraRuntime::register("runq-test-9p", &["--fs", "9p"]);
    // cache=none is 9p's default and shows as no cache option: reads and writes go through.
    for (mode, shown) in [
        ("none", ",sync,"),
        ("loose", ",loose,"),
        ("fscache", ",fscache,"),
        ("mmap", ",mmap,"),
    ] {
        let variable = format!("RUNQ_9PCACHE={mode}");
        let mut args = vec!["run", "--rm", "--runtime", nine_p.0, "-e", &variable, IMAGE];
        args.extend(root());
        let outcome = docker(&args);
        let text = outcome.stdout_text();
        assert!(
            text.starts_with("9p ") && text.contains(shown),
            "{mode}: {outcome:?}"
        );
    }
}

/// The mount table's lines for the paths below `pattern`: mount point and per-mount flags.
const BIND_LINES: &str = "awk '$5 ~ PATTERN {print $5, $6}' /proc/self/mountinfo | sort";

#[test]
fn binds_are_in_the_guests_mount_table_as_under_runc() {
    let ro = host_dir();
    let rw = host_dir();
    let ro_volume = format!("{}:/ro:ro", ro.path().display());
    let rw_volume = format!("{}:/rw", rw.path().display());
    let script = BIND_LINES.replace("PATTERN", "/^\\/(ro|rw|etc\\/)/");
    let text = same_as_runc(
        &["-v", &ro_volume, "-v", &rw_volume],
        &["sh", "-c", &format!("ls /ro /rw > /dev/null; {script}")],
    );
    for line in ["/etc/hosts rw,", "/etc/hostname rw,", "/ro ro,", "/rw rw,"] {
        assert!(text.contains(line), "{line}: {text}");
    }
}

#[test]
fn a_binds_nosuid_nodev_and_noexec_are_the_guests_as_under_runc() {
    let source = host_dir();
    std::fs::write(source.path().join("file"), "x\n").unwrap();
    let script = BIND_LINES.replace("PATTERN", "/^\\/(data|single)/");
    let bundle = common::TestBundle::busybox(&[
        "sh",
        "-c",
        &format!("{script}; /data/file 2>&1 | sed 's/.*: //'"),
    ]);
    std::fs::set_permissions(
        source.path().join("file"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let source_dir = source.path().to_str().unwrap().to_string();
    let file = format!("{source_dir}/file");
    bundle.edit(|spec| {
        let mounts = spec["mounts"].as_array_mut().unwrap();
        mounts.push(serde_json::json!({
            "destination": "/data", "type": "bind", "source": source_dir,
            "options": ["rbind", "nosuid", "nodev", "noexec", "rprivate"]
        }));
        mounts.push(serde_json::json!({
            "destination": "/single", "type": "bind", "source": file,
            "options": ["bind", "ro"]
        }));
    });
    let text = bundle.same_as_runc().stdout_text();
    assert!(text.contains("/data rw,nosuid,nodev,noexec"), "{text}");
    assert!(text.contains("/single ro"), "{text}");
    assert!(text.contains("Permission denied"), "noexec: {text}");
}

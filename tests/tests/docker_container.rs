//! Container settings and engine commands through Docker, compared with runc where both apply.

mod common;

use common::docker::{
    docker, docker_with_input, run, same_as_runc, start_detached, wait_for_log, Name, Runtime,
    IMAGE,
};

#[test]
fn tmpfs_mounts_get_runcs_flags() {
    let command = [
        "sh",
        "-c",
        "grep -E ' /(run|cache|dev/shm|dev/mqueue|dev|sys|proc) ' /proc/mounts \
         | cut -d' ' -f2-4 | sed 's/,inode64//' | sort; stat -c %a /run",
    ];
    let options = [
        "--tmpfs",
        "/run:rw,noexec,nosuid,size=65536k,mode=1770",
        "--tmpfs",
        "/cache:ro,noatime",
    ];
    let text = same_as_runc(&options, &command);
    assert!(text.contains("/run tmpfs rw,nosuid,nodev,noexec"), "{text}");
    assert!(text.contains("/cache tmpfs ro,"), "{text}");
}

#[test]
fn read_only_root_with_a_writable_volume() {
    same_as_runc(
        &["--read-only", "-v", "/vol"],
        &[
            "sh",
            "-c",
            "touch /x 2>&1; echo root=$?; touch /vol/x; echo vol=$?",
        ],
    );
}

#[test]
fn groups_entrypoint_and_init_match_runc() {
    same_as_runc(
        &["--group-add", "10", "--group-add", "20", "-u", "65534"],
        &["id"],
    );
    same_as_runc(&["--entrypoint", "echo"], &["from", "entrypoint"]);
    let text = same_as_runc(
        &["--init"],
        &["sh", "-c", "tr '\\0' ' ' < /proc/1/cmdline; echo; exit 5"],
    );
    assert!(text.starts_with("/sbin/docker-init -- sh"), "{text}");
}

#[test]
fn a_private_workdir_of_the_user_is_entered() {
    let image = "runq-test-private-workdir";
    let dockerfile =
        format!("FROM {IMAGE}\nRUN mkdir -m 0700 /home/u && chown 65534:65534 /home/u\n");
    let build = docker_with_input(&["build", "-q", "-t", image, "-"], dockerfile.as_bytes());
    assert_eq!(build.code(), 0, "{build:?}");
    let outcome = docker(&[
        "run",
        "--rm",
        "--runtime",
        "runq",
        "-u",
        "65534",
        "-w",
        "/home/u",
        image,
        "pwd",
    ]);
    let _ = docker(&["rmi", image]);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "/home/u\n");
}

#[test]
fn interactive_stdin_reaches_the_application() {
    let name = Name::new();
    let outcome = docker_with_input(
        &[
            "run",
            "-i",
            "--rm",
            "--runtime",
            "runq",
            "--name",
            &name.0,
            IMAGE,
            "sh",
            "-c",
            "wc -c",
        ],
        b"twelve bytes",
    );
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text().trim(), "12");
}

#[test]
fn pause_kill_wait_restart_cp_and_inspect() {
    let name = Name::new();
    start_detached(
        &name,
        &[],
        &[
            "sh",
            "-c",
            "trap 'echo got-usr1' USR1; echo written-in-the-guest > /tmp/guest-file; \
             echo ready; while true; do sleep 1; done",
        ],
    );
    wait_for_log(&name.0, "ready", 1);

    assert_eq!(docker(&["pause", &name.0]).code(), 0);
    assert_eq!(state(&name.0), "paused");
    assert_eq!(docker(&["unpause", &name.0]).code(), 0);
    assert_eq!(state(&name.0), "running");

    assert_eq!(docker(&["kill", "-s", "USR1", &name.0]).code(), 0);
    wait_for_log(&name.0, "got-usr1", 1);

    // docker cp both ways: the guest sees the host's copy through the shared root.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "copied in\n").unwrap();
    let target = format!("{}:/tmp/copied", name.0);
    assert_eq!(
        docker(&["cp", file.path().to_str().unwrap(), &target]).code(),
        0
    );
    let copied_out = docker(&["cp", &target, "-"]);
    assert_eq!(copied_out.code(), 0, "{copied_out:?}");
    assert!(copied_out.stdout.windows(9).any(|w| w == b"copied in"));
    let guest_file = docker(&["cp", &format!("{}:/tmp/guest-file", name.0), "-"]);
    assert!(
        guest_file
            .stdout
            .windows(20)
            .any(|w| w == b"written-in-the-guest"),
        "{guest_file:?}"
    );

    assert_eq!(docker(&["restart", "-t", "1", &name.0]).code(), 0);
    assert_eq!(state(&name.0), "running");
    wait_for_log(&name.0, "ready", 2);

    // top and stats show the host side of the container: the proxy, QEMU and virtiofsd.
    let top = docker(&["top", &name.0]);
    assert_eq!(top.code(), 0, "{top:?}");
    assert!(top.stdout_text().contains("qemu-system-x86_64"), "{top:?}");
    let stats = docker(&["stats", "--no-stream", &name.0]);
    assert_eq!(stats.code(), 0, "{stats:?}");

    assert_eq!(docker(&["kill", &name.0]).code(), 0);
    let waited = docker(&["wait", &name.0]);
    assert_eq!(waited.stdout_text().trim(), "137", "{waited:?}");
}

fn state(name: &str) -> String {
    docker(&["inspect", "-f", "{{.State.Status}}", name])
        .stdout_text()
        .trim()
        .to_string()
}

#[test]
fn runc_is_still_the_default_runtime() {
    let outcome = run(Runtime::Runc, &[], &["uname", "-r"]);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_ne!(outcome.stdout_text().trim(), common::guest_release());
}

#[test]
fn privileged_gets_every_capability_and_no_seccomp_in_the_guest() {
    // runc cannot run --privileged on hosts whose bounding set lacks a capability (this one
    // lacks CAP_SYS_RESOURCE); in the guest every capability Docker asks for exists.
    let outcome = run(
        Runtime::Runq,
        &["--privileged"],
        &[
            "sh",
            "-c",
            "grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status; \
             grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1",
        ],
    );
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    let text = outcome.stdout_text();
    let value = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(value("CapEff:"), value("CapBnd:"), "{text}");
    assert!(value("CapBnd:").ends_with("ffffffff"), "{text}");
    assert_eq!(value("Seccomp:"), "0", "{text}");
    assert!(
        text.ends_with("rw\n"),
        "/sys is writable when privileged: {text}"
    );
}

#[test]
fn attaching_to_stdout_only_leaves_stderr_out() {
    let outcome = docker(&[
        "run",
        "--rm",
        "--runtime",
        "runq",
        "-a",
        "stdout",
        IMAGE,
        "sh",
        "-c",
        "echo to-out; echo to-err >&2",
    ]);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "to-out\n");
    assert_eq!(outcome.stderr_text(), "");
}

#[test]
fn a_tty_container_gets_a_terminal() {
    // Docker resizes the container's terminal only after start, so the size is left to the
    // bundle-level test (tests/terminal.rs).
    let inner = format!(
        "{} run --rm -t --runtime runq {IMAGE} tty",
        common::docker::DOCKER
    );
    let outcome = common::under_script(&inner);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    let text = outcome.stdout_text();
    assert!(text.contains("/dev/pts/"), "{text:?}");
}

#[test]
fn a_custom_seccomp_profile_matches_runc() {
    let profile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        profile.path(),
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let option = format!("seccomp={}", profile.path().display());
    let text = same_as_runc(
        &["--security-opt", &option],
        &["sh", "-c", "mkdir /tmp/x 2>&1; echo status=$?"],
    );
    assert!(text.contains("Operation not permitted"), "{text}");
}

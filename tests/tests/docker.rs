//! `docker run --runtime runq` against `docker run` with runc on the same daemon.

mod common;

use common::docker::{
    docker, run, same_as_runc, start_detached, wait_for_log, Name, Runtime, DOCKER, IMAGE,
};

#[test]
fn docker_runs_the_image_in_a_vm_with_the_guest_kernel() {
    let outcome = run(Runtime::Runq, &[], &["uname", "-r"]);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text().trim(), common::guest_release());
}

#[test]
fn exit_codes_match_runc() {
    for command in [
        &["true"][..],
        &["false"],
        &["sh", "-c", "exit 42"],
        &["/etc/passwd"],
        &["/tmp"],
        &["no-such-command"],
    ] {
        let reference = run(Runtime::Runc, &[], command);
        let outcome = run(Runtime::Runq, &[], command);
        assert_eq!(
            outcome.code(),
            reference.code(),
            "{command:?}: runq {outcome:?} runc {reference:?}"
        );
    }
}

#[test]
fn env_user_workdir_and_hostname_match_runc() {
    let text = same_as_runc(
        &[
            "-e",
            "FOO=bar",
            "-u",
            "65534:65534",
            "-w",
            "/tmp",
            "--hostname",
            "vmhost",
        ],
        &[
            "sh",
            "-c",
            "echo $FOO; id; pwd; hostname; cat /etc/hostname",
        ],
    );
    assert!(text.starts_with("bar\nuid=65534"), "{text}");
}

#[test]
fn home_comes_from_the_users_passwd_entry_as_under_runc() {
    for user in ["root", "nobody", "4242"] {
        let text = same_as_runc(&["-u", user], &["sh", "-c", "echo $HOME"]);
        assert!(text.starts_with('/'), "{user}: {text}");
    }
}

#[test]
fn capabilities_and_seccomp_match_runc_bit_for_bit() {
    let status = [
        "sh",
        "-c",
        "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status",
    ];
    for options in [
        &[][..],
        &["--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN"],
        &["--cap-drop", "ALL"],
        &["--security-opt", "no-new-privileges"],
        &["--security-opt", "seccomp=unconfined"],
    ] {
        let text = same_as_runc(options, &status);
        assert!(text.contains("CapBnd:"), "{options:?}: {text}");
    }
}

#[test]
fn the_default_seccomp_profile_denies_unshare_in_the_guest() {
    let text = same_as_runc(&[], &["sh", "-c", "unshare -U true; echo status=$?"]);
    assert!(text.contains("status=1"), "{text}");
    let text = same_as_runc(
        &[
            "--security-opt",
            "seccomp=unconfined",
            "--cap-add",
            "SYS_ADMIN",
        ],
        &["sh", "-c", "unshare -U true; echo status=$?"],
    );
    assert!(text.contains("status=0"), "{text}");
}

#[test]
fn logs_keep_stdout_and_stderr_apart() {
    let name = Name::new();
    let outcome = docker(&[
        "run",
        "--runtime",
        "runq",
        "--name",
        &name.0,
        IMAGE,
        "sh",
        "-c",
        "echo to-out; echo to-err >&2",
    ]);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    let logs = docker(&["logs", &name.0]);
    assert_eq!(logs.stdout_text(), "to-out\n");
    assert_eq!(logs.stderr_text(), "to-err\n");
}

#[test]
fn docker_stop_sends_sigterm_then_sigkill() {
    // A trapping shell ends on SIGTERM with its own code.
    let trapping = Name::new();
    start_detached(
        &trapping,
        &[],
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; echo ready; while true; do sleep 1; done",
        ],
    );
    wait_for_log(&trapping.0, "ready", 1);
    assert_eq!(docker(&["stop", "-t", "30", &trapping.0]).code(), 0);
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &trapping.0]);
    assert_eq!(code.stdout_text().trim(), "7");

    // PID 1 without a handler ignores SIGTERM, as under runc: SIGKILL after the timeout.
    let ignoring = Name::new();
    start_detached(&ignoring, &[], &["sleep", "1000"]);
    assert_eq!(docker(&["stop", "-t", "1", &ignoring.0]).code(), 0);
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &ignoring.0]);
    assert_eq!(code.stdout_text().trim(), "137");
}

#[test]
fn runc_and_runq_containers_share_the_daemon() {
    let runc = run(Runtime::Runc, &[], &["uname", "-r"]);
    let runq = run(Runtime::Runq, &[], &["uname", "-r"]);
    assert_eq!(runc.code(), 0, "{runc:?}");
    assert_eq!(runq.code(), 0, "{runq:?}");
    assert_ne!(runc.stdout_text(), runq.stdout_text());
    let runtimes = docker(&["info", "--format", "{{json .Runtimes}}"]);
    assert!(runtimes.stdout_text().contains("\"runq\""), "{runtimes:?}");
    assert!(std::path::Path::new(DOCKER).exists());
}

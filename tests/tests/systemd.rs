//! `RUNQ_SYSTEMD=1`: a real systemd (a Debian image built with debootstrap) boots as the
//! application; `docker stop` becomes SIGRTMIN+4, systemd powers off, the exit code is 0,
//! and `--restart on-failure` does not bring it back.

mod common;

use std::time::{Duration, Instant};

use common::docker::{build_image, docker, run, Name, Runtime};

const IMAGE: &str = "runq-systemd:latest";

fn inspect(name: &Name, field: &str) -> String {
    docker(&["inspect", "-f", field, &name.0])
        .stdout_text()
        .trim()
        .to_string()
}

#[test]
fn docker_stop_powers_systemd_off_with_exit_0_and_no_restart() {
    build_image(
        "scripts/debian-image.sh",
        &[
            IMAGE,
            "systemd,systemd-sysv",
            "--change",
            "CMD [\"/sbin/init\"]",
        ],
    );
    let name = Name::new();
    let started = docker(&[
        "run",
        "-d",
        "--runtime",
        "runq",
        "--name",
        &name.0,
        "--restart",
        "on-failure:1",
        "--cap-add",
        "SYS_ADMIN",
        "-e",
        "RUNQ_SYSTEMD=1",
        "-e",
        "RUNQ_MEM=512",
        IMAGE,
    ]);
    assert_eq!(started.code(), 0, "{started:?}");
    // Booted far enough to have a manager answering: some units fail in a container, so
    // "degraded" counts as up.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let state = docker(&["exec", &name.0, "systemctl", "is-system-running"]).stdout_text();
        if matches!(state.trim(), "running" | "degraded") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "systemd never came up: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let stopped = docker(&["stop", "-t", "120", &name.0]);
    assert_eq!(stopped.code(), 0, "{stopped:?}");
    assert_eq!(inspect(&name, "{{.State.ExitCode}}"), "0");
    assert_eq!(inspect(&name, "{{.State.Running}}"), "false");
    // A plain SIGTERM only makes systemd re-execute itself; the stop would then end in
    // SIGKILL, exit 137 and a restart.
    assert_eq!(inspect(&name, "{{.RestartCount}}"), "0");
}

#[test]
fn in_systemd_mode_any_other_end_is_exit_1() {
    let outcome = run(
        Runtime::Runq,
        &["-e", "RUNQ_SYSTEMD=1"],
        &["sh", "-c", "exit 3"],
    );
    assert_eq!(outcome.code(), 1, "{outcome:?}");
    let clean = run(Runtime::Runq, &["-e", "RUNQ_SYSTEMD=1"], &["true"]);
    assert_eq!(clean.code(), 0, "{clean:?}");
}

//! `docker exec`, HEALTHCHECK and runq-exec on runq containers: exit codes, stdio, identity,
//! terminals, signals and many sessions at once, compared with runc where both apply.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::{docker, docker_with_input, start_detached, Name, DOCKER, IMAGE};
use common::{finish, runq_root, under_script, wait_until, Outcome, TestBundle, RUN_DEADLINE};

/// A container that idles until removed, under runc or runq; waits until exec works in it.
fn idle_container(runtime_options: &[&str]) -> Name {
    let name = Name::new();
    let mut args = vec!["run", "-d", "--name", &name.0];
    args.extend(runtime_options);
    args.extend([IMAGE, "sleep", "100000"]);
    let started = docker(&args);
    assert_eq!(started.code(), 0, "{started:?}");
    wait_until("exec works", || {
        docker(&["exec", &name.0, "true"]).code() == 0
    });
    name
}

fn runq_container() -> Name {
    let mut options = vec!["--runtime", "runq"];
    options.extend(common::docker::runq_test_options());
    idle_container(&options)
}

fn exec(name: &Name, options: &[&str], command: &[&str]) -> Outcome {
    let mut args = vec!["exec"];
    args.extend(options);
    args.push(&name.0);
    args.extend(command);
    docker(&args)
}

#[test]
fn an_exec_asked_for_while_the_guest_boots_runs_once_it_is_up() {
    let name = Name::new();
    let started = docker(&[
        "run",
        "-d",
        "--name",
        &name.0,
        "--runtime",
        "runq",
        IMAGE,
        "sleep",
        "100000",
    ]);
    assert_eq!(started.code(), 0, "{started:?}");
    // Right away, as scripts do after `docker run -d`: runc runs it, so runq must too, with
    // the input the client sent before the session could start.
    let outcome = docker_with_input(
        &["exec", "-i", &name.0, "sh", "-c", "cat; echo done"],
        b"early input\n",
    );
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "early input\ndone\n", "{outcome:?}");
}

#[test]
fn exit_codes_with_and_without_a_terminal() {
    let name = runq_container();
    let cases: [(&[&str], i32); 5] = [
        (&["true"], 0),
        (&["false"], 1),
        (&["sh", "-c", "exit 7"], 7),
        (&["/etc/passwd"], 126),
        (&["no-such-command"], 127),
    ];
    for (command, expected) in cases {
        for options in [&[][..], &["-t"][..]] {
            let outcome = exec(&name, options, command);
            assert_eq!(
                outcome.code(),
                expected,
                "{command:?} {options:?}: {outcome:?}"
            );
        }
    }
    let killed = exec(&name, &[], &["sh", "-c", "kill -9 $$"]);
    assert_eq!(killed.code(), 137, "{killed:?}");
}

#[test]
fn a_binary_read_through_exec_is_byte_identical() {
    use sha2::Digest;
    let name = runq_container();
    let outcome = exec(&name, &[], &["cat", "/bin/busybox"]);
    assert_eq!(outcome.code(), 0);
    let host = std::fs::read("/bin/busybox").unwrap();
    assert!(host.len() > 1 << 20, "a multi-megabyte binary");
    assert_eq!(
        sha2::Sha256::digest(&outcome.stdout),
        sha2::Sha256::digest(&host)
    );
}

#[test]
fn stdin_reaches_the_session_and_stdout_and_stderr_stay_apart() {
    let name = runq_container();
    let input = vec![b'x'; 3 << 20];
    let outcome = docker_with_input(
        &["exec", "-i", &name.0, "sh", "-c", "wc -c; echo to-err >&2"],
        &input,
    );
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text().trim(), (3 << 20).to_string());
    assert_eq!(outcome.stderr_text(), "to-err\n");
}

#[test]
fn env_user_directory_and_capabilities_are_those_of_runc_exec() {
    let vm = runq_container();
    let plain = idle_container(&[]);
    let probes: [(&[&str], &[&str]); 3] = [
        (
            &[],
            &[
                "sh",
                "-c",
                "id; grep -E '^(Cap|NoNewPrivs)' /proc/self/status",
            ],
        ),
        (
            &["-u", "nobody"],
            &["sh", "-c", "id; grep ^Cap /proc/self/status"],
        ),
        (
            &["-w", "/tmp", "-e", "FOO=42"],
            &[
                "sh",
                "-c",
                "pwd; echo $FOO; env | grep -v ^HOSTNAME= | sort",
            ],
        ),
    ];
    for (options, command) in probes {
        let reference = exec(&plain, options, command);
        let outcome = exec(&vm, options, command);
        assert_eq!(outcome.code(), reference.code(), "{options:?}: {outcome:?}");
        assert_eq!(
            outcome.stdout_text(),
            reference.stdout_text(),
            "{options:?} {command:?}"
        );
    }
    let code = exec(&vm, &["-e", "FOO=42"], &["sh", "-c", "exit $FOO"]);
    assert_eq!(code.code(), 42);

    // runc cannot give every capability on this host (its bounding set lacks some); the
    // guest can, so this one is checked on its own: effective equals bounding, all set.
    let privileged = exec(
        &vm,
        &["--privileged"],
        &["grep", "^Cap", "/proc/self/status"],
    );
    let text = privileged.stdout_text();
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(privileged.code(), 0, "{privileged:?}");
    assert_eq!(value("CapEff:"), value("CapBnd:"), "{text}");
    assert!(value("CapEff:").ends_with("ffffffff"), "{text}");
}

#[test]
fn a_terminal_session_gets_the_clients_window_size() {
    let reference = idle_container(&[]);
    let vm = runq_container();
    // The size reaches the session after it started: the shell waits for it to arrive.
    let size_of = |name: &Name| {
        let inner = format!(
            "stty rows 31 cols 101; {DOCKER} exec -t {} sh -c 'for i in $(seq 100); do \
             s=$(stty size); [ \"$s\" = \"31 101\" ] && break; sleep 0.1; done; echo $s'",
            name.0
        );
        under_script(&inner)
    };
    let expected = size_of(&reference);
    assert!(expected.stdout_text().contains("31 101"), "{expected:?}");
    let outcome = size_of(&vm);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert!(outcome.stdout_text().contains("31 101"), "{outcome:?}");
}

#[test]
fn twenty_concurrent_sessions_run_and_end_cleanly() {
    let name = runq_container();
    let sessions: Vec<_> = (0..20)
        .map(|_| {
            Command::new(DOCKER)
                .args(["exec", &name.0, "sleep", "20"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let count = || {
        exec(&name, &[], &["sh", "-c", "ps | grep -c '[s]leep 20'"])
            .stdout_text()
            .trim()
            .to_string()
    };
    wait_until("20 sessions running inside", || count() == "20");
    for session in sessions {
        let outcome = finish(session, Vec::new(), RUN_DEADLINE);
        assert_eq!(outcome.code(), 0, "{outcome:?}");
    }
    assert_eq!(count(), "0");
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &name.0]);
    assert_eq!(running.stdout_text().trim(), "true");

    // Nothing of the sessions is left: not in the proxy's own root, not in runq's private
    // directory for the container (below Docker's runtime state root).
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &name.0]).stdout_text();
    let id = docker(&["inspect", "-f", "{{.Id}}", &name.0]).stdout_text();
    let private = std::fs::read_dir("/run/docker")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("moby/.runq").join(id.trim()))
        .find(|dir| dir.exists())
        .expect("runq's private directory for the container");
    for dir in [PathBuf::from(format!("/proc/{}/root", pid.trim())), private] {
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("exec-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?} in {}", dir.display());
    }
}

#[test]
fn health_commands_turn_containers_healthy_and_unhealthy() {
    let healthy = Name::new();
    let unhealthy = Name::new();
    for (name, command) in [(&healthy, "test -e /etc/passwd"), (&unhealthy, "exit 1")] {
        start_detached(
            name,
            &[
                "--health-cmd",
                command,
                "--health-interval",
                "1s",
                "--health-retries",
                "1",
                // Docker's 30 s default is short for an exec while the other tests boot
                // their VMs on two emulated cores; a check that times out counts as failed.
                "--health-timeout",
                "100s",
            ],
            &["sleep", "100000"],
        );
    }
    let health = |name: &Name| {
        docker(&["inspect", "-f", "{{.State.Health.Status}}", &name.0])
            .stdout_text()
            .trim()
            .to_string()
    };
    let deadline = Instant::now() + 2 * RUN_DEADLINE;
    for (name, wanted) in [(&healthy, "healthy"), (&unhealthy, "unhealthy")] {
        while health(name) != wanted {
            assert!(
                Instant::now() < deadline,
                "never {wanted}: {}",
                docker(&["inspect", "-f", "{{json .State.Health}}", &name.0]).stdout_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn noexec_refuses_with_a_clear_message() {
    let name = Name::new();
    start_detached(&name, &["-e", "RUNQ_NOEXEC=1"], &["sleep", "100000"]);
    wait_until("running", || {
        docker(&["inspect", "-f", "{{.State.Running}}", &name.0]).stdout_text() == "true\n"
    });
    let outcome = exec(&name, &[], &["true"]);
    assert_ne!(outcome.code(), 0);
    // Docker 20.10 prints the runtime's refusal on stdout.
    let text = outcome.stdout_text() + &outcome.stderr_text();
    assert!(text.contains("exec is disabled"), "{outcome:?}");
    assert!(text.contains("RUNQ_NOEXEC"), "{outcome:?}");
}

fn runq_exec() -> Command {
    Command::new(runq_root().join("runq-exec"))
}

#[test]
fn runq_exec_reaches_a_docker_container_by_name() {
    let name = runq_container();
    let child = runq_exec()
        .args([&name.0, "sh", "-c", "echo $((6 * 7)); exit 5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let outcome = finish(child, Vec::new(), RUN_DEADLINE);
    assert_eq!(outcome.code(), 5, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "42\n");

    let unknown = runq_exec()
        .args(["no-such-container-anywhere", "true"])
        .output()
        .unwrap();
    assert_ne!(unknown.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no-such-container-anywhere"));
}

#[test]
fn runq_exec_reaches_a_plain_runq_container_with_user_names_and_signals() {
    let bundle = TestBundle::busybox(&["sleep", "100000"]);
    bundle.run_detached();
    let session = |options: &[&str], command: &[&str]| {
        runq_exec()
            .arg("--root")
            .arg(&bundle.state)
            .args(options)
            .arg(&bundle.id)
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    wait_until("exec works", || {
        finish(session(&[], &["true"]), Vec::new(), RUN_DEADLINE).code() == 0
    });
    let outcome = finish(
        session(&["-u", "nobody"], &["id", "-u"]),
        Vec::new(),
        RUN_DEADLINE,
    );
    assert_eq!(outcome.stdout_text(), "65534\n", "{outcome:?}");

    let script = "trap 'echo got-term; exit 3' TERM; echo ready; while true; do sleep 0.1; done";
    let mut trapping = session(&[], &["sh", "-c", script]);
    let mut stdout = trapping.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("ready") {
        use std::io::Read;
        assert_eq!(
            stdout.read(&mut byte).unwrap(),
            1,
            "the session ended early"
        );
        seen.push(byte[0]);
    }
    nix_kill(trapping.id(), libc::SIGTERM);
    let mut rest = String::new();
    use std::io::Read;
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.trim(), "got-term");
    assert_eq!(trapping.wait().unwrap().code(), Some(3));
}

fn nix_kill(pid: u32, signal: i32) {
    // SAFETY: kill takes plain integers; the pid is our own child's.
    unsafe { libc::kill(pid as i32, signal) };
}

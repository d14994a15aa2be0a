//! runq's options through Docker: `RUNQ_*` variables, Docker's own sizing flags, and the
//! container settings that travel into the guest (env files, sysctls, ulimits).

mod common;

use std::io::Write;

use common::docker::{docker, run, same_as_runc, ExtraRuntime, Name, Runtime, IMAGE};

const SIZE: &[&str] = &["sh", "-c", "nproc; grep MemTotal /proc/meminfo"];

/// (vCPUs, MiB of MemTotal) as the guest sees them.
fn guest_size(options: &[&str]) -> (u32, u32) {
    let outcome = run(Runtime::Runq, options, SIZE);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    let text = outcome.stdout_text();
    let mut words = text.split_whitespace();
    let cpus = words.next().unwrap().parse().unwrap();
    let kib: u32 = words.nth(1).unwrap().parse().unwrap();
    (cpus, kib / 1024)
}

/// The kernel keeps some memory for itself: MemTotal is a little below what QEMU was given.
fn assert_memory_about(mib: u32, expected: u32) {
    assert!(
        mib <= expected && mib >= expected * 8 / 10,
        "MemTotal {mib} MiB for {expected} MiB of guest memory"
    );
}

#[test]
fn runq_variables_size_the_vm() {
    let (cpus, mib) = guest_size(&["-e", "RUNQ_CPU=2", "-e", "RUNQ_MEM=400"]);
    assert_eq!(cpus, 2);
    assert_memory_about(mib, 400);
}

#[test]
fn dockers_cpus_and_memory_size_the_vm_without_runq_variables() {
    let (cpus, mib) = guest_size(&["--cpus", "2", "-m", "300m"]);
    assert_eq!(cpus, 2);
    assert_memory_about(mib, 300);
    let (cpus, _) = guest_size(&["--cpuset-cpus", "0-1"]);
    assert_eq!(cpus, 2, "one vCPU per CPU of the cpuset");
    let (cpus, mib) = guest_size(&[]);
    assert_eq!(cpus, 1);
    assert_memory_about(mib, 256);
}

#[test]
fn invalid_runq_values_are_refused_by_name() {
    let outcome = run(Runtime::Runq, &["-e", "RUNQ_MEM=lots"], &["true"]);
    assert_eq!(outcome.code(), 125, "{outcome:?}");
    let stderr = outcome.stderr_text();
    assert!(
        stderr.contains("RUNQ_MEM") && stderr.contains("MiB"),
        "{stderr}"
    );

    let outcome = run(Runtime::Runq, &["-e", "RUNQ_APUUID=abc"], &["true"]);
    assert_eq!(outcome.code(), 125, "{outcome:?}");
    assert!(outcome.stderr_text().contains("s390x"), "{outcome:?}");
}

#[test]
fn runqenv_restores_the_environment_for_the_user_only() {
    let outcome = run(
        Runtime::Runq,
        &[
            "-e",
            "RUNQ_RUNQENV=1",
            "-e",
            "QUOTED=it's \"here\"",
            "-u",
            "65534:65534",
        ],
        &[
            "sh",
            "-c",
            "stat -c '%a %u %g' /.runqenv; env -i sh -c '. /.runqenv; echo \"$QUOTED\"'",
        ],
    );
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "400 65534 65534\nit's \"here\"\n");
}

#[test]
fn the_operators_cpu_model_reaches_qemus_command_line() {
    let runtime = ExtraRuntime::register("runq-test-cpuargs", &["--cpuargs", "qemu64"]);
    let name = Name::new();
    let started = docker(&[
        "run",
        "-d",
        "--name",
        &name.0,
        "--runtime",
        runtime.0,
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert_eq!(started.code(), 0, "{started:?}");
    let top = docker(&["top", &name.0, "-eo", "pid"]);
    let found = top.stdout_text().lines().skip(1).any(|pid| {
        std::fs::read(format!("/proc/{}/cmdline", pid.trim()))
            .map(|c| String::from_utf8_lossy(&c).contains("-cpu\0qemu64\0"))
            .unwrap_or(false)
    });
    assert!(found, "no QEMU with -cpu qemu64 among {top:?}");
}

#[test]
fn a_thousand_variables_of_a_kibibyte_arrive_intact() {
    let mut env_file = tempfile::NamedTempFile::new().unwrap();
    for i in 0..1000 {
        let value: String = (0..1024)
            .map(|j| (b'a' + ((i + j) % 26) as u8) as char)
            .collect();
        writeln!(env_file, "BIG_{i}={value}").unwrap();
    }
    let file = env_file.path().to_str().unwrap().to_string();
    let text = same_as_runc(
        &["--env-file", &file],
        &[
            "sh",
            "-c",
            "env | grep '^BIG_' | sort | md5sum; env | grep -c '^BIG_'",
        ],
    );
    assert!(text.ends_with("\n1000\n"), "{text}");
}

#[test]
fn sysctls_and_ulimits_match_runc() {
    same_as_runc(
        &[
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "nproc=100:200",
            "--ulimit",
            "core=0:1000",
            "--ulimit",
            "cpu=100:200",
        ],
        &[
            "sh",
            "-c",
            "cat /proc/sys/net/ipv4/ip_forward; \
             grep -E '^Max (open files|processes|core|cpu)' /proc/self/limits",
        ],
    );
}

#[test]
fn runtime_args_from_daemon_json_size_the_vm_and_variables_still_win() {
    let runtime = ExtraRuntime::register("runq-test-args", &["--cpu", "2", "--mem", "384"]);
    let outcome = docker(&["run", "--rm", "--runtime", runtime.0, IMAGE, "nproc"]);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "2\n");
    let outcome = docker(&[
        "run",
        "--rm",
        "--runtime",
        runtime.0,
        "-e",
        "RUNQ_CPU=1",
        IMAGE,
        "nproc",
    ]);
    assert_eq!(outcome.stdout_text(), "1\n", "{outcome:?}");
}

#[test]
fn default_limits_are_the_engines_as_under_runc() {
    // No --ulimit: the application inherits what the engine runs with, in the VM as well.
    same_as_runc(&[], &["cat", "/proc/self/limits"]);
}

/// The host's pids limit on a Docker container's cgroup (cgroup v1 or v2, cgroupfs driver).
fn host_pids_max(name: &Name) -> String {
    let id = docker(&["inspect", "-f", "{{.Id}}", &name.0]).stdout_text();
    let id = id.trim();
    let candidates = [
        format!("/sys/fs/cgroup/pids/docker/{id}/pids.max"),
        format!("/sys/fs/cgroup/docker/{id}/pids.max"),
        format!("/sys/fs/cgroup/system.slice/docker-{id}.scope/pids.max"),
    ];
    candidates
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_else(|| panic!("no pids.max among {candidates:?}"))
        .trim()
        .to_string()
}

#[test]
fn the_host_side_has_a_pids_limit_unless_the_operator_set_one() {
    let default = Name::new();
    common::docker::start_detached(&default, &[], &["sleep", "60"]);
    assert_eq!(host_pids_max(&default), "512");
    let operator = Name::new();
    common::docker::start_detached(&operator, &["--pids-limit", "50"], &["sleep", "60"]);
    assert_eq!(host_pids_max(&operator), "50");
}

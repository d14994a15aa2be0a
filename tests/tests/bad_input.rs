//! Bad input is refused with an error that names the problem, and leaves nothing behind.

mod common;

use std::process::Stdio;

use common::{assets_dir, TestBundle};

/// `runq --log L --log-format json create`, expected to fail; returns stderr and the log.
fn failing_create(bundle: &TestBundle, runq_flags: &[&str]) -> (String, String) {
    let log = bundle.path().join("runq-log.json");
    let mut flags: Vec<&str> = runq_flags.to_vec();
    let log_arg = log.to_str().unwrap().to_string();
    flags.extend(["--log", &log_arg, "--log-format", "json"]);
    let output = bundle
        .runq(&flags, &["create", "--bundle"])
        .arg(bundle.path())
        .arg(&bundle.id)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "create must fail");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !bundle.path().join("runq").exists(),
        "runq files left in the bundle"
    );
    assert!(
        !bundle.state.join(".runq").join(&bundle.id).exists(),
        "runq's private directory left behind"
    );
    (
        String::from_utf8_lossy(&output.stderr).into_owned(),
        log_text,
    )
}

fn json_error(log: &str) -> String {
    let line = log.lines().last().expect("a log line");
    let entry: serde_json::Value = serde_json::from_str(line).expect("runc's JSON log format");
    assert_eq!(entry["level"], "error");
    assert!(entry["time"].as_str().is_some());
    entry["msg"].as_str().unwrap().to_string()
}

#[test]
fn malformed_config_json_is_named() {
    let bundle = TestBundle::busybox(&["true"]);
    std::fs::write(
        bundle.config_path(),
        b"{\"ociVersion\": \"1.0.2\", \"process\": ",
    )
    .unwrap();
    let (stderr, log) = failing_create(&bundle, &[]);
    let message = json_error(&log);
    assert!(message.contains("config.json"), "{message}");
    assert!(stderr.contains("config.json"), "{stderr}");
}

#[test]
fn runq_mem_lots_is_named_with_the_allowed_values() {
    let bundle = TestBundle::busybox(&["true"]);
    bundle.add_env(&["RUNQ_MEM=lots"]);
    let before = std::fs::read(bundle.config_path()).unwrap();
    let (_, log) = failing_create(&bundle, &[]);
    let message = json_error(&log);
    assert!(
        message.contains("RUNQ_MEM") && message.contains("lots"),
        "{message}"
    );
    assert!(message.contains("MiB"), "{message}");
    assert_eq!(std::fs::read(bundle.config_path()).unwrap(), before);
}

#[test]
fn a_missing_kernel_is_named() {
    let bundle = TestBundle::busybox(&["true"]);
    let (_, log) = failing_create(&bundle, &["--kernel", "/nonexistent/vmlinux"]);
    let message = json_error(&log);
    assert!(message.contains("/nonexistent/vmlinux"), "{message}");

    // An assets directory without its kernel.
    let partial = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(assets_dir()).unwrap().flatten() {
        if entry.file_name() != "kernel" {
            std::os::unix::fs::symlink(entry.path(), partial.path().join(entry.file_name()))
                .unwrap();
        }
    }
    let (_, log) = failing_create(&bundle, &["--assets", partial.path().to_str().unwrap()]);
    let message = json_error(&log);
    assert!(message.contains("kernel/vmlinux"), "{message}");
}

#[test]
fn an_unknown_runq_flag_value_is_refused() {
    let bundle = TestBundle::busybox(&["true"]);
    let (stderr, _) = failing_create(&bundle, &["--fs", "nfs"]);
    assert!(
        stderr.contains("--fs") && stderr.contains("virtiofs, 9p"),
        "{stderr}"
    );
}

#[test]
fn a_host_block_device_is_refused_with_the_way_to_hand_it_over() {
    let bundle = TestBundle::busybox(&["true"]);
    bundle.edit(|spec| {
        spec["linux"]["devices"] =
            serde_json::json!([{"path": "/dev/xvdb", "type": "b", "major": 7, "minor": 0}]);
    });
    let (_, log) = failing_create(&bundle, &[]);
    let message = json_error(&log);
    assert!(message.contains("/dev/xvdb (block 7:0)"), "{message}");
    assert!(message.contains("runq disk"), "{message}");
}

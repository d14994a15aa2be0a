//! What `make install` does to the host beyond /var/lib/runq.

mod common;

use std::process::Command;

#[test]
fn docker_registration_keeps_every_other_setting() {
    let dir = tempfile::tempdir().unwrap();
    let daemon_json = dir.path().join("daemon.json");
    std::fs::write(
        &daemon_json,
        r#"{"log-driver": "json-file", "runtimes": {"other": {"path": "/usr/bin/other"}}}"#,
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/docker-setup.sh");
    let status = Command::new(script)
        .arg("--register-only")
        .env("DAEMON_JSON", &daemon_json)
        .env("RUNQ_ROOT", common::runq_root())
        .status()
        .unwrap();
    assert!(status.success());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&daemon_json).unwrap()).unwrap();
    assert_eq!(config["log-driver"], "json-file");
    assert_eq!(config["runtimes"]["other"]["path"], "/usr/bin/other");
    assert_eq!(
        config["runtimes"]["runq"]["path"],
        common::runq_root().join("runq").to_str().unwrap()
    );
}

#[test]
fn runq_check_reports_the_installed_host_fit_and_names_whats_missing() {
    let runq = common::runq_binary();
    let output = Command::new(&runq).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{text}");
    for item in [
        "KVM",
        "TCG",
        "QEMU emulator version",
        "guest kernel",
        "runc",
        "tun",
    ] {
        assert!(text.contains(item), "{item}: {text}");
    }
    let broken = Command::new(&runq)
        .args(["--assets", "/nonexistent", "check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&broken.stdout);
    assert_eq!(broken.status.code(), Some(1), "{text}");
    assert!(
        text.contains("NEEDED") && text.contains("make install"),
        "{text}"
    );
}

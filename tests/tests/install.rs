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

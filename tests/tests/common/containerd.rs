//! containerd's `ctr`, pointed at a private containerd of a test.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::{finish, Outcome, RUN_DEADLINE};

pub const CTR: &str = "/usr/bin/ctr";
pub const CONTAINERD: &str = "/usr/bin/containerd";

/// `ctr --address SOCKET --namespace NAMESPACE ARGS...`
pub fn ctr(socket: &Path, namespace: &str, args: &[&str]) -> Outcome {
    let child = Command::new(CTR)
        .arg("--address")
        .arg(socket)
        .args(["--namespace", namespace])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctr");
    finish(child, Vec::new(), RUN_DEADLINE)
}

/// A containerd on `config` (written to DIR/config.toml), logging to DIR/containerd.log.
pub fn start_daemon(dir: &Path, config: &str) -> Child {
    let path = dir.join("config.toml");
    std::fs::write(&path, config).expect("write containerd config");
    let log = std::fs::File::create(dir.join("containerd.log")).expect("log file");
    Command::new(CONTAINERD)
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("containerd (make test installs docker.io, which brings it)")
}

//! containerd's `ctr`, pointed at a private containerd of a test.

use std::path::Path;
use std::process::{Command, Stdio};

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

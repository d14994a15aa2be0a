//! runq-exec: exec sessions in runq containers.
//!
//! - `runq-exec [-t] [-i] [-e K=V] [-u USER] [-w DIR] CONTAINER CMD...` from a host shell: a
//!   Docker container (id or name) goes through `docker exec`, a plain runq container through
//!   `runq exec`. Access is the host's: root, or whoever Docker lets in.
//! - `runq-exec --relay FD`: what `runq exec` has runc start in the proxy's own root. It
//!   reads the session's process from descriptor FD, which `runq exec` handed to runc, and
//!   carries the session over the proxy's exec socket.

mod host;
mod session;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use runq_shared::config::ExecRelayRequest;
use runq_shared::layout::own_root;

#[derive(Parser, Debug)]
#[command(version, about = "Run a command in a running runq container")]
struct Cli {
    /// Inside a container: carry the session whose process `runq exec` passed as this
    /// descriptor.
    #[arg(long, value_name = "FD", hide = true)]
    relay: Option<i32>,
    #[command(flatten)]
    command: host::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.relay {
        Some(fd) => relay(*fd),
        None => host::run(&cli.command),
    };
    match result {
        Ok(code) => ExitCode::from(runq_shared::protocol::exit_status(code)),
        Err(error) => {
            eprintln!("runq-exec: {error:#}");
            ExitCode::from(session::CANNOT_START as u8)
        }
    }
}

fn relay(fd: i32) -> Result<i32> {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    if fd < 3 {
        bail!("invalid relay descriptor {fd}");
    }
    // SAFETY: runq exec had runc pass this descriptor for the relay alone; nothing else in
    // this process uses it.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut json = Vec::new();
    file.take(runq_shared::protocol::MAX_FRAME_LEN as u64)
        .read_to_end(&mut json)
        .with_context(|| format!("read the exec request from descriptor {fd}"))?;
    let request: ExecRelayRequest = serde_json::from_slice(&json)
        .with_context(|| format!("parse the exec request from descriptor {fd}"))?;
    // Before the first byte from the guest arrives: the relay is host side too.
    if let Some(filter) = &request.seccomp {
        runq_shared::seccomp::load(filter)
            .map_err(anyhow::Error::msg)
            .context("load the host side's seccomp filter")?;
    }
    session::run(Path::new(own_root::EXEC_SOCKET), request.process)
}

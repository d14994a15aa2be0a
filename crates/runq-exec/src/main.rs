//! runq-exec: exec sessions in runq containers.
//!
//! - `runq-exec [-t] [-i] [-e K=V] [-u USER] [-w DIR] CONTAINER CMD...` from a host shell: a
//!   Docker container (id or name) goes through `docker exec`, a plain runq container through
//!   `runq exec`. Access is the host's: root, or whoever Docker lets in.
//! - `runq-exec --relay TOKEN`: what `runq exec` has runc start inside the container. It
//!   reads the session's process from the file `runq exec` left in the container's /.runq,
//!   and carries the session over the proxy's exec socket.

mod host;
mod session;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use runq_shared::config::ProcessConfig;
use runq_shared::layout::{exec_request_file, EXEC_SOCKET};

#[derive(Parser, Debug)]
#[command(version, about = "Run a command in a running runq container")]
struct Cli {
    /// Inside a container: carry the session `runq exec` prepared under this token.
    #[arg(long, value_name = "TOKEN", hide = true)]
    relay: Option<String>,
    #[command(flatten)]
    command: host::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.relay {
        Some(token) => relay(token),
        None => host::run(&cli.command),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(error) => {
            eprintln!("runq-exec: {error:#}");
            ExitCode::from(session::CANNOT_START as u8)
        }
    }
}

fn relay(token: &str) -> Result<i32> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("invalid relay token {token:?}");
    }
    let file = exec_request_file(Path::new("/"), token);
    let json = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
    // Read once: it holds the session's environment.
    let _ = std::fs::remove_file(&file);
    let process: ProcessConfig =
        serde_json::from_slice(&json).with_context(|| format!("parse {}", file.display()))?;
    session::run(Path::new(EXEC_SOCKET), process)
}

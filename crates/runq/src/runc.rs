//! Handing work to the runc binary.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuncError {
    #[error("cannot run {path}: {source} (install runc, or pass --runc PATH)")]
    Start {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("runc state {id}: {message}")]
    State { id: String, message: String },
}

pub struct ContainerState {
    pub bundle: PathBuf,
    /// The container's PID 1 on the host: runq's proxy.
    pub pid: i32,
    pub status: String,
}

pub struct Runc {
    pub path: PathBuf,
    pub globals: Vec<OsString>,
}

impl Runc {
    fn command(&self, command: &str, args: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.args(&self.globals).arg(command).args(args);
        cmd
    }

    /// Becomes runc: same pid, stdio, inherited fds and exit status, as engines expect.
    pub fn exec(&self, command: &str, args: &[OsString]) -> RuncError {
        let source = self.command(command, args).exec();
        RuncError::Start {
            path: self.path.clone(),
            source,
        }
    }

    /// Becomes runc with only the global flags (`--version`, `--help`).
    pub fn exec_globals_only(&self) -> RuncError {
        let source = Command::new(&self.path).args(&self.globals).exec();
        RuncError::Start {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs runc as a child, passing on the signals runq receives, and returns its status.
    pub fn run_forwarding_signals(
        &self,
        command: &str,
        args: &[OsString],
    ) -> Result<ExitStatus, RuncError> {
        self.run_forwarding_signals_with_fd(command, args, None)
    }

    /// The same, with descriptor `fd` handed to runc as number `number`.
    pub fn run_forwarding_signals_with_fd(
        &self,
        command: &str,
        args: &[OsString],
        fd: Option<(OwnedFd, i32)>,
    ) -> Result<ExitStatus, RuncError> {
        self.run_forwarding_signals_with_fds(command, args, fd.into_iter().collect())
    }

    /// The same, with each descriptor handed to runc as its number.
    pub fn run_forwarding_signals_with_fds(
        &self,
        command: &str,
        args: &[OsString],
        fds: Vec<(OwnedFd, i32)>,
    ) -> Result<ExitStatus, RuncError> {
        let forwarded = forwardable_signals();
        // Threads inherit the mask; std gives the child a clean one.
        let _ = forwarded.thread_block();
        let mut command = self.command(command, args);
        // Above any number they go to, so that no dup2 overwrites one not yet placed.
        let mut fds_out_of_the_way = Vec::new();
        for (fd, number) in fds {
            let high = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::F_DUPFD_CLOEXEC(100))
                .map_err(|errno| RuncError::Start {
                    path: self.path.clone(),
                    source: errno.into(),
                })?;
            // SAFETY: fcntl just returned this descriptor, owned by nothing else.
            fds_out_of_the_way.push((unsafe { OwnedFd::from_raw_fd(high) }, number));
        }
        let placements: Vec<(i32, i32)> = fds_out_of_the_way
            .iter()
            .map(|(fd, number)| (fd.as_raw_fd(), *number))
            .collect();
        // SAFETY: the closure only calls dup2, which is async-signal-safe, on descriptors the
        // parent keeps open until spawn returns; dup2 clears FD_CLOEXEC on the copy.
        unsafe {
            command.pre_exec(move || {
                for &(raw, number) in &placements {
                    if libc::dup2(raw, number) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        drop(fds_out_of_the_way);
        let mut child = spawned.map_err(|source| RuncError::Start {
            path: self.path.clone(),
            source,
        })?;
        let pid = Pid::from_raw(child.id() as i32);
        let _ = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                if let Ok(signal) = forwarded.wait() {
                    let _ = kill(pid, signal);
                }
            });
        child.wait().map_err(|source| RuncError::Start {
            path: self.path.clone(),
            source,
        })
    }

    /// `runc list`, without runc's complaint about runq's private directory in its state
    /// root, which it takes for a container. Returns runc's exit status.
    pub fn list(&self, args: &[OsString]) -> Result<i32, RuncError> {
        let start = |source| RuncError::Start {
            path: self.path.clone(),
            source,
        };
        let mut child = self
            .command("list", args)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(start)?;
        if let Some(stderr) = child.stderr.take() {
            let mut ours = std::io::stderr().lock();
            for line in std::io::BufRead::split(std::io::BufReader::new(stderr), b'\n') {
                let Ok(line) = line else { break };
                if !is_private_dir_complaint(&line) {
                    let _ = ours.write_all(&line);
                    let _ = ours.write_all(b"\n");
                }
            }
        }
        Ok(exit_code(child.wait().map_err(start)?))
    }

    /// `runc state` with `bundle` the engine's directory rather than runq's, which runc got
    /// as the bundle; printed as runc prints it. Returns runc's exit status.
    pub fn state_with_bundle(&self, args: &[OsString], bundle: &Path) -> Result<i32, RuncError> {
        let output = self.state_output(args, Stdio::inherit())?;
        let mut stdout = std::io::stdout();
        let shown = match serde_json::from_slice::<serde_json::Value>(&output.stdout) {
            Ok(mut state) if output.status.success() => {
                state["bundle"] = serde_json::Value::from(bundle.to_string_lossy().into_owned());
                let mut text = serde_json::to_vec_pretty(&state).unwrap_or_default();
                text.push(b'\n');
                text
            }
            _ => output.stdout,
        };
        let _ = stdout.write_all(&shown);
        let _ = stdout.flush();
        Ok(exit_code(output.status))
    }

    /// `runc state` run to its end, its output captured.
    fn state_output(
        &self,
        args: &[OsString],
        stderr: Stdio,
    ) -> Result<std::process::Output, RuncError> {
        self.command("state", args)
            .stdin(Stdio::null())
            .stderr(stderr)
            .output()
            .map_err(|source| RuncError::Start {
                path: self.path.clone(),
                source,
            })
    }

    /// What runc knows of a container.
    pub fn state(&self, id: &str) -> Result<ContainerState, RuncError> {
        let output = self.state_output(&[OsString::from(id)], Stdio::piped())?;
        let state_error = |message: String| RuncError::State {
            id: id.to_string(),
            message,
        };
        if !output.status.success() {
            return Err(state_error(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ));
        }
        let state: serde_json::Value =
            serde_json::from_slice(&output.stdout).map_err(|e| state_error(e.to_string()))?;
        Ok(ContainerState {
            bundle: state["bundle"]
                .as_str()
                .map(PathBuf::from)
                .ok_or_else(|| state_error("no bundle in the state".into()))?,
            pid: state["pid"].as_i64().unwrap_or(0) as i32,
            status: state["status"].as_str().unwrap_or("unknown").to_string(),
        })
    }
}

fn forwardable_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(signal);
    }
    set
}

/// An exit status as a shell reports it.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// runc's line for runq's private directory below its state root (`load container .runq:
/// ...`), which is no container.
fn is_private_dir_complaint(line: &[u8]) -> bool {
    let prefix = format!("load container {}: ", runq_shared::layout::PRIVATE_SUBDIR);
    line.starts_with(prefix.as_bytes())
}

#[cfg(test)]
mod list_tests {
    use super::is_private_dir_complaint;

    #[test]
    fn only_runcs_line_about_runqs_own_directory_is_dropped() {
        assert!(is_private_dir_complaint(
            b"load container .runq: container does not exist"
        ));
        assert!(!is_private_dir_complaint(
            b"load container web: container does not exist"
        ));
        assert!(!is_private_dir_complaint(b"ID   PID   STATUS"));
    }
}

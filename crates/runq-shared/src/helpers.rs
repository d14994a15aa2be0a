//! How runq starts the helpers it ships (QEMU, virtiofsd, passt), in a container's proxy and
//! in the template builder alike: through the shipped loader and libraries, so that nothing
//! of the host's or the image's is loaded, with an empty environment and no stdin.

use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::layout::assets;
use crate::qemu::{virtiofsd_args, Paths};

/// The shipped `binary` (one of [`assets`]), to be given its arguments and outputs.
pub fn command(paths: &Paths, binary: &str) -> Command {
    let mut command = Command::new(paths.loader());
    command
        .args(paths.loader_args(binary))
        .env_clear()
        .stdin(Stdio::null());
    command
}

/// virtiofsd serving `paths.shared_root` on `listener`, a socket already listening, so that
/// QEMU can connect at once; its errors go to its log.
pub fn virtiofsd(paths: &Paths, listener: RawFd) -> io::Result<Command> {
    let mut command = command(paths, assets::VIRTIOFSD);
    command
        .args(virtiofsd_args(paths, listener))
        .stdout(Stdio::null())
        .stderr(log_file(&paths.virtiofsd_log)?);
    keep_open(&mut command, vec![listener]);
    Ok(command)
}

/// Lets the child inherit these descriptors, which the parent keeps open until spawn
/// returns.
pub fn keep_open(command: &mut Command, fds: Vec<RawFd>) {
    // SAFETY: the closure only calls fcntl, which is async-signal-safe, on descriptors that
    // stay open in the parent until spawn returns, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for fd in &fds {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// A helper's log, appended to, readable by its owner only (the proxy or the builder).
pub fn log_file(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))
}

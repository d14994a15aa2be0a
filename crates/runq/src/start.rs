//! `start` (and `run --detach`) return once the application runs in the guest, as runc's
//! return once the container's process runs: a signal sent after `start` returned must reach
//! the application, not a guest still booting. The proxy says so on a FIFO in runq's private
//! directory (see [`runq_shared::start_report`]); a guest that never gets there makes `start`
//! fail with the proxy's reason.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use runq_shared::start_report::{StartReport, MAX_LINE};

use crate::runc::Runc;

/// Beyond the guest's boot deadline, which the proxy enforces from QEMU's start: the time
/// to set up before it (the shared root, the network), with room for a loaded host.
const SETUP_ALLOWANCE: Duration = Duration::from_secs(30);

/// The read end of a runq container's start report, opened before runc starts the proxy so
/// that nothing it writes is lost.
pub struct StartWatch {
    fifo: File,
}

impl StartWatch {
    /// The watch of the container whose private directory is `private`; `None` where it has
    /// no report FIFO (a container runq left to runc).
    pub fn open(private: &Path) -> Result<Option<StartWatch>> {
        let path = private.join(runq_shared::layout::START_REPORT_FIFO);
        let fifo = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(fifo) => fifo,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
        };
        let kind = fifo
            .metadata()
            .with_context(|| path.display().to_string())?
            .file_type();
        if !kind.is_fifo() {
            bail!("{} is not runq's FIFO", path.display());
        }
        Ok(Some(StartWatch { fifo }))
    }

    /// Waits until the proxy of container `id` reports, ends, or `boot_timeout` (plus the
    /// set-up allowance) has passed.
    pub fn wait(mut self, runc: &Runc, id: &str, boot_timeout: Duration) -> Result<()> {
        let pid = runc.state(id)?.pid;
        // Gone already: whatever it wrote before it ended is still in the FIFO.
        let proxy = pidfd_open(pid).ok();
        let deadline = Instant::now() + boot_timeout + SETUP_ALLOWANCE;
        let mut line = Vec::new();
        loop {
            let ended = match &proxy {
                None => true,
                Some(proxy) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        bail!(
                            "container {id}: the guest did not start the application within {} s",
                            (boot_timeout + SETUP_ALLOWANCE).as_secs()
                        );
                    }
                    let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
                    let mut fds = [
                        PollFd::new(self.fifo.as_fd(), PollFlags::POLLIN),
                        PollFd::new(proxy.as_fd(), PollFlags::POLLIN),
                    ];
                    match poll(&mut fds, timeout) {
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => return Err(e).context("wait for the start report"),
                    }
                    fds[1].any().unwrap_or(false)
                }
            };
            self.read_into(&mut line)?;
            match StartReport::parse(&line) {
                Some(StartReport::Started) => return Ok(()),
                Some(StartReport::StartedWithoutTemplate(key)) => {
                    crate::templates::discard(&key);
                    return Ok(());
                }
                Some(StartReport::Failed(reason)) => return Err(anyhow!("{reason}")),
                None if ended => bail!(
                    "container {id}: runq's proxy ended before the guest started the application \
                     (its error is in the container's output)"
                ),
                None if line.len() >= MAX_LINE => {
                    bail!("container {id}: the start report is not one runq writes")
                }
                None => {}
            }
        }
    }

    /// For a container that ran in the foreground and has ended: acts on what its report
    /// said of the template, as `wait` would have.
    pub fn after_foreground_run(mut self) {
        let mut line = Vec::new();
        if self.read_into(&mut line).is_ok() {
            if let Some(StartReport::StartedWithoutTemplate(key)) = StartReport::parse(&line) {
                crate::templates::discard(&key);
            }
        }
    }

    /// Appends what the FIFO holds to `line`, up to [`MAX_LINE`]. The proxy holds the write
    /// end for its life, so its end shows as the pidfd's, not here.
    fn read_into(&mut self, line: &mut Vec<u8>) -> Result<()> {
        let mut buffer = [0u8; MAX_LINE];
        loop {
            let room = MAX_LINE.saturating_sub(line.len());
            if room == 0 {
                return Ok(());
            }
            match self.fifo.read(&mut buffer[..room]) {
                // No writer has it open: before the proxy opened it, or as it ends.
                Ok(0) => return Ok(()),
                Ok(n) => line.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("read the start report"),
            }
        }
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    if pid <= 0 {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

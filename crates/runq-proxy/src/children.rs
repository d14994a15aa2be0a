//! Starting virtiofsd, passt and QEMU, and holding them by pidfd.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};

use anyhow::{Context, Result};
use runq_shared::helpers;
use runq_shared::layout::assets;

use runq_shared::qemu::Paths;

/// A child of the proxy, held by a pidfd. The signal thread reaps every child (the proxy is
/// the container's PID 1, orphans included), after which the bare PID may name another
/// process: signals go through the pidfd, which keeps naming this one.
pub struct Tracked {
    pid: i32,
    pidfd: OwnedFd,
}

impl Tracked {
    /// Taken right after spawn, before the signal thread, the only reaper, starts: the PID
    /// is still the child's.
    fn of(child: Child) -> Result<Tracked> {
        let pid = child.id() as i32;
        Ok(Tracked {
            pid,
            pidfd: pidfd_open(pid).context("pidfd_open")?,
        })
    }

    #[cfg(test)]
    pub fn this_process() -> std::io::Result<Tracked> {
        let pid = std::process::id() as i32;
        Ok(Tracked {
            pid,
            pidfd: pidfd_open(pid)?,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Kills and reaps it; only before the signal thread, the proxy's reaper, starts.
    pub fn kill_and_reap(self) {
        self.kill();
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
    }

    /// SIGKILL; nothing happens where the process is gone already.
    pub fn kill(&self) {
        // SAFETY: pidfd_send_signal takes a pidfd we own, a signal number, no siginfo and no
        // flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// virtiofsd is handed an already listening socket, so QEMU can connect at once: nothing
/// waits for its socket file to appear.
pub fn start_virtiofsd(paths: &Paths) -> Result<Tracked> {
    let _ = std::fs::remove_file(&paths.virtiofsd_socket);
    let listener = UnixListener::bind(&paths.virtiofsd_socket)
        .with_context(|| format!("listen on {}", paths.virtiofsd_socket.display()))?;
    let fd: OwnedFd = listener.into();
    let mut command = helpers::virtiofsd(paths, fd.as_raw_fd())?;
    let child = command.spawn().context("start virtiofsd")?;
    drop(fd);
    Tracked::of(child)
}

/// The overflow user and group, which passt runs as.
const NOBODY: u32 = 65534;

/// passt, serving the VM's NIC on `socket` from the namespace's interface `interface`. It
/// quits when QEMU closes the other end.
pub fn start_passt(paths: &Paths, socket: OwnedFd, interface: &str) -> Result<Tracked> {
    let raw = socket.as_raw_fd();
    let mut command = helpers::command(paths, assets::PASST);
    command
        .args(["--foreground", "--quiet", "--one-off"])
        .arg(format!("--fd={raw}"))
        .arg(format!("--interface={interface}"))
        .arg(format!("--log-file={}", paths.passt_log.display()))
        // The guest is configured statically; the gateway must stay the gateway, not the
        // namespace's loopback, which the mirror serves.
        .args(["--no-map-gw", "--no-dhcp", "--no-dhcpv6", "--no-ra"])
        // Numeric, so that passt, started as root, drops to nobody without a user database
        // lookup: runq's own root has none, and the image's must not be read on the host.
        .arg(format!("--runas={NOBODY}:{NOBODY}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    helpers::keep_open(&mut command, vec![raw]);
    let child = command.spawn().context("start passt")?;
    drop(socket);
    Tracked::of(child)
}

/// The capabilities QEMU keeps: opening disk images whoever owns them, and for a 9p root,
/// what its passthrough file server does to files for the guest. Everything else leaves
/// QEMU's bounding set before it runs, so that root in QEMU is not root on the host.
pub fn qemu_capabilities(ninep: bool) -> Vec<caps::Capability> {
    use caps::Capability::*;
    let mut keep = vec![CAP_DAC_OVERRIDE];
    if ninep {
        keep.extend([
            CAP_CHOWN,
            CAP_DAC_READ_SEARCH,
            CAP_FOWNER,
            CAP_FSETID,
            CAP_MKNOD,
            CAP_SETGID,
            CAP_SETUID,
        ]);
    }
    keep
}

/// QEMU's descriptors with virtio-fs: its devices' (a few dozen with many NICs and disks), none
/// per file of the guest's.
pub const QEMU_MAX_FILES: u64 = 1024;

/// QEMU's RLIMIT_NOFILE, lowered to [`QEMU_MAX_FILES`] where it serves no files. As 9p's file
/// server it holds one descriptor per file the guest has open, as runc's container would: it
/// keeps runc's limit then.
fn qemu_max_files(ninep: bool) -> Result<Option<libc::rlimit>> {
    if ninep {
        return Ok(None);
    }
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .context("read RLIMIT_NOFILE")?;
    let limit = hard.min(QEMU_MAX_FILES);
    Ok(Some(libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    }))
}

pub fn start_qemu(
    paths: &Paths,
    args: &[String],
    debug: bool,
    ninep: bool,
    inherited: &[i32],
) -> Result<Tracked> {
    let mut command = helpers::command(paths, assets::QEMU);
    helpers::keep_open(&mut command, inherited.to_vec());
    let keep: Vec<i32> = qemu_capabilities(ninep)
        .into_iter()
        .map(|cap| i32::from(cap.index()))
        .collect();
    let last_cap: i32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(40);
    let dropped: Vec<i32> = (0..=last_cap).filter(|cap| !keep.contains(cap)).collect();
    let files = qemu_max_files(ninep)?;
    // SAFETY: the closure only calls prctl and setrlimit, which are async-signal-safe, and
    // allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if let Some(limit) = &files {
                if libc::setrlimit(libc::RLIMIT_NOFILE, limit) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for cap in &dropped {
                // EINVAL: a capability this kernel does not know; nothing to drop.
                if libc::prctl(libc::PR_CAPBSET_DROP, *cap, 0, 0, 0) < 0
                    && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.args(args);
    if debug {
        // The serial console goes to QEMU's stdout: show it as the proxy's stderr.
        let stderr = std::io::stderr().as_raw_fd().to_owned();
        let dup = nix::unistd::dup(stderr).context("dup stderr")?;
        // SAFETY: dup returned a fresh descriptor that nothing else owns.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) };
        command.stdout(Stdio::from(owned)).stderr(Stdio::inherit());
    } else {
        command
            .stdout(helpers::log_file(&paths.qemu_log)?)
            .stderr(helpers::log_file(&paths.qemu_log)?);
    }
    Tracked::of(command.spawn().context("start QEMU")?)
}

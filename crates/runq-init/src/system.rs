//! The guest's own basic file systems and its end.

use std::process::ExitCode;

use nix::mount::{mount, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};

use crate::error::{Context, InitError};

pub fn mount_basics() -> Result<(), InitError> {
    let common = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    for (source, target, fstype, flags) in [
        ("proc", "/proc", "proc", common | MsFlags::MS_NODEV),
        ("sysfs", "/sys", "sysfs", common | MsFlags::MS_NODEV),
        ("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID),
    ] {
        std::fs::create_dir_all(target).context(|| format!("mkdir {target}"))?;
        mount(Some(source), target, Some(fstype), flags, None::<&str>)
            .context(|| format!("mount {fstype} on {target}"))?;
    }
    attach_console()?;
    // The application's /dev/pts is this instance too (see mounts.rs).
    std::fs::create_dir_all("/dev/pts").context(|| "mkdir /dev/pts".to_string())?;
    mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .context(|| "mount devpts".to_string())?;
    Ok(())
}

/// Syncs and powers off; QEMU then exits. Never returns in a working guest.
pub fn power_off() -> ExitCode {
    nix::unistd::sync();
    let _ = reboot(RebootMode::RB_POWER_OFF);
    // Only reached if the reboot call itself failed; PID 1 exiting panics the kernel, which
    // with panic=-1 and -no-reboot ends QEMU as well.
    ExitCode::FAILURE
}

/// Whether the kernel command line carries `flag` (the proxy adds `runq.debug` in debug mode).
pub fn kernel_flag(cmdline: &str, flag: &str) -> bool {
    cmdline.split_whitespace().any(|word| word == flag)
}

/// The kernel starts /init from an initramfs with fds 0, 1 and 2 closed (there is no
/// /dev/console before devtmpfs is mounted). Left closed, the first files init opens would
/// take those numbers and be clobbered when the application's stdio is set up.
fn attach_console() -> Result<(), InitError> {
    use std::os::fd::IntoRawFd;
    let console = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
        .context(|| "open /dev/console".to_string())?
        .into_raw_fd();
    for fd in 0..3 {
        if fd != console {
            nix::unistd::dup2(console, fd).context(|| format!("dup /dev/console to {fd}"))?;
        }
    }
    if console > 2 {
        let _ = nix::unistd::close(console);
    }
    Ok(())
}

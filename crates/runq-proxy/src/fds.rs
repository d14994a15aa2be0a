//! File descriptors the proxy did not open itself must not live on in it or in QEMU, except
//! those runq create handed it through runc: the VM config, the start report's FIFO and the
//! templates (see `runq_shared::layout::FIRST_TEMPLATE_FD`).

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;

use anyhow::{bail, Context, Result};
use runq_shared::layout::{FIRST_TEMPLATE_FD, START_REPORT_FD, VM_CONFIG_FD};
use runq_shared::template::MAX_NICS;

/// The descriptors runq handed the proxy.
pub struct Handed {
    pub vm_config: File,
    pub start_report: File,
    /// By number of NICs; `/dev/null` where runq create found no template.
    pub templates: Vec<File>,
}

/// Closes every descriptor above stderr but runq's, then takes runq's.
pub fn take_handed_close_the_rest() -> Result<Handed> {
    let templates = FIRST_TEMPLATE_FD..=FIRST_TEMPLATE_FD + MAX_NICS as RawFd;
    close_from(templates.end() + 1);
    let vm_config = take(VM_CONFIG_FD, "the VM config")?;
    let start_report = take(START_REPORT_FD, "the start report")?;
    let templates = templates
        .map(|fd| take(fd, "a template"))
        .collect::<Result<Vec<_>>>()?;
    if !vm_config.metadata().is_ok_and(|m| m.is_file()) {
        bail!("descriptor {VM_CONFIG_FD} is not the VM config runq create hands the proxy");
    }
    if !start_report
        .metadata()
        .is_ok_and(|m| m.file_type().is_fifo())
    {
        bail!("descriptor {START_REPORT_FD} is not the FIFO runq create hands the proxy");
    }
    Ok(Handed {
        vm_config,
        start_report,
        templates,
    })
}

/// Takes over an inherited descriptor, closed on exec from now on.
fn take(fd: RawFd, what: &str) -> Result<File> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .with_context(|| format!("descriptor {fd}, {what}, was not handed to the proxy"))?;
    // SAFETY: the descriptor is open (fcntl succeeded), and nothing else in this process
    // owns it: it was inherited, and each number is taken once, at the proxy's start.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The VM config's bytes, bounded: runq wrote it, and the guest's part travels in one frame.
pub fn read_vm_config(file: File) -> Result<Vec<u8>> {
    let limit = runq_shared::protocol::MAX_FRAME_LEN as u64 * 2;
    let mut bytes = Vec::new();
    file.take(limit)
        .read_to_end(&mut bytes)
        .context("read the VM config")?;
    Ok(bytes)
}

fn close_from(first: RawFd) {
    // SAFETY: close_range only closes descriptors; nothing in this process uses any from
    // `first` on yet, since this runs first in main.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first as u32, u32::MAX, 0u32) };
    if rc != 0 {
        // Kernels before 5.9 lack close_range: close what /proc lists instead.
        let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter(|fd| *fd >= first)
                    .collect()
            })
            .unwrap_or_default();
        for fd in fds {
            let _ = nix::unistd::close(fd);
        }
    }
}

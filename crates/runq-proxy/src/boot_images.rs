//! Hands the guest kernel and initrd back to the host once the guest runs.
//!
//! QEMU keeps both files mapped for the whole life of the VM, so that a reset can load them
//! again; with `-no-reboot` a reset ends QEMU instead. After boot nothing reads those pages,
//! yet they stay in QEMU's memory (~60 MiB of an idle container's ~240 MiB). The proxy asks
//! the host kernel to page them out of QEMU (`process_madvise(MADV_PAGEOUT)`); they are
//! clean file pages, so this costs no I/O, and a read would simply fault them in again.

use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::children::Tracked;

/// A mapping's address range, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: usize,
    pub end: usize,
}

/// The ranges of `/proc/PID/maps` text that map one of `files`.
pub fn mappings_of(maps: &str, files: &[&Path]) -> Vec<Range> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let path = fields.nth(4)?.trim_start();
            if !files.iter().any(|file| Path::new(path) == *file) {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Range {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
            })
        })
        .collect()
}

/// Pages `files` out of `process`; returns the bytes of mappings it asked about. Needs
/// CAP_SYS_NICE; without it (a user namespace, say) the kernel refuses and nothing changes.
pub fn page_out(process: &Tracked, files: &[&Path]) -> io::Result<usize> {
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", process.pid()))?;
    let ranges = mappings_of(&maps, files);
    if ranges.is_empty() {
        return Ok(0);
    }
    let vectors: Vec<libc::iovec> = ranges
        .iter()
        .map(|range| libc::iovec {
            iov_base: range.start as *mut libc::c_void,
            iov_len: range.end - range.start,
        })
        .collect();
    // SAFETY: the iovecs name address ranges of the other process, which the kernel only
    // uses as such; our own memory is read only as the array of iovecs, which outlives the
    // call.
    let advised = unsafe {
        libc::syscall(
            libc::SYS_process_madvise,
            process.pidfd().as_raw_fd(),
            vectors.as_ptr(),
            vectors.len(),
            libc::MADV_PAGEOUT,
            0,
        )
    };
    if advised < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(advised as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 00:2a 12 /qemu/bin/qemu-system-x86_64
7f09a000000-7f09dedb000 r--p 00000000 00:2a 40 /qemu/kernel/vmlinux
7f09dfff000-7f0adfff000 rw-s 00000000 00:01 9 /memfd:memory-backend-memfd (deleted)
7f0cca00000-7f0ccfd1000 r--p 00000000 00:2a 41 /qemu/kernel/initrd
7f0cd000000-7f0cd001000 rw-p 00000000 00:00 0 
7f0ce000000-7f0ce001000 r--p 00000000 00:2a 42 /qemu/kernel/vmlinux.old
";

    #[test]
    fn finds_the_kernel_and_initrd_mappings_only() {
        let found = mappings_of(
            MAPS,
            &[
                Path::new("/qemu/kernel/vmlinux"),
                Path::new("/qemu/kernel/initrd"),
            ],
        );
        assert_eq!(
            found,
            [
                Range {
                    start: 0x7f09a000000,
                    end: 0x7f09dedb000
                },
                Range {
                    start: 0x7f0cca00000,
                    end: 0x7f0ccfd1000
                },
            ]
        );
    }

    #[test]
    fn nothing_mapped_means_nothing_to_do() {
        assert!(mappings_of(MAPS, &[Path::new("/elsewhere/vmlinux")]).is_empty());
        assert!(mappings_of("", &[Path::new("/qemu/kernel/vmlinux")]).is_empty());
    }

    #[test]
    fn pages_out_its_own_file_mapping() {
        // This test process maps a file of its own and pages it out. Kernels before 6.4
        // want CAP_SYS_NICE even for a process's own memory, so without it only EPERM may
        // come back.
        let file = std::env::current_exe().unwrap();
        let data = std::fs::File::open(&file).unwrap();
        let length = 4096;
        // SAFETY: a fresh read-only private mapping of a file we hold open; unmapped below.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                std::os::fd::AsRawFd::as_raw_fd(&data),
                0,
            )
        };
        assert_ne!(address, libc::MAP_FAILED);
        let this = Tracked::this_process().unwrap();
        let advised = page_out(&this, &[file.as_path()]);
        // SAFETY: the mapping made above, of `length` bytes.
        unsafe { libc::munmap(address, length) };
        match advised {
            Ok(bytes) => assert!(bytes >= length, "{bytes}"),
            Err(error) => assert_eq!(error.raw_os_error(), Some(libc::EPERM), "{error}"),
        }
    }
}

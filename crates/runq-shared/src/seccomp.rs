//! Loads a BPF program that `runq` compiled with libseccomp on the host: the spec's profile
//! for the application in the guest (runq-init), runq's own filter for the proxy. Neither
//! loader needs libseccomp of its own.

use crate::config::SeccompFilter;

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;

/// Installs `filter` on the calling thread (on all threads with `SECCOMP_FILTER_FLAG_TSYNC`).
pub fn load(filter: &SeccompFilter) -> Result<(), String> {
    let instructions = filter.program.len() / std::mem::size_of::<libc::sock_filter>();
    if instructions == 0
        || !filter
            .program
            .len()
            .is_multiple_of(std::mem::size_of::<libc::sock_filter>())
    {
        return Err(format!(
            "seccomp: program of {} bytes is not whole BPF instructions",
            filter.program.len()
        ));
    }
    let len = u16::try_from(instructions)
        .map_err(|_| format!("seccomp: program of {instructions} instructions is too long"))?;
    // Copied into properly aligned storage: the config's bytes have no alignment guarantee.
    let program: Vec<libc::sock_filter> = filter
        .program
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccomp(2) reads `len` instructions from the program, which lives until the call
    // returns; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            libc::c_ulong::from(filter.flags),
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(format!(
            "seccomp: load the filter: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

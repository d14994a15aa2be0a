//! Every VM is a machine of its own, though a restored one starts as a copy of its template
//! (see `runq_shared::template`): before anything of the container runs, the guest's random
//! generator is reseeded from the host's bytes and its clock set from the host's. The boot id
//! needs nothing: the kernel makes it on its first read, which nothing in a template does.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use runq_shared::config::HostFindings;

use crate::error::{Context, InitError};
use crate::net::last_error;

/// `RNDADDENTROPY`: `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG`: `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

pub fn apply(host: &HostFindings) -> Result<(), InitError> {
    if !host.entropy.is_empty() {
        reseed(&host.entropy)?;
    }
    if let Some(unix_ns) = host.wall_clock_ns {
        set_clock(unix_ns)?;
    }
    Ok(())
}

/// Credits the bytes to the input pool and makes the generator reseed from it at once.
fn reseed(bytes: &[u8]) -> Result<(), InitError> {
    let urandom = OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .context(|| "open /dev/urandom".into())?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let bits = (bytes.len() * 8) as i32;
    let mut request = Vec::with_capacity(8 + bytes.len());
    request.extend_from_slice(&bits.to_ne_bytes());
    request.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
    request.extend_from_slice(bytes);
    // SAFETY: RNDADDENTROPY reads a rand_pool_info of buf_size bytes after its header, which
    // `request` holds; the kernel does not keep the pointer.
    let rc = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY, request.as_ptr()) };
    if rc != 0 {
        return Err(last_error("credit the host's entropy"));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    let rc = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG) };
    if rc != 0 {
        return Err(last_error("reseed the random generator"));
    }
    Ok(())
}

fn set_clock(unix_ns: u64) -> Result<(), InitError> {
    let time = libc::timespec {
        tv_sec: (unix_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads the timespec we own.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &time) } != 0 {
        return Err(last_error("set the clock from the host's"));
    }
    Ok(())
}

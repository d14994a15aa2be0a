//! Tap devices through /dev/net/tun, with virtio-net headers: the proxy makes one for each
//! of the container's NICs, the template builder one in a network namespace of its own, so
//! that a template's NIC negotiates the same offloads with its guest as a container's.

use std::os::fd::{AsRawFd, OwnedFd};

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// A new tap device `name` in the caller's network namespace; QEMU is handed its descriptor.
pub fn open(name: &str) -> std::io::Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: TUNSETIFF reads and writes the ifreq we own, on the tun fd we own.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file.into())
}

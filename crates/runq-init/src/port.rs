//! Finds the control channel's virtio-serial port by name: without udev there is no
//! /dev/virtio-ports/, and the device's number depends on the order QEMU created ports.
//!
//! The port appears, and later learns its name, only after virtio_console has loaded and
//! exchanged control messages with QEMU. Each step sends a kernel uevent, so init watches
//! for them (the watch opened before the module loads) instead of sleeping.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::error::{Context, InitError};

const PORTS: &str = "/sys/class/virtio-ports";

/// Longer than any boot takes: QEMU creates the port before the guest runs at all.
const APPEAR_DEADLINE: Duration = Duration::from_secs(20);

/// Kernel uevents, subscribed to before the devices they announce can appear.
pub struct Uevents(OwnedFd);

pub fn watch() -> Result<Uevents, InitError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .context(|| "open a uevent socket".to_string())?;
    // Group 1: the kernel's own broadcasts.
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &NetlinkAddr::new(0, 1),
    )
    .context(|| "bind the uevent socket".to_string())?;
    Ok(Uevents(fd))
}

pub fn open(name: &str, uevents: &Uevents) -> Result<File, InitError> {
    let deadline = Instant::now() + APPEAR_DEADLINE;
    loop {
        if let Some(device) = find(name) {
            return OpenOptions::new()
                .read(true)
                .write(true)
                .open(&device)
                .context(|| format!("open {device}"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(InitError::NoPort(name.to_string()));
        }
        uevents.wait(left)?;
    }
}

fn find(name: &str) -> Option<String> {
    let entries = std::fs::read_dir(PORTS).ok()?;
    entries.flatten().find_map(|entry| {
        let port_name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        (port_name.trim() == name).then(|| format!("/dev/{}", entry.file_name().to_string_lossy()))
    })
}

impl Uevents {
    /// Waits up to `limit` for uevents and drains them; their content does not matter, the
    /// caller looks at sysfs again.
    fn wait(&self, limit: Duration) -> Result<(), InitError> {
        let millis = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(source) => {
                return Err(InitError::Sys {
                    what: "wait for uevents".to_string(),
                    source,
                })
            }
        }
        let mut buffer = [0u8; 8192];
        while recv(
            std::os::fd::AsRawFd::as_raw_fd(&self.0),
            &mut buffer,
            MsgFlags::empty(),
        )
        .is_ok()
        {}
        Ok(())
    }
}

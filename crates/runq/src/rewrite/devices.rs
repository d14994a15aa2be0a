//! The spec's device nodes (`linux.devices`) are the application's, and the application runs
//! in the guest: the guest makes them in its own /dev, as runc would in the container's. runc
//! makes only runq's own in the proxy's /dev: the runq disks' block devices here, /dev/net/tun
//! and /dev/kvm where the rewrite adds them.
//!
//! The numbers are the host's. A character device of the kernel's fixed numbers (mem, tty,
//! misc such as fuse and tun) is the same device in the guest wherever the guest kernel has
//! its driver. A host block device never is: the guest's disks are virtio's, so one named
//! alone is refused with the way to hand it over (a runq disk); among all of the host's
//! (`--privileged`) the block devices are left out.

use std::path::{Component, Path};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Spec};
use runq_shared::config::{DeviceKind, GuestDevice};
use runq_shared::disks::DISK_DIR;

use super::RewriteError;

/// The spec's devices for the guest to make.
#[derive(Debug, Default)]
pub struct GuestDevices {
    pub nodes: Vec<GuestDevice>,
    /// The spec named its devices one by one, rather than giving every device of the host.
    pub named_one_by_one: bool,
}

/// A runq disk given as a block device: QEMU opens it on the host side.
pub fn is_runq_disk(device: &LinuxDevice) -> bool {
    device.path().to_string_lossy().starts_with(DISK_DIR)
}

pub fn for_guest(spec: &Spec) -> Result<GuestDevices, RewriteError> {
    let linux = spec.linux().as_ref();
    let every_device = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().as_ref())
        .is_some_and(|rules| {
            rules.iter().any(|rule| {
                rule.allow()
                    && matches!(rule.typ(), None | Some(LinuxDeviceType::A))
                    && rule.major().is_none()
                    && rule.minor().is_none()
            })
        });
    let mut nodes = Vec::new();
    for device in linux
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        if is_runq_disk(device) {
            continue;
        }
        let path = device.path().to_string_lossy().into_owned();
        let plain = device.path().is_absolute()
            && device
                .path()
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
            && device.path() != Path::new("/");
        if !plain {
            return Err(RewriteError::DevicePath(path));
        }
        let kind = match device.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::P => DeviceKind::Fifo,
            LinuxDeviceType::B if every_device => continue,
            LinuxDeviceType::B => {
                return Err(RewriteError::HostBlockDevice {
                    path,
                    major: device.major(),
                    minor: device.minor(),
                })
            }
            LinuxDeviceType::A => return Err(RewriteError::DeviceType(path)),
        };
        let number = |n: i64| u64::try_from(n).map_err(|_| RewriteError::DevicePath(path.clone()));
        let (major, minor) = match kind {
            DeviceKind::Char => (number(device.major())?, number(device.minor())?),
            DeviceKind::Fifo => (0, 0),
        };
        nodes.push(GuestDevice {
            path,
            kind,
            major,
            minor,
            // runc's default, and only the permission bits: the type is `kind`.
            mode: device.file_mode().unwrap_or(0o666) & 0o7777,
            uid: device.uid().unwrap_or(0),
            gid: device.gid().unwrap_or(0),
        });
    }
    Ok(GuestDevices {
        nodes,
        named_one_by_one: !every_device,
    })
}

//! runq disks in the guest: each virtio-blk disk is found by its serial, mounted below the
//! container root where a file system is named, and shown to the application as its device
//! node and a `/dev/disk/by-runq-id/<id>` link.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::MsFlags;
use runq_shared::disks::{serial, DiskSpec};
use runq_shared::layout::GUEST_ROOTFS;

use crate::error::{Context, InitError};

/// virtio-blk probes as its module loads; a disk that is not there by then never will be.
const APPEAR_DEADLINE: Duration = Duration::from_secs(10);

/// A disk found in the guest.
#[derive(Debug, Clone)]
pub struct Attached {
    pub id: String,
    /// The kernel's name for it, e.g. `vda`.
    pub name: String,
    pub rdev: u64,
}

/// Finds each disk's device, in the order of `disks`.
pub fn find(disks: &[DiskSpec]) -> Result<Vec<Attached>, InitError> {
    if disks.is_empty() {
        return Ok(Vec::new());
    }
    let deadline = Instant::now() + APPEAR_DEADLINE;
    let by_serial = loop {
        let found = block_devices_by_serial();
        if disks
            .iter()
            .enumerate()
            .all(|(index, _)| found.contains_key(&serial(index)))
            || Instant::now() > deadline
        {
            break found;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut attached = Vec::new();
    for (index, disk) in disks.iter().enumerate() {
        let name = by_serial
            .get(&serial(index))
            .ok_or_else(|| InitError::NoDisk {
                id: disk.id.clone(),
                serial: serial(index),
            })?;
        let device = format!("/dev/{name}");
        let rdev = std::fs::metadata(&device)
            .context(|| format!("runq disk {}: stat {device}", disk.id))?
            .rdev();
        attached.push(Attached {
            id: disk.id.clone(),
            name: name.clone(),
            rdev,
        });
    }
    Ok(attached)
}

/// Mounts each disk that names a file system at its mount point below the container root,
/// except the root disk.
pub fn mount_all(
    disks: &[DiskSpec],
    attached: &[Attached],
    root_disk: Option<&str>,
) -> Result<(), InitError> {
    for (disk, found) in disks.iter().zip(attached) {
        let Some((fstype, mount_point)) = &disk.mount else {
            continue;
        };
        if Some(disk.id.as_str()) == root_disk {
            continue;
        }
        let target = Path::new(GUEST_ROOTFS).join(mount_point.trim_start_matches('/'));
        std::fs::create_dir_all(&target)
            .context(|| format!("runq disk {}: mkdir {mount_point}", disk.id))?;
        mount_device(found, &target, fstype.as_str())?;
    }
    Ok(())
}

pub fn mount_device(disk: &Attached, target: &Path, fstype: &str) -> Result<(), InitError> {
    let device = format!("/dev/{}", disk.name);
    nix::mount::mount(
        Some(device.as_str()),
        target,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| InitError::DiskMount {
        id: disk.id.clone(),
        device: device.clone(),
        fstype: fstype.to_string(),
        target: target.display().to_string(),
        source,
    })
}

/// Block devices that have a serial (virtio-blk shows it in sysfs), by serial.
fn block_devices_by_serial() -> HashMap<String, String> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return HashMap::new();
    };
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let serial = std::fs::read_to_string(entry.path().join("serial")).ok()?;
            Some((serial.trim().to_string(), name))
        })
        .collect()
}

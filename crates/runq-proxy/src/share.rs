//! The container's root as the guest should see it: everything below / including volumes and
//! Docker's /etc/hosts binds, but not what the guest mounts itself (/proc, /sys, /dev,
//! tmpfs mounts), nor runq's own mounts. Left in, they would show in the guest as virtiofs
//! submounts beneath its own.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

pub fn prepare<'a>(target: &Path, guest_mounts: impl Iterator<Item = &'a str>) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("mkdir {}", target.display()))?;
    mount(
        Some("/"),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind the container root to {}", target.display()))?;
    let hidden = guest_mounts.chain([runq_shared::layout::RUNQ_DIR]);
    for destination in hidden {
        let path = target.join(destination.trim_start_matches('/'));
        match umount2(&path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point here, nothing to hide.
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("unmount {}", path.display())),
        }
    }
    Ok(())
}

//! The container's root as the guest should see it: everything below / including volumes and
//! Docker's /etc/hosts binds, but not the host's /proc, /sys and /dev, nor runq's own mounts.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

const HIDDEN: &[&str] = &["proc", "sys", "dev", ".runq"];

pub fn prepare(target: &Path) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("mkdir {}", target.display()))?;
    mount(
        Some("/"),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind the container root to {}", target.display()))?;
    for hidden in HIDDEN {
        let path = target.join(hidden);
        match umount2(&path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point here, nothing to hide.
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e).with_context(|| format!("unmount {}", path.display())),
        }
    }
    Ok(())
}

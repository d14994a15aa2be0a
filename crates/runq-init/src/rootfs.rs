//! Mounts the container's root, shared by the host, at /rootfs.

use nix::mount::MsFlags;
use runq_shared::config::{GuestConfig, RootFs};
use runq_shared::layout::{GUEST_ROOTFS, ROOTFS_TAG};

use crate::{Context, InitError};

/// 9p moves at most this much per request; larger is faster for big files.
const NINEP_MSIZE: u32 = 512 << 10;

pub fn mount(config: &GuestConfig) -> Result<(), InitError> {
    std::fs::create_dir_all(GUEST_ROOTFS).context(|| format!("mkdir {GUEST_ROOTFS}"))?;
    // Read-only roots are enforced by the host, which serves the files: the volumes below a
    // read-only root are one file system in the guest and may well be writable.
    let flags = MsFlags::empty();
    let (fstype, data) = match config.root_fs {
        RootFs::Virtiofs => ("virtiofs", None),
        RootFs::NineP { cache } => (
            "9p",
            Some(format!(
                "trans=virtio,version=9p2000.L,msize={NINEP_MSIZE},cache={}",
                cache.as_str()
            )),
        ),
    };
    nix::mount::mount(
        Some(ROOTFS_TAG),
        GUEST_ROOTFS,
        Some(fstype),
        flags,
        data.as_deref(),
    )
    .context(|| format!("mount the container root ({fstype}, tag {ROOTFS_TAG})"))
}

//! Mounts the container's root, shared by the host, at /rootfs.

use nix::mount::MsFlags;
use runq_shared::config::{GuestConfig, RootFs};
use runq_shared::layout::{GUEST_ROOTFS, MODULES_IN_CONTAINER, ROOTFS_TAG};

use crate::error::{Context, InitError};

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

/// The container's /lib/modules holds the guest kernel's whole module tree (runq binds it
/// there on the host). Bound over init's own, it lets the kernel's on-demand /sbin/modprobe
/// (runq-init itself, linked from here on) find every module, not only the initrd's.
pub fn share_module_tree() {
    let release = crate::modules::kernel_release();
    let tree = format!("{GUEST_ROOTFS}{MODULES_IN_CONTAINER}/{release}");
    let own = format!("{MODULES_IN_CONTAINER}/{release}");
    if !std::path::Path::new(&tree).join("modules.dep").exists() {
        crate::console::debug(&format!("no module tree at {tree}"));
        return;
    }
    if let Err(e) = nix::mount::mount(
        Some(tree.as_str()),
        own.as_str(),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        crate::console::log(&format!("bind {tree} over {own}: {e}"));
        return;
    }
    if let Err(e) = crate::modprobe::install() {
        crate::console::log(&format!("link /sbin/modprobe to /init: {e}"));
    }
}

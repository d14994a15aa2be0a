//! runq's own root for the proxy and every helper it starts.
//!
//! runc starts the proxy in the image's root. Anything started there through the bundled
//! dynamic loader would read the image's /etc/ld.so.preload, ld.so.cache, NSS and gconv files,
//! and every path the host side uses would be one the guest can change through the shared
//! tree (removing a directory detaches the mounts on it in every other namespace). So before
//! any helper starts, the proxy makes the /.runq tmpfs runc mounted for it its root:
//!
//! ```text
//! /qemu      the assets, read-only         /proc, /dev, /sys   the container's, as runc made them
//! /rootfs    the container's tree, shared with the guest: data served, never used
//! ```
//!
//! `runc exec` enters this root too: that is where the exec relay runs from.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use runq_shared::in_root;
use runq_shared::layout::{own_root, RUNQ_DIR};

/// The old root, the image's, between the pivot and [`share_container_tree`].
const OLD_ROOT: &str = "/.old";

/// Makes the /.runq tmpfs the proxy's root, with the container's /proc, /dev and /sys.
pub fn enter() -> Result<()> {
    check_runq_dir(Path::new(RUNQ_DIR))?;
    // Nothing of what follows may propagate back into the container's or the host's mounts.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("make the container's mounts slaves")?;
    let new_root = Path::new(RUNQ_DIR);
    let put_old = new_root.join(OLD_ROOT.trim_start_matches('/'));
    mkdir(&put_old)?;
    nix::unistd::pivot_root(new_root, &put_old)
        .with_context(|| format!("pivot into runq's own root {RUNQ_DIR}"))?;
    nix::unistd::chdir("/").context("chdir to runq's own root")?;
    // passt drops to nobody before it sandboxes itself, and then mounts an empty tmpfs on
    // /tmp to pivot into: nobody must be able to pass through this root to reach it.
    std::fs::set_permissions("/", std::fs::Permissions::from_mode(0o711))
        .context("open runq's own root to the helpers that drop to nobody")?;
    mkdir(Path::new("/tmp"))?;
    // runc refuses to mount proc and sysfs on anything but a plain directory, so these two
    // paths are the container's; /proc then resolves what /dev is below the old root.
    bind(&Path::new(OLD_ROOT).join("proc"), Path::new("/proc"))?;
    bind(&Path::new(OLD_ROOT).join("sys"), Path::new("/sys"))?;
    let dev =
        in_root::open_path(Path::new(OLD_ROOT), "/dev").context("find the container's /dev")?;
    bind(
        Path::new(&format!("/proc/self/fd/{}", dev.as_raw_fd())),
        Path::new("/dev"),
    )?;
    Ok(())
}

/// /.runq must be the tmpfs runc mounted for runq: an image may have put anything at that
/// path, and a link would have sent runc's mounts elsewhere.
fn check_runq_dir(path: &Path) -> Result<()> {
    let entry = std::fs::symlink_metadata(path).with_context(|| path.display().to_string())?;
    if !entry.is_dir() {
        bail!(
            "{}: the image has a {} there; runq keeps its own files at that path, so the \
             image must not have it",
            path.display(),
            if entry.is_symlink() {
                "symbolic link"
            } else {
                "file"
            }
        );
    }
    let fs = nix::sys::statfs::statfs(path).with_context(|| path.display().to_string())?;
    if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        bail!("{}: not the tmpfs runq mounts there", path.display());
    }
    Ok(())
}

/// The container's tree as the guest gets it, at [`own_root::ROOTFS`]: everything below the
/// image's root including volumes and the engine's /etc/hosts binds, but not what the guest
/// mounts itself (/proc, /sys, /dev, tmpfs mounts), whose host copies must never reach it.
/// Then the old root goes.
pub fn share_container_tree<'a>(guest_mounts: impl Iterator<Item = &'a str>) -> Result<()> {
    let target = Path::new(own_root::ROOTFS);
    bind(Path::new(OLD_ROOT), target).context("share the container's tree")?;
    for destination in guest_mounts {
        hide(target, destination)?;
    }
    umount2(OLD_ROOT, MntFlags::MNT_DETACH).context("detach the image's root")?;
    let _ = std::fs::remove_dir(OLD_ROOT);
    Ok(())
}

/// Unmounts whatever is mounted at `destination` in the tree, found as runc found it: inside
/// the tree, links and all.
fn hide(tree: &Path, destination: &str) -> Result<()> {
    // Mounts may be stacked on one point; a few rounds take them all.
    for _ in 0..8 {
        let fd = match in_root::open_path(tree, destination) {
            Ok(fd) => fd,
            Err(error) if error.is_not_found() => return Ok(()),
            Err(error) => return Err(error).context("hide a guest mount from the shared tree"),
        };
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        match umount2(path.as_str(), MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            // EINVAL: not a mount point here, nothing (more) to hide.
            Err(nix::errno::Errno::EINVAL) => return Ok(()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("unmount {destination} from the shared tree"))
            }
        }
    }
    Ok(())
}

fn bind(source: &Path, target: &Path) -> Result<()> {
    mkdir(target)?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("bind {} to {}", source.display(), target.display()))
}

fn mkdir(path: &Path) -> Result<()> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("mkdir {}", path.display())),
    }
}

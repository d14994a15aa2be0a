//! `RUNQ_ROOTDISK`: the container's root on a runq disk instead of the shared root. The first
//! start copies the image (the shared root) onto the empty disk; every start then mounts the
//! disk as the root and binds the host's bind mounts (volumes, /etc/hosts, /etc/hostname,
//! /etc/resolv.conf, the module tree) from the shared root over it, so they stay live and
//! current.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use runq_shared::config::{GuestConfig, RootDisk};
use runq_shared::layout::GUEST_ROOTFS;

use crate::console;
use crate::disks::{mount_device, Attached};
use crate::error::{Context, InitError};

/// Where the disk is prepared, and where the shared root goes once the disk is the root.
const STAGING: &str = "/rootdisk";
const SHARED: &str = "/shared";

pub fn switch(root: &RootDisk, config: &GuestConfig, disks: &[Attached]) -> Result<(), InitError> {
    let (spec, disk) = config
        .disks
        .iter()
        .zip(disks)
        .find(|(spec, _)| spec.id == root.id)
        .ok_or_else(|| InitError::NoRootDisk(root.id.clone()))?;
    std::fs::create_dir_all(STAGING).context(|| format!("mkdir {STAGING}"))?;
    let staging = Path::new(STAGING);
    match &spec.mount {
        Some((fstype, _)) => mount_device(disk, staging, fstype.as_str())?,
        // ext4's driver mounts ext2 too.
        None => mount_device(disk, staging, "ext4")?,
    }
    if is_empty(staging)? {
        console::debug(&format!("copying the image onto root disk {}", root.id));
        let skip: HashSet<PathBuf> = config
            .binds
            .iter()
            .map(|bind| &bind.destination)
            .chain(&root.exclude)
            .map(|path| Path::new(GUEST_ROOTFS).join(path.trim_start_matches('/')))
            .collect();
        copy_tree(Path::new(GUEST_ROOTFS), staging, &skip)?;
    }
    std::fs::create_dir_all(SHARED).context(|| format!("mkdir {SHARED}"))?;
    move_mount(GUEST_ROOTFS, SHARED)?;
    move_mount(STAGING, GUEST_ROOTFS)?;
    for bind in &config.binds {
        bind_from_shared(&bind.destination)?;
    }
    Ok(())
}

fn move_mount(from: &str, to: &str) -> Result<(), InitError> {
    nix::mount::mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context(|| format!("move the mount {from} to {to}"))
}

/// A new file system holds nothing but lost+found.
fn is_empty(dir: &Path) -> Result<bool, InitError> {
    let entries = std::fs::read_dir(dir).context(|| format!("read {}", dir.display()))?;
    Ok(entries
        .filter_map(|e| e.ok())
        .all(|e| e.file_name() == "lost+found"))
}

fn bind_from_shared(destination: &str) -> Result<(), InitError> {
    let relative = destination.trim_start_matches('/');
    let source = Path::new(SHARED).join(relative);
    let Ok(metadata) = std::fs::metadata(&source) else {
        return Ok(());
    };
    let target = Path::new(GUEST_ROOTFS).join(relative);
    if !target.exists() {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).context(|| format!("mkdir {}", parent.display()))?;
        }
        if metadata.is_dir() {
            std::fs::create_dir(&target)
        } else {
            std::fs::File::create(&target).map(drop)
        }
        .context(|| format!("make the mount point {destination} on the root disk"))?;
    }
    nix::mount::mount(
        Some(&source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context(|| format!("bind {destination} from the shared root onto the root disk"))
}

/// Copies a tree with owners, modes, times, links and device nodes, leaving out `skip`.
fn copy_tree(from: &Path, to: &Path, skip: &HashSet<PathBuf>) -> Result<(), InitError> {
    let entries = std::fs::read_dir(from).context(|| format!("read {}", from.display()))?;
    for entry in entries {
        let entry = entry.context(|| format!("read {}", from.display()))?;
        let source = entry.path();
        if skip.contains(&source) {
            continue;
        }
        let target = to.join(entry.file_name());
        copy_one(&source, &target, skip)?;
    }
    Ok(())
}

fn copy_one(source: &Path, target: &Path, skip: &HashSet<PathBuf>) -> Result<(), InitError> {
    let what = || format!("copy {} onto the root disk", source.display());
    let metadata = std::fs::symlink_metadata(source).context(what)?;
    let kind = metadata.file_type();
    if kind.is_dir() {
        if !target.exists() {
            std::fs::create_dir(target).context(what)?;
        }
        copy_tree(source, target, skip)?;
    } else if kind.is_symlink() {
        let link = std::fs::read_link(source).context(what)?;
        std::os::unix::fs::symlink(link, target).context(what)?;
    } else if kind.is_file() {
        std::fs::copy(source, target).context(what)?;
    } else if kind.is_char_device() || kind.is_block_device() || kind.is_fifo() {
        let file_type = if kind.is_char_device() {
            SFlag::S_IFCHR
        } else if kind.is_block_device() {
            SFlag::S_IFBLK
        } else {
            SFlag::S_IFIFO
        };
        nix::sys::stat::mknod(
            target,
            file_type,
            Mode::from_bits_truncate(metadata.mode()),
            metadata.rdev(),
        )
        .context(what)?;
    } else {
        // Sockets belong to the processes that made them.
        return Ok(());
    }
    std::os::unix::fs::lchown(target, Some(metadata.uid()), Some(metadata.gid())).context(what)?;
    if !kind.is_symlink() {
        // After chown, which clears set-id bits.
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(metadata.mode()))
            .context(what)?;
    }
    let atime = TimeSpec::new(metadata.atime(), metadata.atime_nsec());
    let mtime = TimeSpec::new(metadata.mtime(), metadata.mtime_nsec());
    nix::sys::stat::utimensat(
        None,
        target,
        &atime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .context(what)
}

//! The application's file system view, prepared below /rootfs in its own mount namespace:
//! the spec's non-bind mounts, a runc-like /dev, sysctls, masked and read-only paths.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use runq_shared::config::{GuestBind, GuestConfig, GuestMount};
use runq_shared::disks::BY_ID_DIR;
use runq_shared::layout::GUEST_ROOTFS;

use crate::disks::Attached;
use crate::error::{Context, InitError};
use crate::{console, mount_options};

pub fn prepare_root(
    config: &GuestConfig,
    resolv_conf: Option<&str>,
    disks: &[Attached],
) -> Result<(), InitError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context(|| "make mounts private".to_string())?;
    for spec_mount in &config.mounts {
        let cgroups = matches!(spec_mount.fstype.as_str(), "cgroup" | "cgroup2");
        if cgroups && config.systemd {
            // systemd mounts the hierarchy it wants itself.
            continue;
        }
        mount_one(spec_mount)?;
    }
    show_binds(&config.binds)?;
    populate_dev()?;
    crate::devices::make(
        Path::new(GUEST_ROOTFS),
        &config.devices,
        config.name_driverless_devices,
    )?;
    add_disks(disks)?;
    if let Some(text) = resolv_conf {
        bind_resolv_conf(text)?;
    }
    for (key, value) in &config.sysctl {
        let path = in_root(&format!("/proc/sys/{}", key.replace('.', "/")));
        std::fs::write(&path, value).context(|| format!("set sysctl {key}={value}"))?;
    }
    for path in &config.masked_paths {
        mask(path)?;
    }
    for path in &config.readonly_paths {
        make_readonly(path)?;
    }
    Ok(())
}

fn in_root(path: &str) -> PathBuf {
    Path::new(GUEST_ROOTFS).join(path.trim_start_matches('/'))
}

fn mount_one(spec_mount: &GuestMount) -> Result<(), InitError> {
    let target = in_root(&spec_mount.destination);
    std::fs::create_dir_all(&target).context(|| format!("mkdir {}", target.display()))?;
    let options = mount_options::parse(&spec_mount.options);
    let result = match spec_mount.fstype.as_str() {
        // One devpts instance for init and application, so a pty made by init is a tty the
        // application can name (`tty`, ttyname) in its own /dev/pts.
        "devpts" => mount(
            Some("/dev/pts"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ),
        // The guest kernel is the container's own: give it the unified hierarchy.
        "cgroup" | "cgroup2" => mount(
            Some("cgroup2"),
            &target,
            Some("cgroup2"),
            options.flags,
            None::<&str>,
        )
        .or_else(|e| {
            console::log(&format!("cgroup2 on {}: {e}; left out", target.display()));
            Ok(())
        }),
        fstype => mount(
            Some(spec_mount.source.as_str()),
            &target,
            Some(fstype),
            options.flags,
            Some(options.data.as_str()).filter(|d| !d.is_empty()),
        ),
    };
    result.context(|| {
        format!(
            "mount {} on {} ({})",
            spec_mount.fstype,
            spec_mount.destination,
            spec_mount.options.join(",")
        )
    })?;
    if !options.propagation.is_empty() {
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            options.propagation,
            None::<&str>,
        )
        .context(|| format!("set propagation of {}", spec_mount.destination))?;
    }
    Ok(())
}

/// The per-mount flags a bind's options may set.
const PER_MOUNT_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC)
    .union(MsFlags::MS_NOATIME)
    .union(MsFlags::MS_NODIRATIME)
    .union(MsFlags::MS_RELATIME)
    .union(MsFlags::MS_STRICTATIME);

/// The spec's bind mounts are part of the shared root, served by the host, which enforces
/// what its own mounts say. Each also gets a mount of its own here, at its destination with
/// the spec's per-mount flags, so that the application's mount table has it as under runc
/// and the guest kernel applies nosuid, nodev and noexec too. A directory virtio-fs announces
/// as a submount (a host mount point) is one already; anything else is bound onto itself.
fn show_binds(binds: &[GuestBind]) -> Result<(), InitError> {
    use nix::sys::stat::{lstat, stat};
    for bind in binds.iter().filter(|bind| !bind.runqs_own) {
        let target = in_root(&bind.destination);
        let (Ok(found), Some(parent)) = (lstat(&target), target.parent()) else {
            console::debug(&format!(
                "bind {}: not in the shared root",
                bind.destination
            ));
            continue;
        };
        if SFlag::from_bits_truncate(found.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK {
            continue;
        }
        // The stat calls never mount a virtio-fs submount; opening the directory does, as
        // the application's first look would. Bound onto itself instead, the bind would sit
        // on a second mount of it.
        if SFlag::from_bits_truncate(found.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR {
            std::fs::File::open(&target).context(|| format!("open {}", bind.destination))?;
        }
        let found = stat(&target).context(|| format!("stat {}", bind.destination))?;
        let parent = stat(parent).context(|| format!("stat the parent of {}", bind.destination))?;
        if found.st_dev == parent.st_dev {
            mount(
                Some(&target),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .context(|| format!("bind {} onto itself", bind.destination))?;
        }
        let flags = mount_options::parse(&bind.options).flags & PER_MOUNT_FLAGS;
        mount(
            None::<&str>,
            &target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
            None::<&str>,
        )
        .context(|| {
            format!(
                "set the flags of bind {} ({})",
                bind.destination,
                bind.options.join(",")
            )
        })?;
    }
    Ok(())
}

/// Each runq disk's node, and its link by id, as the guest's udev-less /dev would lack them.
fn add_disks(disks: &[Attached]) -> Result<(), InitError> {
    if disks.is_empty() {
        return Ok(());
    }
    let by_id = in_root(BY_ID_DIR);
    std::fs::create_dir_all(&by_id).context(|| format!("mkdir {BY_ID_DIR}"))?;
    for disk in disks {
        let node = in_root(&format!("/dev/{}", disk.name));
        if !node.exists() {
            mknod(
                &node,
                SFlag::S_IFBLK,
                Mode::from_bits_truncate(0o660),
                disk.rdev,
            )
            .context(|| format!("mknod /dev/{}", disk.name))?;
        }
        symlink(format!("../../{}", disk.name), by_id.join(&disk.id))
            .context(|| format!("link {BY_ID_DIR}/{}", disk.id))?;
    }
    Ok(())
}

/// The device nodes and links runc creates in a container's /dev.
fn populate_dev() -> Result<(), InitError> {
    let dev = in_root("/dev");
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let path = dev.join(name);
        if path.exists() {
            continue;
        }
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .context(|| format!("mknod {}", path.display()))?;
        // mknod is subject to the umask; the nodes must be usable by every user.
        nix::sys::stat::fchmodat(
            None,
            &path,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .context(|| format!("chmod {}", path.display()))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        let path = dev.join(name);
        if path.symlink_metadata().is_err() {
            symlink(target, &path).context(|| format!("symlink {}", path.display()))?;
        }
    }
    Ok(())
}

fn mask(path: &str) -> Result<(), InitError> {
    let target = in_root(path);
    let Ok(metadata) = target.metadata() else {
        return Ok(());
    };
    let result = if metadata.is_dir() {
        mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some(&in_root("/dev/null")),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    result.context(|| format!("mask {path}"))
}

fn make_readonly(path: &str) -> Result<(), InitError> {
    let target = in_root(path);
    if target.symlink_metadata().is_err() {
        return Ok(());
    }
    mount(
        Some(&target),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context(|| format!("bind {path} read-only"))?;
    mount(
        None::<&str>,
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
        None::<&str>,
    )
    .context(|| format!("remount {path} read-only"))
}

/// The resolv.conf with runq's DNS settings, which the proxy made, on a file of init's own
/// bound over the container's: the engine's file on the host stays as it was.
fn bind_resolv_conf(text: &str) -> Result<(), InitError> {
    const GUEST_COPY: &str = "/resolv.conf";
    let target = in_root("/etc/resolv.conf");
    std::fs::write(GUEST_COPY, text).context(|| format!("write {GUEST_COPY}"))?;
    if target.symlink_metadata().is_err() {
        std::fs::write(&target, "").context(|| format!("create {}", target.display()))?;
    }
    mount(
        Some(GUEST_COPY),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .context(|| "bind runq's resolv.conf".to_string())
}

//! The spec's device nodes (`linux.devices`) in the application's /dev, made as runc makes
//! them: a node already there is left alone, the mode is exactly the spec's, then the owner.
//!
//! Their numbers are the host's. Where the spec named its devices one by one, the character
//! devices the guest kernel has no driver for (after asking its module loader, as opening the
//! node would) are named on the application's stderr: opening one fails.

use std::io::Write;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmodat, makedev, mknod, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use runq_shared::config::{DeviceKind, GuestDevice};

use crate::error::{Context, InitError};

/// Makes the nodes below `root`.
pub fn make(root: &Path, devices: &[GuestDevice], name_driverless: bool) -> Result<(), InitError> {
    let mut driverless = Vec::new();
    for device in devices {
        let node = root.join(device.path.trim_start_matches('/'));
        if let Some(parent) = node.parent() {
            std::fs::create_dir_all(parent).context(|| format!("mkdir {}", parent.display()))?;
        }
        let (kind, rdev) = match device.kind {
            DeviceKind::Char => (SFlag::S_IFCHR, makedev(device.major, device.minor)),
            DeviceKind::Fifo => (SFlag::S_IFIFO, 0),
        };
        let mode = Mode::from_bits_truncate(device.mode);
        match mknod(&node, kind, mode, rdev) {
            Err(Errno::EEXIST) => continue,
            made => made.context(|| format!("mknod {}", device.path))?,
        }
        // mknod is subject to the umask; runc's nodes are not. The node was just made, so
        // it is no link.
        fchmodat(None, &node, mode, FchmodatFlags::FollowSymlink)
            .context(|| format!("chmod {}", device.path))?;
        fchownat(
            None,
            &node,
            Some(Uid::from_raw(device.uid)),
            Some(Gid::from_raw(device.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .context(|| format!("chown {}", device.path))?;
        if name_driverless && device.kind == DeviceKind::Char && !has_driver(device) {
            driverless.push(format!(
                "{} ({}:{})",
                device.path, device.major, device.minor
            ));
        }
    }
    if !driverless.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "runq: the guest kernel has no driver for {}: device numbers are the host's, and \
             opening these nodes fails in the VM",
            driverless.join(", ")
        );
    }
    Ok(())
}

/// Whether the guest kernel has the character device, loading its module as opening the
/// node would (the `char-major-M-m` alias).
fn has_driver(device: &GuestDevice) -> bool {
    let registered =
        || Path::new(&format!("/sys/dev/char/{}:{}", device.major, device.minor)).exists();
    registered() || {
        let _ = crate::modprobe::probe(&format!("char-major-{}-{}", device.major, device.minor));
        registered()
    }
}

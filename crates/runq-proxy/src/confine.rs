//! The proxy's confinement of itself once its setup is done.
//!
//! runc cannot confine the proxy as it would the container: the setup mounts (its own root,
//! virtiofsd's and passt's sandboxes), takes the network over (writing `/proc/sys`) and starts
//! the helpers. So runc starts it with what the setup needs, and the proxy puts the engine's
//! confinement on itself as soon as it no longer needs more: the read-only paths and the
//! AppArmor profile before QEMU starts (QEMU inherits both), then the capabilities and runq's
//! seccomp filter once QEMU runs. Threads are only started after that: capabilities are per
//! thread, and every thread must be as confined as the last.

use std::path::Path;

use anyhow::{bail, Context, Result};
use caps::{CapSet, Capability, CapsHashSet};
use nix::mount::{mount, MsFlags};
use runq_shared::config::HostConfinement;

/// The spec's read-only paths that the proxy's root has (its `/proc` and `/sys` are the
/// container's), made read-only as runc would: bound onto themselves, then remounted
/// read-only with the flags they had. A path that does not exist is skipped, as runc does.
pub fn read_only_paths(confinement: &HostConfinement) -> Result<()> {
    for path in &confinement.readonly_paths {
        let path = Path::new(path);
        if !path.starts_with("/proc") && !path.starts_with("/sys") {
            continue;
        }
        match std::fs::symlink_metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("read-only path {}", path.display()))
            }
            Ok(_) => {}
        }
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("bind the read-only path {}", path.display()))?;
        let kept = nix::sys::statvfs::statvfs(path)
            .with_context(|| format!("statvfs {}", path.display()))?
            .flags();
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        for (had, flag) in [
            (nix::sys::statvfs::FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (nix::sys::statvfs::FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (nix::sys::statvfs::FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        ] {
            if kept.contains(had) {
                flags |= flag;
            }
        }
        mount(Some(path), path, None::<&str>, flags, None::<&str>)
            .with_context(|| format!("make {} read-only", path.display()))?;
    }
    Ok(())
}

/// Puts the proxy under the spec's AppArmor profile at once (the proxy does not exec again);
/// QEMU, started next, inherits it. Like runc, a profile on a host without AppArmor is an
/// error, not silently dropped.
pub fn apparmor(confinement: &HostConfinement) -> Result<()> {
    let Some(profile) = confinement.apparmor_profile.as_deref() else {
        return Ok(());
    };
    if profile.is_empty() || profile == "unconfined" {
        return Ok(());
    }
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|text| text.trim() == "Y");
    if !enabled {
        bail!("the spec's AppArmor profile {profile:?} cannot apply: AppArmor is not enabled on this host");
    }
    let command = format!("changeprofile {profile}");
    // The LSM-specific file first: with several LSMs stacked, attr/current may be another's.
    std::fs::write("/proc/thread-self/attr/apparmor/current", &command)
        .or_else(|_| std::fs::write("/proc/thread-self/attr/current", &command))
        .with_context(|| format!("change to the AppArmor profile {profile}"))
}

/// What the proxy keeps once QEMU runs: CAP_SYS_NICE to page the boot images out of QEMU,
/// and QEMU's own capabilities, without which the kernel would not let it read QEMU's
/// mappings (a tracer's permitted set must hold the tracee's).
pub fn kept_capabilities(qemu: &[Capability]) -> CapsHashSet {
    let mut keep: CapsHashSet = qemu.iter().copied().collect();
    keep.insert(Capability::CAP_SYS_NICE);
    keep
}

/// Drops every capability but `keep`, from the bounding set too, on the calling thread (the
/// only one at this point).
pub fn drop_capabilities(keep: &CapsHashSet) -> Result<()> {
    for capability in caps::all() {
        if !keep.contains(&capability)
            && caps::has_cap(None, CapSet::Bounding, capability).unwrap_or(false)
        {
            caps::drop(None, CapSet::Bounding, capability)
                .with_context(|| format!("drop {capability} from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).context("clear the ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clear the inheritable capabilities")?;
    let permitted = caps::read(None, CapSet::Permitted).context("read the capabilities")?;
    let kept: CapsHashSet = permitted.intersection(keep).copied().collect();
    caps::set(None, CapSet::Effective, &kept).context("set the effective capabilities")?;
    caps::set(None, CapSet::Permitted, &kept).context("set the permitted capabilities")
}

/// The proxy's own descriptors at most, once QEMU and the helpers run (they keep theirs):
/// the mirror's 256 listeners and 1024 connections, the DNS relay's 4 sockets and the exec
/// sessions fit, and nothing the guest does can make the proxy hold more.
pub const MAX_FILES: u64 = 4096;

/// Lowers the proxy's RLIMIT_NOFILE, soft and hard, to [`MAX_FILES`] (or below, where runc's
/// is lower); no capability is needed to lower it, none could raise it again.
pub fn limit_descriptors() -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("read RLIMIT_NOFILE")?;
    let limit = hard.min(MAX_FILES);
    setrlimit(Resource::RLIMIT_NOFILE, limit, limit).context("lower RLIMIT_NOFILE")
}

/// Loads runq's seccomp filter for the host side, on every thread of the proxy.
pub fn seccomp(confinement: &HostConfinement) -> Result<()> {
    match &confinement.seccomp {
        Some(filter) => runq_shared::seccomp::load(filter)
            .map_err(anyhow::Error::msg)
            .context("load the host side's seccomp filter"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_keeps_what_paging_out_of_qemu_needs() {
        let kept = kept_capabilities(&[Capability::CAP_DAC_OVERRIDE]);
        assert_eq!(
            kept,
            [Capability::CAP_DAC_OVERRIDE, Capability::CAP_SYS_NICE]
                .into_iter()
                .collect()
        );
    }
}

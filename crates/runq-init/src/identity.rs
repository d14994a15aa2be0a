//! Who the application runs as: user, groups and the five capability sets, applied in the
//! order runc uses so that the result is the same bit for bit.

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};
use runq_shared::config::ProcessConfig;

pub fn apply(process: &ProcessConfig) -> Result<(), String> {
    let wanted = |names: &[String]| -> CapsHashSet {
        names
            .iter()
            .filter_map(|name| Capability::from_str(name).ok())
            .collect()
    };
    let caps = &process.capabilities;
    let bounding = wanted(&caps.bounding);
    // Dropping from the bounding set needs CAP_SETPCAP, so it comes before the user change.
    for cap in caps::all() {
        if !bounding.contains(&cap) {
            // A capability the guest kernel does not know cannot be in its bounding set.
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    // Keep the permitted set across the change of uid; the sets are then narrowed explicitly.
    nix::sys::prctl::set_keepcaps(true).map_err(|e| format!("keep capabilities: {e}"))?;
    let gids: Vec<Gid> = process
        .additional_gids
        .iter()
        .copied()
        .map(Gid::from_raw)
        .collect();
    nix::unistd::setgroups(&gids).map_err(|e| {
        format!(
            "set supplementary groups {:?}: {e}",
            process.additional_gids
        )
    })?;
    let gid = Gid::from_raw(process.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("set gid {gid}: {e}"))?;
    let uid = Uid::from_raw(process.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("set uid {uid}: {e}"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(|e| format!("clear keep capabilities: {e}"))?;

    // Inheritable first, while permitted still holds everything; effective must stay a subset
    // of permitted at every step.
    set(CapSet::Inheritable, &wanted(&caps.inheritable))?;
    set(CapSet::Effective, &wanted(&caps.effective))?;
    set(CapSet::Permitted, &wanted(&caps.permitted))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("clear ambient capabilities: {e}"))?;
    for cap in wanted(&caps.ambient) {
        // runc only warns when a cap is not also inheritable and permitted; so does runq.
        if let Err(e) = caps::raise(None, CapSet::Ambient, cap) {
            crate::console::debug(&format!("ambient capability {cap} not raised: {e}"));
        }
    }
    Ok(())
}

fn set(set: CapSet, caps: &HashSet<Capability>) -> Result<(), String> {
    caps::set(None, set, caps).map_err(|e| format!("set {set:?} capabilities: {e}"))
}

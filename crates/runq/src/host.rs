//! What this host offers the runtime: where the assets are and which accelerator works.

use std::path::{Path, PathBuf};

use crate::options::{AccelChoice, RunqOptions};
use runq_shared::config::Accel;
use runq_shared::layout::{assets, ASSETS_SUBDIR, DEFAULT_INSTALL_ROOT, PROXY};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum HostError {
    #[error(
        "runq assets are missing in {dir}: {missing} not found (run `make install`, or point \
         --assets at an installed assets directory)"
    )]
    MissingAsset { dir: PathBuf, missing: String },
    #[error("{what} {path} does not exist")]
    MissingFile { what: &'static str, path: PathBuf },
    #[error("--accel kvm was asked for, but KVM is not usable here: {0}")]
    NoKvm(String),
}

/// The assets directory: `--assets`, else `$RUNQ_ROOT/qemu`, else `qemu/` beside the runq
/// binary (an install keeps them together), else the default install root.
pub fn assets_dir(options: &RunqOptions) -> PathBuf {
    if let Some(dir) = &options.assets {
        return dir.clone();
    }
    if std::env::var_os("RUNQ_ROOT").is_some_and(|r| !r.is_empty()) {
        return runq_shared::layout::installed_assets();
    }
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(ASSETS_SUBDIR)))
        .filter(|dir| dir.join(PROXY).exists())
    {
        return beside;
    }
    Path::new(DEFAULT_INSTALL_ROOT).join(ASSETS_SUBDIR)
}

pub fn check_assets(dir: &Path, options: &RunqOptions) -> Result<(), HostError> {
    let mut needed = vec![PROXY, assets::LOADER, assets::QEMU, assets::VIRTIOFSD];
    if options.kernel.is_none() {
        needed.push(assets::KERNEL);
    }
    if options.initrd.is_none() {
        needed.push(assets::INITRD);
    }
    if let Some(missing) = needed.into_iter().find(|p| !dir.join(p).exists()) {
        return Err(HostError::MissingAsset {
            dir: dir.to_path_buf(),
            missing: missing.to_string(),
        });
    }
    for (what, path) in [("kernel", &options.kernel), ("initrd", &options.initrd)] {
        if let Some(path) = path {
            if !path.is_file() {
                return Err(HostError::MissingFile {
                    what,
                    path: path.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Why KVM cannot be used here, or `None` when it can.
pub fn kvm_unusable() -> Option<String> {
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Some("/dev/kvm is PVM (kvm_pvm), which cannot boot a stock kernel".into());
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) => Some(format!("/dev/kvm: {e}")),
    }
}

/// The accelerator, and the one-line warning when falling back to TCG.
pub fn choose_accel(choice: AccelChoice) -> Result<(Accel, Option<String>), HostError> {
    match (choice, kvm_unusable()) {
        (AccelChoice::Tcg, _) => Ok((Accel::Tcg, None)),
        (AccelChoice::Kvm, None) | (AccelChoice::Auto, None) => Ok((Accel::Kvm, None)),
        (AccelChoice::Kvm, Some(why)) => Err(HostError::NoKvm(why)),
        (AccelChoice::Auto, Some(why)) => Ok((
            Accel::Tcg,
            Some(format!(
                "KVM unusable ({why}); running the VM under TCG emulation"
            )),
        )),
    }
}

pub fn has_tun() -> bool {
    Path::new("/dev/net/tun").exists()
}

/// The major number the kernel gave macvtap's character devices, if it has macvtap.
pub fn macvtap_major() -> Option<i64> {
    let devices = std::fs::read_to_string("/proc/devices").ok()?;
    character_major(&devices, "macvtap")
}

/// Finds a driver in the "Character devices:" part of /proc/devices.
fn character_major(devices: &str, driver: &str) -> Option<i64> {
    devices
        .lines()
        .skip_while(|line| !line.starts_with("Character devices"))
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.trim().split_once(' '))
        .find(|(_, name)| name.trim() == driver)
        .and_then(|(number, _)| number.parse().ok())
}

/// The limits runq itself runs with: what runc would hand an application whose spec sets
/// none (they come from the engine), and so what the guest gives it.
pub fn own_rlimits() -> Vec<runq_shared::config::Rlimit> {
    runq_shared::rlimits::RLIMITS
        .iter()
        .filter_map(|(name, resource)| {
            let mut value = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes the struct we own.
            (unsafe { libc::getrlimit(*resource, &mut value) } == 0).then(|| {
                runq_shared::config::Rlimit {
                    kind: name.to_string(),
                    soft: value.rlim_cur,
                    hard: value.rlim_max,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::character_major;

    const DEVICES: &str = "Character devices:\n  1 mem\n 10 misc\n246 macvtap\n\nBlock \
                           devices:\n  7 loop\n247 macvtap\n";

    #[test]
    fn finds_a_character_driver_only_among_character_devices() {
        assert_eq!(character_major(DEVICES, "macvtap"), Some(246));
        assert_eq!(character_major(DEVICES, "misc"), Some(10));
        assert_eq!(character_major(DEVICES, "loop"), None);
        assert_eq!(character_major("", "macvtap"), None);
    }
}

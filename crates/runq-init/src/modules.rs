//! Loads the kernel modules the initrd carries, in the order the asset builder resolved from
//! modules.dep (dependencies first), and only those this container needs: under TCG each
//! module costs milliseconds to relocate and check, and a plain virtio-fs container needs
//! half of what the initrd holds.

use std::fs::File;
use std::os::fd::AsRawFd;

use runq_shared::config::{GuestBoot, RootFs};

use crate::console;
use crate::error::{Context, InitError};

const LOAD_LIST: &str = "/modules.load";

/// Modules for a feature, by file name without `.ko`; each group after its dependencies.
/// Modules of no group (added with `RUNQ_INITRD_EXTRA_MODULES`) load with the transport.
const VIRTIOFS: &[&str] = &["fuse", "virtiofs"];
const NINEP: &[&str] = &["netfs", "fscache", "9pnet", "9pnet_virtio", "9p"];
const NET: &[&str] = &["failover", "net_failover", "virtio_net"];
const BLOCK: &[&str] = &["virtio_blk"];
/// Not needed to boot, so bound once the application runs (and loaded then, where no template
/// loaded them): free page reporting (pages the guest touched and freed again go back to the
/// host) and the entropy device (the kernel's generator is seeded from the CPU's RDRAND long
/// before).
const LATE: &[&str] = &["virtio_balloon", "virtio-rng"];
const FEATURES: &[&[&str]] = &[VIRTIOFS, NINEP, NET, BLOCK, LATE];

/// What the control channel needs: the virtio transport and the serial port, plus any
/// module of no feature group.
pub fn load_transport() -> Result<(), InitError> {
    load_matching(|name| !FEATURES.iter().any(|group| group.contains(&name)))?;
    console::debug("transport modules loaded");
    Ok(())
}

/// Whether a virtio driver binds its devices as it loads ("1", the kernel's default) or
/// only when asked on [`DRIVERS_PROBE`].
const AUTOPROBE: &str = "/sys/bus/virtio/drivers_autoprobe";
const DRIVERS_PROBE: &str = "/sys/bus/virtio/drivers_probe";
const VIRTIO_DEVICES: &str = "/sys/bus/virtio/devices";

/// In a template's guest (`runq.template=` on the command line): the named features'
/// modules, drivers included, loaded with the virtio bus's autoprobe off, and then only the
/// NICs bound. The root's device stays unbound (a vhost-user-fs device in use cannot be
/// migrated), and so does every other; a restored guest binds them (see
/// [`bind_waiting_devices`]) instead of loading and relocating drivers under TCG. The NICs
/// migrate bound: the template's backends are of the container's kind (see
/// `runq_shared::template::Shape::nic_stream`), and the guest gives them the container's
/// MACs. Their groups are marked loaded: the restored guest, which continues this process,
/// skips them without reading the load list (~13 ms under TCG).
pub fn load_template_libraries(cmdline: &str, loaded: &mut Loaded) -> Result<(), InitError> {
    let groups: Vec<&[&str]> = named_features(cmdline, runq_shared::layout::TEMPLATE_PARAM)
        .into_iter()
        .filter_map(group_named)
        .collect();
    if groups.is_empty() {
        return Ok(());
    }
    std::fs::write(AUTOPROBE, "0").context(|| format!("write {AUTOPROBE}"))?;
    load_groups(groups, loaded)?;
    // Relocated here once, not in every container: ~70 ms of CPU under TCG each, which ten
    // containers started at once would queue for. [`load_late`] binds their devices.
    load_matching(|name| LATE.contains(&name))?;
    bind_unbound(|kind| kind == VIRTIO_ID_NET)
}

/// Whether this guest is a template's (its features named by `runq.template=`).
pub fn is_template(cmdline: &str) -> bool {
    !named_features(cmdline, runq_shared::layout::TEMPLATE_PARAM).is_empty()
}

/// The features the kernel parameter `param` (`param=a,b`) names.
fn named_features<'a>(cmdline: &'a str, param: &str) -> Vec<&'a str> {
    cmdline
        .split_whitespace()
        .filter_map(|word| word.strip_prefix(param)?.strip_prefix('='))
        .flat_map(|list| list.split(','))
        .collect()
}

/// Virtio device IDs, as sysfs shows them: a network card, and every device whose driver a
/// feature group loads (network, block, 9p, virtio-fs).
const VIRTIO_ID_NET: &str = "0x0001";
const FEATURE_DEVICE_IDS: &[&str] = &[VIRTIO_ID_NET, "0x0002", "0x0009", "0x001a"];
/// The devices of the [`LATE`] drivers: the entropy source and the balloon.
const LATE_DEVICE_IDS: &[&str] = &["0x0004", "0x0005"];

/// In a guest restored from a template: autoprobe on again, and every device the loaded
/// drivers left unbound bound now. The kernel's default, so a booted guest skips it.
fn bind_waiting_devices() -> Result<(), InitError> {
    if std::fs::read_to_string(AUTOPROBE).is_ok_and(|value| value.trim() == "1") {
        return Ok(());
    }
    std::fs::write(AUTOPROBE, "1").context(|| format!("write {AUTOPROBE}"))?;
    // The balloon's and the entropy source's devices are bound later (see `load_late`): the
    // application comes first.
    bind_unbound(|kind| FEATURE_DEVICE_IDS.contains(&kind))
}

/// Binds the unbound virtio devices whose device ID `wanted` takes.
fn bind_unbound(wanted: impl Fn(&str) -> bool) -> Result<(), InitError> {
    let devices = std::fs::read_dir(VIRTIO_DEVICES).context(|| format!("read {VIRTIO_DEVICES}"))?;
    for device in devices.flatten() {
        let path = device.path();
        let kind = std::fs::read_to_string(path.join("device")).unwrap_or_default();
        if path.join("driver").exists() || !wanted(kind.trim()) {
            continue;
        }
        let _ = std::fs::write(DRIVERS_PROBE, device.file_name().as_encoded_bytes());
    }
    Ok(())
}

/// Feature groups already loaded.
#[derive(Default)]
pub struct Loaded(Vec<&'static [&'static str]>);

/// The groups the proxy named on the kernel command line (`runq.modules=`), loaded while
/// the config travels; [`load_for`] then finds them done.
pub fn load_hinted(cmdline: &str, loaded: &mut Loaded) -> Result<(), InitError> {
    let named = named_features(cmdline, runq_shared::layout::MODULES_PARAM)
        .into_iter()
        .filter_map(group_named);
    load_groups(named.collect(), loaded)
}

/// What the container's config asks for: its root's file system, NICs and disks.
pub fn load_for(boot: &GuestBoot, loaded: &mut Loaded) -> Result<(), InitError> {
    let config = &boot.config;
    let wanted = wanted_groups(
        config.root_fs,
        !boot.host.network.nics.is_empty(),
        !config.disks.is_empty() || config.root_disk.is_some(),
    );
    load_groups(wanted, loaded)?;
    bind_waiting_devices()?;
    console::debug("modules loaded");
    Ok(())
}

fn group_named(feature: &str) -> Option<&'static [&'static str]> {
    match feature {
        "virtiofs" => Some(VIRTIOFS),
        "9p" => Some(NINEP),
        "net" => Some(NET),
        "block" => Some(BLOCK),
        _ => None,
    }
}

fn load_groups(groups: Vec<&'static [&'static str]>, loaded: &mut Loaded) -> Result<(), InitError> {
    let new: Vec<_> = groups
        .into_iter()
        .filter(|group| !loaded.0.contains(group))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    load_matching(|name| new.iter().any(|group| group.contains(&name)))?;
    loaded.0.extend(new);
    Ok(())
}

/// What can wait until the application runs; a failure only costs memory, so it is logged.
/// Called by the relay a while after the application started (see `relay::LATE_MODULES_AFTER`).
pub fn load_late() {
    // Lowest priority while they load: on a one-CPU guest the application comes first.
    // SAFETY: setpriority with who = 0 changes only the calling thread's nice value.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    // Loaded (and left unbound) in the template a guest was restored from: then only bound.
    let loaded_and_bound = load_matching(|name| LATE.contains(&name))
        .and_then(|()| bind_unbound(|kind| LATE_DEVICE_IDS.contains(&kind)));
    if let Err(error) = loaded_and_bound {
        console::log(&format!("{error}"));
    }
    // SAFETY: as above; PID 1 keeps CAP_SYS_NICE, which raising the priority again needs.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 0) };
}

fn wanted_groups(root_fs: RootFs, nics: bool, disks: bool) -> Vec<&'static [&'static str]> {
    let mut groups = vec![match root_fs {
        RootFs::Virtiofs => VIRTIOFS,
        RootFs::NineP { .. } => NINEP,
    }];
    if nics {
        groups.push(NET);
    }
    if disks {
        groups.push(BLOCK);
    }
    groups
}

fn load_matching(wanted: impl Fn(&str) -> bool) -> Result<(), InitError> {
    let list = std::fs::read_to_string(LOAD_LIST).context(|| format!("read {LOAD_LIST}"))?;
    for path in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if wanted(module_name(path)) {
            load(path)?;
        }
    }
    Ok(())
}

/// The guest kernel's release, which names its module directory.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn module_name(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".ko").unwrap_or(file)
}

pub fn load(path: &str) -> Result<(), InitError> {
    // Loaded in the template this guest was restored from: reading it again costs time.
    let loaded = format!("/sys/module/{}", module_name(path).replace('-', "_"));
    if std::path::Path::new(&loaded).exists() {
        return Ok(());
    }
    let file = File::open(path).context(|| format!("open module {path}"))?;
    let params = c"";
    // SAFETY: finit_module reads the module from a file descriptor we own for the duration
    // of the call and a NUL-terminated, empty parameter string; no memory is shared.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc != 0 {
        let errno = nix::errno::Errno::last();
        if errno != nix::errno::Errno::EEXIST {
            return Err(InitError::Sys {
                what: format!("load module {path}"),
                source: errno,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_come_from_the_file_name() {
        assert_eq!(
            module_name("/lib/modules/6.1.0/kernel/fs/fuse/virtiofs.ko"),
            "virtiofs"
        );
        assert_eq!(module_name("virtio-rng.ko"), "virtio-rng");
    }

    #[test]
    fn only_the_groups_the_container_uses_are_loaded() {
        assert_eq!(wanted_groups(RootFs::Virtiofs, false, false), [VIRTIOFS]);
        let ninep = RootFs::NineP {
            cache: runq_shared::config::NinePCache::Mmap,
        };
        assert_eq!(wanted_groups(ninep, true, true), [NINEP, NET, BLOCK]);
    }

    #[test]
    fn every_feature_the_proxy_may_name_has_a_group() {
        for feature in runq_shared::layout::MODULE_FEATURES {
            assert!(group_named(feature).is_some(), "{feature}");
        }
        assert!(group_named("floppy").is_none());
    }

    #[test]
    fn groups_already_loaded_are_not_loaded_again() {
        let mut loaded = Loaded(vec![VIRTIOFS, NET]);
        // Nothing new: returns before it even reads the load list, which is not here.
        assert!(load_groups(vec![NET, VIRTIOFS], &mut loaded).is_ok());
        assert!(load_groups(vec![BLOCK], &mut loaded).is_err());
        assert_eq!(loaded.0, [VIRTIOFS, NET]);
    }

    #[test]
    fn transport_modules_are_those_of_no_group() {
        let grouped = |name: &str| FEATURES.iter().any(|group| group.contains(&name));
        assert!(!grouped("virtio_mmio") && !grouped("virtio_console"));
        assert!(grouped("virtiofs") && grouped("virtio_net") && grouped("9p"));
    }
}

//! The spec rewrite: a pure function from the engine's OCI spec, runq's options and the host's
//! facts to the spec runc runs (the proxy as the container's process) and the VM config (the
//! original process and everything the guest applies).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::options::{FsKind, NetMode, OptionError, RunqOptions};
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxPidsBuilder, Mount, MountBuilder, Process,
    Spec, UserBuilder,
};
use runq_shared::config::{
    Accel, Capabilities, GuestBind, GuestConfig, GuestMount, HostConfinement, ProcessConfig,
    Rlimit, RootDisk, RootFs, VmConfig, VmSettings,
};
use runq_shared::disks::{DiskError, DiskSpec, FsType, VmDisk};
use runq_shared::layout::{self, own_root, ASSETS_IN_CONTAINER, PROXY, RUNQ_DIR};
use thiserror::Error;

const TUN_PATH: &str = "/dev/net/tun";

/// Guest memory when neither runq nor the engine says otherwise.
pub const DEFAULT_MEM_MIB: u32 = 256;

/// The host-side tasks of a container where the operator set no pids limit: an idle
/// container has 13 (proxy 6, QEMU 3, virtiofsd 4), QEMU's I/O pool may add 64.
pub const DEFAULT_PIDS_LIMIT: i64 = 512;

/// What QEMU, virtiofsd and the proxy use beside guest memory, added to a memory limit: TCG's
/// translation cache and QEMU's own heap are most of it.
pub const VMM_OVERHEAD_MIB: u32 = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub assets_dir: PathBuf,
    pub accel: Accel,
    pub tun: bool,
    /// The macvtap character devices' major number, where the host kernel has macvtap.
    pub macvtap_major: Option<i64>,
    /// The runtime's own limits, which the application inherits under runc for every
    /// resource its spec leaves out.
    pub rlimits: Vec<Rlimit>,
    /// Where runq keeps the device nodes it makes for the mapped roots of user namespaces.
    pub node_dir: PathBuf,
}

/// A /dev/net/tun node owned by a user namespace's mapped root, which runc binds at
/// /dev/net/tun in the container: runc would bind the host's node, which only the host's
/// root may open where it is mode 0600. Opened from the container, the tun device makes its
/// taps in the container's network namespace, which the mapped root owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunNode {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct Rewritten {
    pub spec: Spec,
    pub vm: VmConfig,
    /// The node runq create must make before runc binds it.
    pub tun_node: Option<TunNode>,
    /// Start the VM from a template where there is one (`--template`, `RUNQ_TEMPLATE`).
    pub template: bool,
}

#[derive(Debug, Error)]
pub enum RewriteError {
    #[error("config.json has no process to run")]
    NoProcess,
    #[error("config.json: process.args is empty")]
    NoArgs,
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error("config.json: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("config.json: {0}")]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(
        "the host's network (--network host) cannot be given to a runq container: the VM has \
         its own kernel and network stack; use a bridge or macvlan network"
    )]
    HostNetwork,
    #[error(
        "runq cannot join the network namespace {0}: it is the host's (--network host), and \
         the VM has its own kernel and network stack; use a bridge or macvlan network"
    )]
    HostsNamespace(String),
    #[error(
        "--net macvtap (RUNQ_NET=macvtap): this host's kernel has no macvtap (no \"macvtap\" \
         in /proc/devices); use --net tap"
    )]
    NoMacvtap,
    #[error(
        "--net macvtap (RUNQ_NET=macvtap) cannot work in a user namespace: the proxy makes the \
         macvtap device nodes, and mknod is refused there; use --net tap"
    )]
    MacvtapInUserNamespace,
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(
        "config.json: device {0}: runq makes device nodes at absolute paths without \"..\" \
         and numbers of at least 0"
    )]
    DevicePath(String),
    #[error("config.json: device {0}: type \"a\" is for device cgroup rules, not for a node")]
    DeviceType(String),
    #[error(
        "device {path} (block {major}:{minor}): a host block device is not a device of the \
         guest kernel, whose disks are virtio's; hand it to the VM as a runq disk: \
         --device HOSTDEVICE:/dev/runq/<id>/<cache> (see the README's runq disks)"
    )]
    HostBlockDevice {
        path: String,
        major: i64,
        minor: i64,
    },
    #[error(
        "RUNQ_ROOTDISK={0}: no runq disk has that id; add one with \
         -v FILE:/dev/runq/{0}/<cache> or --device BLKDEV:/dev/runq/{0}/<cache>"
    )]
    RootDisk(String),
    #[error(
        "config.json: the process's arguments, environment and mounts take {0} MiB; runq hands \
         the guest at most 16 MiB"
    )]
    TooLarge(usize),
    #[error("RUNQ_ROOTDISK={0}: a root disk holds ext2 or ext4, not {1}")]
    RootDiskFs(String, &'static str),
    #[error(
        "{variable}={value} asks for more than the operator allows ({limit} {unit}, from \
         {set_by}): the container's environment, which includes the image's ENV, may lower \
         {unit} below the operator's setting but never raise it"
    )]
    AboveOperator {
        variable: &'static str,
        value: u32,
        limit: u32,
        unit: &'static str,
        set_by: &'static str,
    },
    #[error(
        "config.json: {0} startContainer hook(s): runq refuses them, since runc would run them \
         from the container's root, which under runq is outside the VM: a binary of the \
         image's on the host side; the other hooks run as under runc"
    )]
    StartContainerHooks(usize),
    #[error(
        "{variable}={value} is refused: the container's environment, which includes the \
         image's ENV, may not choose it ({why}); the operator sets it with runq's --{option} \
         (a runtime's runtimeArgs) or, for one container, the annotation \
         run.runq.{option}={value} (podman run --annotation; docker run --annotation from \
         Docker 24)"
    )]
    OperatorOnly {
        variable: &'static str,
        value: String,
        why: &'static str,
        option: &'static str,
    },
}

/// What the engine's resources say of the VM's size.
struct EngineLimits {
    /// The memory limit, in MiB.
    mem_mib: Option<u32>,
    /// The CPU quota, rounded up to whole CPUs.
    cpus: Option<u32>,
    /// The number of CPUs in the cpuset.
    cpuset_cpus: Option<u32>,
}

impl EngineLimits {
    fn of(spec: &Spec) -> EngineLimits {
        let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        let cpu = resources.and_then(|r| r.cpu().as_ref());
        EngineLimits {
            mem_mib: resources
                .and_then(|r| r.memory().as_ref())
                .and_then(|m| m.limit())
                .filter(|limit| *limit > 0)
                .map(|limit| u32::try_from(limit >> 20).unwrap_or(u32::MAX)),
            cpus: cpu.and_then(|cpu| match (cpu.quota(), cpu.period()) {
                (Some(quota), Some(period)) if quota > 0 && period > 0 => {
                    Some((quota as u64).div_ceil(period) as u32)
                }
                _ => None,
            }),
            cpuset_cpus: cpu
                .and_then(|cpu| cpu.cpus().as_deref())
                .and_then(count_cpus),
        }
    }
}

/// The container's environment (the image's ENV and the engine's `-e` alike) may choose less
/// guest memory or fewer vCPUs than the operator set (runtimeArgs, `docker -m`, `--cpus`,
/// `--cpuset-cpus`), never more: more memory would raise the container's memory limit with it.
/// What weakens the host side (the 9p file server, QEMU's CPU model) only the operator picks.
fn check_env_bounds(
    spec: &Spec,
    operator: &RunqOptions,
    effective: &RunqOptions,
) -> Result<(), RewriteError> {
    if effective.fs == FsKind::NineP && operator.fs != FsKind::NineP {
        return Err(RewriteError::OperatorOnly {
            variable: "RUNQ_FS",
            value: "9p".into(),
            why: "9p's file server runs inside QEMU, which then keeps more of the host's \
                  privileges than with virtiofsd",
            option: "fs",
        });
    }
    if effective.cpu_model != operator.cpu_model {
        return Err(RewriteError::OperatorOnly {
            variable: "RUNQ_CPUARGS",
            value: effective.cpu_model.clone().unwrap_or_default(),
            why: "QEMU's CPU model decides how much of the host's CPU the guest reaches",
            option: "cpuargs",
        });
    }
    let engine = EngineLimits::of(spec);
    let check = |variable: &'static str,
                 unit: &'static str,
                 value: Option<u32>,
                 operator_value: Option<u32>,
                 limits: &[(Option<u32>, &'static str)]| {
        let Some(value) = value.filter(|_| value != operator_value) else {
            return Ok(());
        };
        let lowest = limits
            .iter()
            .filter_map(|(limit, set_by)| limit.map(|limit| (limit, *set_by)))
            .min_by_key(|(limit, _)| *limit);
        match lowest {
            Some((limit, set_by)) if value > limit => Err(RewriteError::AboveOperator {
                variable,
                value,
                limit,
                unit,
                set_by,
            }),
            _ => Ok(()),
        }
    };
    check(
        "RUNQ_MEM",
        "MiB",
        effective.mem_mib,
        operator.mem_mib,
        &[
            (operator.mem_mib, "runq's --mem"),
            (engine.mem_mib, "the container's memory limit (docker -m)"),
        ],
    )?;
    check(
        "RUNQ_CPU",
        "vCPUs",
        effective.cpus,
        operator.cpus,
        &[
            (operator.cpus, "runq's --cpu"),
            (engine.cpus, "the container's CPU quota (docker --cpus)"),
            (
                engine.cpuset_cpus,
                "the container's cpuset (docker --cpuset-cpus)",
            ),
        ],
    )
}

pub fn rewrite(
    original: &Spec,
    options: &RunqOptions,
    host: &HostFacts,
) -> Result<Rewritten, RewriteError> {
    let process = original.process().as_ref().ok_or(RewriteError::NoProcess)?;
    if process.args().as_ref().is_none_or(|args| args.is_empty()) {
        return Err(RewriteError::NoArgs);
    }
    let start_hooks = original
        .hooks()
        .as_ref()
        .and_then(|hooks| hooks.start_container().as_ref())
        .map_or(0, Vec::len);
    if start_hooks > 0 {
        return Err(RewriteError::StartContainerHooks(start_hooks));
    }
    let placement = network_placement(original)?;
    let mut operator = options.clone();
    if let Some(annotations) = original.annotations() {
        operator.apply_annotations(annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    }
    let mut options = operator.clone();
    options.apply_env(process.env().as_deref().unwrap_or_default())?;
    check_env_bounds(original, &operator, &options)?;
    if placement == NetworkPlacement::Joined {
        // The interfaces serve every container in the namespace; no VM may take them over.
        options.net = NetMode::Shared;
    }
    let mut effective = original.clone();
    add_runq_tmpfs(&mut effective, &options)?;
    // From here on, "original" includes runq's own tmpfs mounts.
    let original = &effective;
    if options.net == NetMode::Macvtap && host.macvtap_major.is_none() {
        return Err(RewriteError::NoMacvtap);
    }
    if options.net == NetMode::Macvtap && has_user_namespace(original) {
        return Err(RewriteError::MacvtapInUserNamespace);
    }

    let mut guest = guest_config(original, process, &options);
    let devices = devices::for_guest(original)?;
    guest.devices = devices.nodes;
    guest.name_driverless_devices = devices.named_one_by_one;
    for inherited in &host.rlimits {
        if !guest
            .process
            .rlimits
            .iter()
            .any(|r| r.kind == inherited.kind)
        {
            guest.process.rlimits.push(inherited.clone());
        }
    }
    guest.seccomp = original
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(crate::seccomp::compile)
        .transpose()?;
    // The guest config travels to the guest in one frame of the control channel.
    let size = serde_json::to_vec(&guest).map_or(0, |json| json.len());
    if size > runq_shared::protocol::MAX_FRAME_LEN - 4096 {
        return Err(RewriteError::TooLarge(size >> 20));
    }
    let disks = runq_disks(original)?;
    guest.disks = disks.iter().map(|(_, disk)| disk.clone()).collect();
    guest.binds = guest_binds(original);
    if let Some(id) = &options.root_disk {
        let disk = guest
            .disks
            .iter()
            .find(|d| &d.id == id)
            .ok_or_else(|| RewriteError::RootDisk(id.clone()))?;
        if let Some((fstype, _)) = &disk.mount {
            if !matches!(fstype, FsType::Ext2 | FsType::Ext4) {
                return Err(RewriteError::RootDiskFs(id.clone(), fstype.as_str()));
            }
        }
        guest.root_disk = Some(RootDisk {
            id: id.clone(),
            exclude: options.root_disk_exclude.clone(),
        });
    }
    let mut vm = VmConfig {
        vm: vm_settings(original, &options, host),
        guest,
    };
    vm.vm.confinement = host_confinement(original)?;
    vm.vm.disks = disks
        .into_iter()
        .map(|(path, disk)| VmDisk {
            path,
            format: disk.format,
            cache: disk.cache,
        })
        .collect();
    let tun_node = tun_node(original, &options, host);
    let spec = host_spec(
        original,
        process,
        &options,
        host,
        tun_node.as_ref(),
        vm.vm.mem_mib,
    )?;
    Ok(Rewritten {
        spec,
        vm,
        tun_node,
        template: options.template,
    })
}

/// Whose network namespace the container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetworkPlacement {
    /// Its own: runc makes a fresh one when the spec names no path; Podman and CNI prepare a
    /// named one (`/run/netns/NAME`) for the container. The proxy takes its interfaces over.
    Own,
    /// One other containers share: another container's (`docker run --network container:X`,
    /// named by its process, `/proc/PID/ns/net`), or a Kubernetes pod's (CRI names it by the
    /// sandbox's process). The VM reaches it through passt and mirrors localhost.
    Joined,
}

/// Never the host's namespace: the VM has its own kernel and network stack.
fn network_placement(spec: &Spec) -> Result<NetworkPlacement, RewriteError> {
    let network = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|namespaces| {
            namespaces
                .iter()
                .find(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        });
    let Some(network) = network else {
        return Err(RewriteError::HostNetwork);
    };
    match network.path() {
        None => Ok(NetworkPlacement::Own),
        Some(path) if is_hosts_netns(path) => {
            Err(RewriteError::HostsNamespace(path.display().to_string()))
        }
        Some(path) if is_named_netns(path) && !crate::sandbox::is_pod_application(spec) => {
            Ok(NetworkPlacement::Own)
        }
        Some(_) => Ok(NetworkPlacement::Joined),
    }
}

fn is_named_netns(path: &Path) -> bool {
    ["/run/netns", "/var/run/netns"]
        .iter()
        .any(|dir| path.parent() == Some(Path::new(dir)))
}

/// Whether `path` is the namespace runq itself runs in: the host's.
fn is_hosts_netns(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let identity = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    match (identity(path), identity(Path::new("/proc/self/ns/net"))) {
        (Some(named), Some(own)) => named == own,
        _ => false,
    }
}

fn vm_settings(spec: &Spec, options: &RunqOptions, host: &HostFacts) -> VmSettings {
    let engine = EngineLimits::of(spec);
    let engine_mem = engine
        .mem_mib
        .map(|mib| mib.max(crate::options::MIN_MEM_MIB));
    VmSettings {
        cpus: options
            .cpus
            .or(engine.cpus)
            .or(engine.cpuset_cpus)
            .unwrap_or(1)
            .max(1),
        mem_mib: options.mem_mib.or(engine_mem).unwrap_or(DEFAULT_MEM_MIB),
        accel: host.accel,
        cpu_model: options.cpu_model.clone(),
        root_fs: root_fs(options),
        net: options.net,
        disks: Vec::new(),
        boot_timeout_secs: options.boot_timeout_secs,
        nested_vm: options.nested_vm,
        debug: options.debug,
        kernel: options
            .kernel
            .as_ref()
            .map(|_| own_root::KERNEL.to_string()),
        initrd: options
            .initrd
            .as_ref()
            .map(|_| own_root::INITRD.to_string()),
        timeline_origin_ns: options.timeline.then(runq_shared::timeline::wall_clock_ns),
        confinement: HostConfinement::default(),
        noexec: options.noexec,
        dns: if options.dns_preserve {
            Default::default()
        } else {
            runq_shared::dns::DnsSettings {
                nameservers: options.dns.clone(),
                search: options.dns_search.clone(),
                options: options.dns_opts.clone(),
            }
        },
        mirror: options.mirror,
        // Found by runq create on the host, once the rewrite is done (see `templates`).
        templates: Vec::new(),
    }
}

/// The tun node a container in a user namespace needs: one per mapped root, shared by the
/// containers of one mapping (Docker's userns-remap maps them all alike).
fn tun_node(spec: &Spec, options: &RunqOptions, host: &HostFacts) -> Option<TunNode> {
    if !host.tun || options.net != NetMode::Tap || !has_user_namespace(spec) {
        return None;
    }
    let linux = spec.linux().as_ref()?;
    let root_of = |mappings: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        mappings
            .iter()
            .flatten()
            .find_map(|m| (m.container_id() == 0 && m.size() > 0).then_some(m.host_id()))
    };
    let (uid, gid) = (
        root_of(linux.uid_mappings())?,
        root_of(linux.gid_mappings())?,
    );
    Some(TunNode {
        path: host.node_dir.join(format!("tun-{uid}-{gid}")),
        uid,
        gid,
    })
}

fn has_user_namespace(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|namespaces| {
            namespaces
                .iter()
                .any(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::User)
        })
}

/// The engine's confinement that runc cannot put on the proxy before its setup, for the
/// proxy to put on itself after it (see runq-proxy's `confine`), and runq's filter.
fn host_confinement(spec: &Spec) -> Result<HostConfinement, RewriteError> {
    let linux = spec.linux().as_ref();
    Ok(HostConfinement {
        readonly_paths: linux
            .and_then(|l| l.readonly_paths().clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|path| {
                let path = Path::new(path);
                path.starts_with("/proc") || path.starts_with("/sys")
            })
            .collect(),
        apparmor_profile: spec
            .process()
            .as_ref()
            .and_then(|p| p.apparmor_profile().clone()),
        seccomp: Some(crate::seccomp::host_side()?),
    })
}

/// The number of CPUs in a cpuset list such as `0-2,5`.
fn count_cpus(list: &str) -> Option<u32> {
    let mut count = 0u32;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        count += match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (first.parse::<u32>().ok()?, last.parse::<u32>().ok()?);
                last.checked_sub(first)? + 1
            }
            None => part.parse::<u32>().map(|_| 1).ok()?,
        };
    }
    (count > 0).then_some(count)
}

fn root_fs(options: &RunqOptions) -> RootFs {
    match options.fs {
        FsKind::Virtiofs => RootFs::Virtiofs,
        FsKind::NineP => RootFs::NineP {
            cache: options.ninep_cache,
        },
    }
}

/// The runq disks among the spec's bind mounts (files, `-v`) and devices (`--device`).
fn runq_disks(spec: &Spec) -> Result<Vec<(String, DiskSpec)>, DiskError> {
    let mounts = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().to_string_lossy().into_owned());
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
        .map(|d| d.path().to_string_lossy().into_owned());
    let paths: Vec<String> = mounts.chain(devices).collect();
    runq_shared::disks::parse_all(paths.iter().map(String::as_str))
}

/// Where the shared root has bind mounts: the spec's, outside /dev (a tmpfs of the guest's
/// own), and the guest kernel's module tree runq binds in.
fn guest_binds(spec: &Spec) -> Vec<GuestBind> {
    let mut binds: Vec<GuestBind> = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| guest_mount(m).is_none())
        .map(|m| GuestBind {
            destination: m.destination().to_string_lossy().into_owned(),
            options: bind_options(m),
            runqs_own: false,
        })
        .filter(|b| b.destination != "/dev" && !b.destination.starts_with("/dev/"))
        .collect();
    binds.push(GuestBind {
        destination: layout::MODULES_IN_CONTAINER.to_string(),
        options: Vec::new(),
        runqs_own: true,
    });
    binds
}

/// A bind's per-mount flags as runc leaves them: the spec's where it names any (runc then
/// remounts with exactly those), else those of the host's mount of the source, which the
/// bind inherits. Read on the host from the engine's source path.
fn bind_options(mount: &Mount) -> Vec<String> {
    const PER_MOUNT: [&str; 4] = ["ro", "nosuid", "nodev", "noexec"];
    let mut options = mount.options().clone().unwrap_or_default();
    if options.iter().any(|o| PER_MOUNT.contains(&o.as_str())) {
        return options;
    }
    let inherited = mount
        .source()
        .as_ref()
        .and_then(|source| nix::sys::statvfs::statvfs(source).ok())
        .map(|found| found.flags());
    if let Some(flags) = inherited {
        use nix::sys::statvfs::FsFlags;
        for (flag, option) in [
            (FsFlags::ST_RDONLY, "ro"),
            (FsFlags::ST_NOSUID, "nosuid"),
            (FsFlags::ST_NODEV, "nodev"),
            (FsFlags::ST_NOEXEC, "noexec"),
        ] {
            if flags.contains(flag) {
                options.push(option.to_string());
            }
        }
    }
    options
}

/// What the guest needs of an OCI process: the container's main one, or an exec's.
pub fn process_config(process: &Process) -> ProcessConfig {
    let user = process.user();
    ProcessConfig {
        args: process.args().clone().unwrap_or_default(),
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().to_string_lossy().into_owned(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        umask: user.umask(),
        terminal: process.terminal().unwrap_or(false),
        terminal_onlcr: true,
        capabilities: capabilities(process.capabilities().as_ref()),
        rlimits: process
            .rlimits()
            .iter()
            .flatten()
            .map(|limit| Rlimit {
                kind: limit.typ().to_string(),
                soft: limit.soft(),
                hard: limit.hard(),
            })
            .collect(),
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        oom_score_adj: process.oom_score_adj(),
    }
}

fn guest_config(spec: &Spec, process: &Process, options: &RunqOptions) -> GuestConfig {
    let linux = spec.linux().as_ref();
    GuestConfig {
        process: process_config(process),
        root_fs: root_fs(options),
        hostname: spec.hostname().clone(),
        mounts: spec
            .mounts()
            .iter()
            .flatten()
            .filter_map(guest_mount)
            .collect(),
        masked_paths: linux
            .and_then(|l| l.masked_paths().clone())
            .unwrap_or_default(),
        readonly_paths: linux
            .and_then(|l| l.readonly_paths().clone())
            .unwrap_or_default(),
        sysctl: linux
            .and_then(|l| l.sysctl().clone())
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        seccomp: None,
        runqenv: options.runqenv,
        systemd: options.systemd,
        disks: Vec::new(),
        root_disk: None,
        binds: Vec::new(),
        devices: Vec::new(),
        name_driverless_devices: false,
    }
}

/// runq's `--tmpfs` paths become tmpfs mounts of the spec itself (unless it has the path
/// already): on the host runc then makes their mount points before a read-only root is
/// sealed, and the guest mounts them like any other tmpfs.
fn add_runq_tmpfs(spec: &mut Spec, options: &RunqOptions) -> Result<(), RewriteError> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for path in &options.tmpfs {
        if !mounts.iter().any(|m| m.destination() == Path::new(path)) {
            mounts.push(
                MountBuilder::default()
                    .destination(path)
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(strings(&["nosuid", "nodev", "mode=1777"]))
                    .build()?,
            );
        }
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Bind mounts reach the guest through the shared root; everything else the guest mounts
/// itself. A bind under /dev would be hidden by the guest's /dev, so /dev/shm becomes a tmpfs.
fn guest_mount(mount: &Mount) -> Option<GuestMount> {
    let options = mount.options().clone().unwrap_or_default();
    let destination = mount.destination().to_string_lossy().into_owned();
    let is_bind = mount.typ().as_deref() == Some("bind")
        || options.iter().any(|o| o == "bind" || o == "rbind");
    if is_bind {
        if destination == "/dev/shm" {
            return Some(GuestMount {
                destination,
                fstype: "tmpfs".into(),
                source: "shm".into(),
                options: vec![
                    "nosuid".into(),
                    "noexec".into(),
                    "nodev".into(),
                    "mode=1777".into(),
                    "size=65536k".into(),
                ],
            });
        }
        return None;
    }
    let fstype = mount.typ().clone().unwrap_or_else(|| "none".into());
    Some(GuestMount {
        destination,
        source: mount
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| fstype.clone()),
        fstype,
        options,
    })
}

fn capabilities(caps: Option<&LinuxCapabilities>) -> Capabilities {
    let names = |set: &Option<oci_spec::runtime::Capabilities>| -> Vec<String> {
        let mut names: Vec<String> = set
            .iter()
            .flatten()
            .map(|cap| format!("CAP_{cap}"))
            .collect();
        names.sort();
        names
    };
    match caps {
        None => Capabilities::default(),
        Some(caps) => Capabilities {
            bounding: names(caps.bounding()),
            effective: names(caps.effective()),
            inheritable: names(caps.inheritable()),
            permitted: names(caps.permitted()),
            ambient: names(caps.ambient()),
        },
    }
}

/// What the proxy needs on the host side: virtiofsd switches credentials and creates files
/// as the guest asks; the proxy mounts, moves network interfaces, and pages the boot images
/// out of QEMU once the guest runs (`process_madvise` on another process needs SYS_NICE).
const PROXY_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::Setfcap,
    Capability::Mknod,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::SysAdmin,
    Capability::SysChroot,
    Capability::IpcLock,
    Capability::SysNice,
    Capability::AuditWrite,
];

fn host_spec(
    original: &Spec,
    process: &Process,
    options: &RunqOptions,
    host: &HostFacts,
    tun_node: Option<&TunNode>,
    mem_mib: u32,
) -> Result<Spec, RewriteError> {
    let mut spec = original.clone();

    let proxy_caps: oci_spec::runtime::Capabilities = PROXY_CAPABILITIES.iter().copied().collect();
    let mut proxy = process.clone();
    proxy.set_args(Some(vec![format!("{ASSETS_IN_CONTAINER}/{PROXY}")]));
    proxy.set_env(Some(vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    ]));
    proxy.set_cwd(PathBuf::from("/"));
    proxy.set_user(UserBuilder::default().uid(0u32).gid(0u32).build()?);
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(proxy_caps.clone()));
    caps.set_effective(Some(proxy_caps.clone()));
    caps.set_permitted(Some(proxy_caps));
    caps.set_inheritable(None);
    caps.set_ambient(None);
    proxy.set_capabilities(Some(caps));
    // Nothing on the host side ever needs to gain privileges through exec.
    proxy.set_no_new_privileges(Some(true));
    // The application's limits apply in the guest; on the host they would only starve QEMU
    // and virtiofsd (a small RLIMIT_NOFILE caps the files the guest can open).
    proxy.set_rlimits(None);
    proxy.set_apparmor_profile(None);
    proxy.set_selinux_label(None);
    spec.set_process(Some(proxy));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(
        MountBuilder::default()
            .destination(RUNQ_DIR)
            .typ("tmpfs")
            .source("tmpfs")
            .options(strings(&["nosuid", "nodev", "mode=0700", "size=16m"]))
            .build()?,
    );
    mounts.push(bind(&host.assets_dir, ASSETS_IN_CONTAINER)?);
    // The guest kernel's modules, where modprobe in the container looks for them.
    mounts.push(bind(
        &host.assets_dir.join(runq_shared::layout::assets::MODULES),
        layout::MODULES_IN_CONTAINER,
    )?);
    if let Some(kernel) = &options.kernel {
        mounts.push(bind(kernel, &own_root::in_container(own_root::KERNEL))?);
    }
    if let Some(initrd) = &options.initrd {
        mounts.push(bind(initrd, &own_root::in_container(own_root::INITRD))?);
    }
    if let Some(node) = tun_node {
        mounts.push(
            MountBuilder::default()
                .destination(TUN_PATH)
                .typ("bind")
                .source(&node.path)
                .options(strings(&["bind", "nosuid", "noexec"]))
                .build()?,
        );
    }
    spec.set_mounts(Some(mounts));

    let mut linux = spec.linux().clone().unwrap_or_default();
    // These protect the application, which now lives in the guest and gets them there.
    linux.set_seccomp(None);
    linux.set_readonly_paths(None);
    linux.set_mount_label(None);
    // The spec's own nodes are the guest's to make; runc makes runq's.
    let mut devices: Vec<LinuxDevice> = linux
        .devices()
        .iter()
        .flatten()
        .filter(|device| devices::is_runq_disk(device))
        .cloned()
        .collect();
    let mut allowed = Vec::new();
    let mut add_device = |path: &str, major: i64, minor: i64| -> Result<(), RewriteError> {
        if !devices
            .iter()
            .any(|d: &LinuxDevice| d.path() == Path::new(path))
        {
            devices.push(
                LinuxDeviceBuilder::default()
                    .path(path)
                    .typ(LinuxDeviceType::C)
                    .major(major)
                    .minor(minor)
                    .file_mode(0o666u32)
                    .uid(0u32)
                    .gid(0u32)
                    .build()?,
            );
        }
        allowed.push(allow_char_device(major, Some(minor))?);
        Ok(())
    };
    if host.tun && tun_node.is_none() {
        add_device(TUN_PATH, 10, 200)?;
    }
    if host.accel == Accel::Kvm {
        add_device("/dev/kvm", 10, 232)?;
    }
    if tun_node.is_some() {
        allowed.push(allow_char_device(10, Some(200))?);
    }
    // The proxy creates its macvtaps at start and makes their nodes itself: minors are
    // unknown until then.
    if let (NetMode::Macvtap, Some(major)) = (options.net, host.macvtap_major) {
        allowed.push(allow_char_device(major, None)?);
    }
    linux.set_devices(Some(devices));
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut rules: Vec<LinuxDeviceCgroup> = resources.devices().clone().unwrap_or_default();
    rules.extend(allowed);
    resources.set_devices(Some(rules));
    if let Some(memory) = resources.memory_mut() {
        let needed = i64::from(mem_mib + VMM_OVERHEAD_MIB) << 20;
        if memory
            .limit()
            .is_some_and(|limit| limit > 0 && limit < needed)
        {
            memory.set_limit(Some(needed));
        }
        if memory.swap().is_some_and(|swap| swap > 0 && swap < needed) {
            memory.set_swap(Some(needed));
        }
    }
    // The container's cgroup holds only the host side (proxy, QEMU, virtiofsd, passt): the
    // guest's processes are no host tasks. Where the operator set no limit, this one bounds
    // the threads a guest can make the host side start; an operator's limit covers them too.
    if resources
        .pids()
        .as_ref()
        .is_none_or(|pids| pids.limit() == 0)
    {
        resources.set_pids(Some(
            LinuxPidsBuilder::default()
                .limit(DEFAULT_PIDS_LIMIT)
                .build()?,
        ));
    }
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    Ok(spec)
}

fn bind(source: &Path, destination: &str) -> Result<Mount, RewriteError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(strings(&["rbind", "ro", "nosuid", "nodev"]))
        .build()?)
}

fn allow_char_device(major: i64, minor: Option<i64>) -> Result<LinuxDeviceCgroup, RewriteError> {
    let mut rule = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(LinuxDeviceType::C)
        .major(major)
        .access("rwm");
    if let Some(minor) = minor {
        rule = rule.minor(minor);
    }
    Ok(rule.build()?)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Makes the spec's bundle-relative paths (the root, bind mount sources) absolute, for a
/// spec that runc reads from another directory than the engine's bundle `bundle`.
pub fn anchor_paths(spec: &mut Spec, bundle: &Path) {
    if let Some(mut root) = spec.root().clone() {
        if root.path().is_relative() {
            root.set_path(bundle.join(root.path()));
            spec.set_root(Some(root));
        }
    }
    if let Some(mut mounts) = spec.mounts().clone() {
        for mount in &mut mounts {
            let is_bind = mount.typ().as_deref() == Some("bind")
                || mount
                    .options()
                    .iter()
                    .flatten()
                    .any(|o| o == "bind" || o == "rbind");
            if let (true, Some(source)) = (is_bind, mount.source().clone()) {
                if source.is_relative() {
                    mount.set_source(Some(bundle.join(source)));
                }
            }
        }
        spec.set_mounts(Some(mounts));
    }
}

/// The proxy's path inside the container (also what `runq exec` refuses around).
pub fn proxy_path() -> String {
    format!("{}/{}", ASSETS_IN_CONTAINER, layout::PROXY)
}

mod devices;

#[cfg(test)]
mod tests;

//! The VM config: everything the proxy needs to start the VM and everything the guest init
//! applies to the application. Written by `runq create` into the bundle (root-only), never
//! passed on a command line, because it holds the application's environment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole file `runq create` writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmConfig {
    pub vm: VmSettings,
    pub guest: GuestConfig,
}

/// How the proxy starts the VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSettings {
    pub cpus: u32,
    pub mem_mib: u32,
    pub accel: Accel,
    /// QEMU `-cpu` value; `None` picks the accelerator's default.
    pub cpu_model: Option<String>,
    pub root_fs: RootFs,
    /// How the container's interfaces reach the VM's NICs.
    pub net: NetMode,
    /// runq disks, in the order of their serials (see [`crate::disks::serial`]).
    #[serde(default)]
    pub disks: Vec<crate::disks::VmDisk>,
    /// Seconds the guest has to report that the application started.
    pub boot_timeout_secs: u32,
    /// QEMU settings for running inside another VM.
    pub nested_vm: bool,
    /// Copy the serial console (kernel and init diagnostics) to the container's stderr.
    pub debug: bool,
    /// Kernel and initrd inside the container when not the installed ones.
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    /// With `RUNQ_TIMELINE`: when `runq create` started (Unix ns), the zero of the boot
    /// timeline the proxy prints when the container ends.
    #[serde(default)]
    pub timeline_origin_ns: Option<u64>,
    /// What the proxy puts on itself once its setup is done (see [`HostConfinement`]).
    #[serde(default)]
    pub confinement: HostConfinement,
    /// Refuse exec sessions (`--noexec`): `runq exec` refuses them, naming the option, and the
    /// proxy opens no exec socket.
    #[serde(default)]
    pub noexec: bool,
    /// runq's DNS options, which the proxy applies to the engine's resolv.conf.
    #[serde(default)]
    pub dns: crate::dns::DnsSettings,
    /// What the proxy's localhost mirror takes from the guest at most (pods).
    #[serde(default)]
    pub mirror: MirrorCaps,
    /// Templates runq create found for this VM's shape, one per number of NICs it may have
    /// (the proxy learns that only at start); empty boots cold.
    #[serde(default)]
    pub templates: Vec<crate::template::Offer>,
}

/// The most a localhost mirror holds for the other side: listeners standing in for its ports,
/// and connections carried at once. The operator's choice (`--mirror-listeners`,
/// `--mirror-conns`), never the container's environment: they are host resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorCaps {
    pub listeners: u32,
    pub conns: u32,
}

impl MirrorCaps {
    /// The highest caps an operator may set: with the proxy's other descriptors they stay
    /// below its RLIMIT_NOFILE of 4096.
    pub const MAX_LISTENERS: u32 = 1024;
    pub const MAX_CONNS: u32 = 2048;
}

impl Default for MirrorCaps {
    fn default() -> Self {
        MirrorCaps {
            listeners: 256,
            conns: 1024,
        }
    }
}

/// What `runq exec` hands the exec relay (as a memfd runc passes on): the process to start in
/// the guest, and the host side's seccomp filter, which the relay puts on itself first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRelayRequest {
    pub process: ProcessConfig,
    #[serde(default)]
    pub seccomp: Option<SeccompFilter>,
}

/// The engine's confinement of the container, which runc cannot apply to the proxy (its setup
/// mounts, and writes `/proc/sys`), applied by the proxy to itself when the setup is done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostConfinement {
    /// The spec's read-only paths on the host side (those in `/proc` and `/sys`, the only
    /// ones the proxy's root has of the container's).
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    /// The spec's AppArmor profile.
    #[serde(default)]
    pub apparmor_profile: Option<String>,
    /// runq's filter for the host side: what no host-side process needs after setup.
    #[serde(default)]
    pub seccomp: Option<SeccompFilter>,
}

/// How the container's interfaces reach the VM (runq's `--net`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    Tap,
    Macvtap,
    /// The namespace is shared with other containers (a Kubernetes pod): its interfaces stay
    /// where they are, the VM reaches them through passt, and localhost is mirrored.
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// How the container's root reaches the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum RootFs {
    Virtiofs,
    #[serde(rename = "9p")]
    NineP {
        cache: NinePCache,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NinePCache {
    None,
    Loose,
    Fscache,
    Mmap,
}

impl NinePCache {
    pub fn as_str(self) -> &'static str {
        match self {
            NinePCache::None => "none",
            NinePCache::Loose => "loose",
            NinePCache::Fscache => "fscache",
            NinePCache::Mmap => "mmap",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootDisk {
    pub id: String,
    /// Absolute paths left out when the image is first copied onto the disk.
    pub exclude: Vec<String>,
}

/// What runq-init applies inside the guest: the application and its surroundings, as the
/// OCI spec asked for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestConfig {
    pub process: ProcessConfig,
    pub root_fs: RootFs,
    pub hostname: Option<String>,
    /// Non-bind mounts of the spec (proc, sysfs, tmpfs, devpts, mqueue, ...), in spec order.
    /// Bind mounts are already part of the shared root.
    pub mounts: Vec<GuestMount>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub sysctl: BTreeMap<String, String>,
    /// The spec's seccomp profile, compiled to BPF on the host (libseccomp lives there).
    #[serde(default)]
    pub seccomp: Option<SeccompFilter>,
    /// Write the environment to /.runqenv (mode 0400, owned by the user) for login shells.
    #[serde(default)]
    pub runqenv: bool,
    /// The application is systemd (`RUNQ_SYSTEMD`): SIGTERM becomes SIGRTMIN+4, poweroff and
    /// halt exit 0 and anything else 1, and systemd mounts its own cgroups.
    #[serde(default)]
    pub systemd: bool,
    /// runq disks, in the order of their serials, as the guest links and mounts them.
    #[serde(default)]
    pub disks: Vec<crate::disks::DiskSpec>,
    /// The runq disk that becomes the root (`RUNQ_ROOTDISK`), instead of the shared root.
    #[serde(default)]
    pub root_disk: Option<RootDisk>,
    /// The host's bind mounts in the shared root (volumes, /etc/hosts, ...), in spec order:
    /// the guest binds each at its destination with the spec's flags, so that its mount
    /// table shows them as runc's would; on a root disk they are bound from the shared root,
    /// never copied.
    #[serde(default)]
    pub binds: Vec<GuestBind>,
    /// The spec's device nodes (`linux.devices`), made in the guest's /dev as runc makes them.
    #[serde(default)]
    pub devices: Vec<GuestDevice>,
    /// Name, on the application's stderr, the character devices the guest kernel has no
    /// driver for: the spec asked for them one by one, not as all of the host's.
    #[serde(default)]
    pub name_driverless_devices: bool,
}

/// A bind mount of the spec, already part of the shared root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestBind {
    pub destination: String,
    /// The spec's options: the guest applies the per-mount flags (ro, nosuid, nodev,
    /// noexec, atime); the host has enforced what it can.
    pub options: Vec<String>,
    /// runq's own (the guest kernel's module tree): needed on a root disk, not shown.
    #[serde(default)]
    pub runqs_own: bool,
}

/// A device node of the spec, as the guest makes it. Its numbers are the host's: they mean
/// the same device in the guest only for the kernel's fixed ones (mem, tty, misc such as
/// fuse and tun), and only where the guest kernel has the driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestDevice {
    /// Absolute, without `..`.
    pub path: String,
    pub kind: DeviceKind,
    pub major: u64,
    pub minor: u64,
    /// The permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Char,
    Fifo,
}

/// What the proxy finds on the host at start, which runq cannot know at create: the engine's
/// hooks and files come after.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostFindings {
    /// The container's interfaces, as the proxy found them in its network namespace.
    pub network: GuestNetwork,
    /// The application's resolv.conf when runq's DNS options change the engine's: the guest
    /// binds it over the engine's file. `None` keeps the engine's.
    pub resolv_conf: Option<String>,
    /// The application's resolv.conf names Docker's embedded DNS server: the guest listens
    /// on its address and relays the queries.
    pub embedded_dns: bool,
    /// Host random bytes, credited to the guest's entropy pool and reseeding its generator
    /// before the application starts: a VM restored from a template would otherwise share
    /// the template's generator state with every other one.
    #[serde(default)]
    pub entropy: Vec<u8>,
    /// The host's clock (Unix ns) as the config left the proxy: the guest sets its own from
    /// it (a restored guest's is the template's).
    #[serde(default)]
    pub wall_clock_ns: Option<u64>,
    /// The VM was restored from a template: its NICs carry the template's MACs
    /// ([`crate::template::nic_mac`]) until the guest gives them the container's.
    #[serde(default)]
    pub restored: bool,
}

/// The config message: what runq decided from the spec, and what the proxy found on the host.
/// The guest applies both and derives nothing from the container's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestBoot {
    pub config: GuestConfig,
    pub host: HostFindings,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GuestNetwork {
    pub nics: Vec<GuestNic>,
    pub routes: Vec<GuestRoute>,
    /// The namespace is shared with other VMs: mirror listening ports both ways (runq-mirror).
    #[serde(default)]
    pub mirror_localhost: bool,
    /// IPv6 as the engine left it in the container's namespace.
    #[serde(default)]
    pub ipv6_off: Ipv6Off,
}

/// Where the engine switched IPv6 off (`net.ipv6.conf.*.disable_ipv6`) in the container's
/// namespace. Docker does for `all`, `default` and `lo` unless the container has IPv6, even
/// with `--network none`, so that under runc loopback has no `::1`; the guest does the same
/// before its loopback comes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ipv6Off {
    pub all: bool,
    pub default: bool,
    pub lo: bool,
}

/// A NIC of the VM, found in the guest by its MAC, the container interface's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNic {
    /// The interface's name in the container (eth0, eth1, ...), which the guest NIC takes.
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    /// `address/prefix`, IPv4 and IPv6.
    pub addresses: Vec<String>,
    /// IPv4 broadcast addresses, by the entry of `addresses` they go with (Docker gives each
    /// IPv4 address one).
    #[serde(default)]
    pub broadcasts: BTreeMap<String, String>,
    /// The engine had IPv6 off on this interface (Docker does for IPv4-only networks).
    #[serde(default)]
    pub ipv6_disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRoute {
    /// The NIC the route goes through.
    pub mac: String,
    /// `address/prefix`; `None` for a default route.
    pub destination: Option<String>,
    pub gateway: Option<String>,
    pub ipv6: bool,
    /// Scope link: the destination is on the wire, no gateway.
    pub scope_link: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompFilter {
    /// `struct sock_filter` entries in native byte order, 8 bytes each.
    pub program: Vec<u8>,
    /// seccomp(2) flags (`SECCOMP_FILTER_FLAG_*`).
    pub flags: u32,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessConfig {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub terminal: bool,
    /// Whether the terminal turns "\n" into "\r\n". The engine's end of the host pty decides
    /// (`runc run` clears it, containerd keeps it); the guest pty, where the application's
    /// line discipline now runs, follows. The session's host end reads it from the host pty:
    /// the proxy for the application, the exec relay for an exec session.
    #[serde(default)]
    pub terminal_onlcr: bool,
    pub capabilities: Capabilities,
    pub rlimits: Vec<Rlimit>,
    pub no_new_privileges: bool,
    /// `process.oomScoreAdj`: the guest kernel's OOM killer weighs the process by it, as the
    /// host's would under runc. (runc puts it on the proxy too, so the host weighs the VM so.)
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
}

/// Capability names as the OCI spec writes them (`CAP_CHOWN`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub inheritable: Vec<String>,
    pub permitted: Vec<String>,
    pub ambient: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// OCI name, e.g. `RLIMIT_NOFILE`.
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMount {
    pub destination: String,
    pub fstype: String,
    pub source: String,
    pub options: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_config_round_trips_through_json() {
        let config = VmConfig {
            vm: VmSettings {
                cpus: 2,
                mem_mib: 256,
                accel: Accel::Tcg,
                cpu_model: None,
                root_fs: RootFs::NineP {
                    cache: NinePCache::Mmap,
                },
                net: NetMode::Macvtap,
                disks: vec![crate::disks::VmDisk {
                    path: "/dev/runq/d/none/xfs/data".into(),
                    format: crate::disks::DiskFormat::Qcow2,
                    cache: crate::disks::DiskCache::None,
                }],
                boot_timeout_secs: 60,
                nested_vm: false,
                debug: false,
                kernel: None,
                initrd: None,
                timeline_origin_ns: Some(1_795_000_000_000_000_000),
                confinement: HostConfinement {
                    readonly_paths: vec!["/proc/sys".into()],
                    apparmor_profile: Some("docker-default".into()),
                    seccomp: Some(SeccompFilter {
                        program: vec![6, 0, 0, 0, 0, 0, 0xff, 0x7f],
                        flags: 1,
                    }),
                },
                noexec: true,
                dns: crate::dns::DnsSettings {
                    nameservers: Some(vec!["192.0.2.53".into()]),
                    ..Default::default()
                },
                mirror: MirrorCaps {
                    listeners: 16,
                    conns: 32,
                },
                templates: Vec::new(),
            },
            guest: GuestConfig {
                process: ProcessConfig {
                    oom_score_adj: Some(500),
                    args: vec!["sh".into()],
                    env: vec!["A=1".into()],
                    cwd: "/".into(),
                    ..Default::default()
                },
                root_fs: RootFs::Virtiofs,
                hostname: Some("h".into()),
                mounts: vec![],
                masked_paths: vec![],
                readonly_paths: vec![],
                sysctl: BTreeMap::new(),
                seccomp: None,
                runqenv: false,
                systemd: false,
                disks: vec![crate::disks::parse("/dev/runq/d/none/xfs/data")
                    .unwrap()
                    .unwrap()],
                root_disk: Some(RootDisk {
                    id: "d".into(),
                    exclude: vec!["/tmp".into()],
                }),
                binds: vec![GuestBind {
                    destination: "/etc/hosts".into(),
                    options: vec!["rbind".into(), "ro".into()],
                    runqs_own: false,
                }],
                devices: vec![GuestDevice {
                    path: "/dev/fuse".into(),
                    kind: DeviceKind::Char,
                    major: 10,
                    minor: 229,
                    mode: 0o666,
                    uid: 0,
                    gid: 0,
                }],
                name_driverless_devices: true,
            },
        };
        let text = serde_json::to_string(&config).unwrap();
        assert!(text.contains(r#""kind":"9p""#), "{text}");
        let back: VmConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);
    }
}

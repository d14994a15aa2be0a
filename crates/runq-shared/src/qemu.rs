//! The QEMU command line, built from the VM settings alone so it can be tested as data.

use std::path::{Path, PathBuf};

use crate::config::{Accel, RootFs, VmSettings};
use crate::disks::{DiskCache, DiskFormat};
use crate::layout::{self, assets, own_root, AGENT_PORT_NAME, ROOTFS_TAG};

/// Where QEMU finds what it needs, in runq's own root (see `own_root`).
#[derive(Debug, Clone)]
pub struct Paths {
    pub assets: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub virtiofsd_socket: PathBuf,
    pub agent_socket: PathBuf,
    pub console_log: PathBuf,
    /// Where QEMU's and virtiofsd's own messages go, for error reports.
    pub qemu_log: PathBuf,
    pub virtiofsd_log: PathBuf,
    pub passt_log: PathBuf,
    /// The directory the guest's root comes from (for 9p; virtiofsd is told separately).
    pub shared_root: PathBuf,
}

impl Paths {
    pub fn in_own_root(vm: &VmSettings) -> Paths {
        let assets = PathBuf::from(own_root::ASSETS);
        Paths {
            kernel: vm
                .kernel
                .clone()
                .map(PathBuf::from)
                .unwrap_or_else(|| assets.join(assets::KERNEL)),
            initrd: vm
                .initrd
                .clone()
                .map(PathBuf::from)
                .unwrap_or_else(|| assets.join(assets::INITRD)),
            assets,
            virtiofsd_socket: PathBuf::from(own_root::VIRTIOFSD_SOCKET),
            agent_socket: PathBuf::from(own_root::AGENT_SOCKET),
            console_log: PathBuf::from(own_root::CONSOLE_LOG),
            qemu_log: PathBuf::from(own_root::QEMU_LOG),
            virtiofsd_log: PathBuf::from(own_root::VIRTIOFSD_LOG),
            passt_log: PathBuf::from(own_root::PASST_LOG),
            shared_root: PathBuf::from(own_root::ROOTFS),
        }
    }

    /// QEMU and virtiofsd run through the bundled dynamic loader, since the container image
    /// may have no C library at all.
    pub fn loader(&self) -> PathBuf {
        self.assets.join(assets::LOADER)
    }

    pub fn loader_args(&self, binary: &str) -> Vec<String> {
        vec![
            "--library-path".into(),
            path(&self.assets.join(assets::LIBS)),
            path(&self.assets.join(binary)),
        ]
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// What the proxy learned about the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFacts {
    /// The TSC rate, passed to the guest: under TCG on microvm the kernel otherwise sometimes
    /// fails to calibrate it and hangs early in boot.
    pub tsc_khz: Option<u64>,
}

/// A NIC of the VM: a descriptor QEMU inherits, and the guest NIC's MAC. The descriptor is a
/// tap's, or with `stream` one end of a socket pair whose other end passt serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub fd: i32,
    pub mac: String,
    pub stream: bool,
}

/// A runq disk of the VM: the file or block device in the container and its image format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub path: String,
    pub format: DiskFormat,
    pub cache: DiskCache,
    pub block_device: bool,
}

impl Disk {
    /// The disk as one `-blockdev` node tree. Spelled out, not `-drive`, so that nothing is
    /// left for QEMU to take from the image: the format is the operator's and a qcow2 image
    /// gets no backing file, whatever its header says.
    fn blockdev(&self, node: &str) -> String {
        // -drive's cache modes: O_DIRECT, and whether flushes reach the disk; whether the
        // guest sees a write cache is the device's `write-cache`.
        let cache = serde_json::json!({
            "direct": self.cache == DiskCache::None,
            "no-flush": self.cache == DiskCache::Unsafe,
        });
        let file = serde_json::json!({
            "driver": if self.block_device { "host_device" } else { "file" },
            "filename": self.path,
            "cache": cache,
        });
        let mut node = serde_json::json!({
            "driver": self.format.as_str(),
            "node-name": node,
            "cache": cache,
            "file": file,
        });
        if self.format == DiskFormat::Qcow2 {
            node["backing"] = serde_json::Value::Null;
        }
        node.to_string()
    }

    fn write_cache(&self) -> &'static str {
        if self.cache == DiskCache::Writethrough {
            "off"
        } else {
            "on"
        }
    }
}

/// virtiofsd's arguments after the loader's, serving the root on the listening socket `fd`.
pub fn virtiofsd_args(paths: &Paths, fd: i32) -> Vec<String> {
    vec![
        format!("--fd={fd}"),
        format!("--shared-dir={}", path(&paths.shared_root)),
        "--cache=auto".into(),
        "--sandbox=namespace".into(),
        "--announce-submounts".into(),
        "--xattr".into(),
        "--log-level=error".into(),
    ]
}

/// The descriptor set QEMU finds a template's stream in (`file:/dev/fdset/N`).
pub const TEMPLATE_FDSET: u32 = 1;

/// How the VM starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// Boots the kernel, told which modules the container will need.
    Cold,
    /// Boots to be saved as a template (see [`crate::template`]): the guest loads only what
    /// its control channel needs and waits for a config.
    Template,
    /// Starts from a template's migration stream on this descriptor (QEMU's number), with
    /// the same arguments the template was made with. QEMU waits for its monitor to start
    /// the load (see [`crate::qmp::Qmp::load`]): the stream's format is a capability only the
    /// monitor sets.
    Restore { fd: i32 },
}

/// Arguments after the loader's own (see [`Paths::loader_args`]).
pub fn args(
    vm: &VmSettings,
    host: HostFacts,
    paths: &Paths,
    nics: &[Nic],
    disks: &[Disk],
    boot: Boot,
) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
    let mem = format!("{}M", vm.mem_mib);
    let firmware = path(&paths.assets.join(assets::FIRMWARE));
    push(&["-L", &firmware]);
    push(&["-M", "microvm,memory-backend=mem"]);
    push(&["-global", "virtio-mmio.force-legacy=false"]);
    let (accel, default_cpu) = match vm.accel {
        Accel::Kvm => ("kvm", "host"),
        // TCG's translation cache grows to 1 GiB by default and keeps every page it touched.
        // A boot to the application's exec translates 40-48 MiB of code; a smaller cache is
        // flushed on the way and everything retranslated (32 MiB: init start to exec ~40 ms
        // slower, 40 MiB: ~100 ms). It costs what it touched: an idle container with one
        // exec behind it holds the same memory with 48, 64 or 96 MiB, and 64 leaves room
        // for 9p roots, disks and exec sessions before the first flush.
        // TCG runs each round of a `rep stos`/`rep movs` as a translated block of its own, so
        // the byte-wide string loops the kernel picks for ERMS and FSRM (clear_page_erms,
        // memset_erms: a quarter of module loading's time) cost eight times the rounds of
        // the quad-word ones; without them module loading is ~30 % faster.
        Accel::Tcg => ("tcg,tb-size=64", "max,erms=off,fsrm=off"),
    };
    push(&["-accel", accel]);
    let mut cpu = vm.cpu_model.as_deref().unwrap_or(default_cpu).to_string();
    if vm.nested_vm {
        // Inside another VM the virtual PMU is what usually breaks (as runq in Go found).
        cpu.push_str(",pmu=off");
    }
    push(&["-cpu", &cpu]);
    push(&["-m", &mem, "-smp", &vm.cpus.to_string()]);
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    // QEMU's own seccomp filter: no obsolete system calls, no privilege changes, no new
    // processes, no scheduler or resource games.
    push(&[
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]);
    if vm.debug {
        push(&["-serial", "stdio"]);
    } else {
        push(&["-serial", &format!("file:{}", path(&paths.console_log))]);
    }
    push(&[
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
    ]);
    match vm.root_fs {
        RootFs::Virtiofs => push(&[
            "-chardev",
            &format!("socket,id=vfs0,path={}", path(&paths.virtiofsd_socket)),
            "-device",
            &format!("vhost-user-fs-device,queue-size=1024,chardev=vfs0,tag={ROOTFS_TAG}"),
        ]),
        RootFs::NineP { .. } => push(&[
            "-fsdev",
            &format!(
                "local,id=fs0,path={},security_model=passthrough",
                path(&paths.shared_root)
            ),
            "-device",
            &format!("virtio-9p-device,fsdev=fs0,mount_tag={ROOTFS_TAG}"),
        ]),
    }
    push(&[
        "-device",
        "virtio-serial-device,max_ports=2",
        "-chardev",
        &format!("socket,id=agent,path={}", path(&paths.agent_socket)),
        "-device",
        &format!("virtserialport,chardev=agent,name={AGENT_PORT_NAME}"),
    ]);
    for (number, nic) in nics.iter().enumerate() {
        push(&[
            "-netdev",
            &if nic.stream {
                format!("stream,id=net{number},addr.type=fd,addr.str={}", nic.fd)
            } else {
                format!("tap,id=net{number},fd={},vhost=off", nic.fd)
            },
            "-device",
            // Without the link-status feature virtio_net turns its carrier off and on again
            // within its probe, and the kernel's link watch sees one event: the NIC is up when
            // the application starts. With it, carrier-on comes from a later work item, and
            // the link watch, which just ran for carrier-off, holds it back for a second:
            // operstate down, `ip link` NO-CARRIER. runq never changes the link's state.
            &format!(
                "virtio-net-device,netdev=net{number},mac={},status=off",
                nic.mac
            ),
        ]);
    }
    for (number, disk) in disks.iter().enumerate() {
        push(&[
            "-blockdev",
            &disk.blockdev(&format!("disk{number}")),
            "-device",
            &format!(
                "virtio-blk-device,drive=disk{number},serial={},write-cache={}",
                crate::disks::serial(number),
                disk.write_cache()
            ),
        ]);
    }
    // The guest hands pages it freed back (free page reporting), so a container's host memory
    // follows what its guest uses now, not the most it ever touched.
    push(&["-device", "virtio-balloon-device,free-page-reporting=on"]);
    push(&[
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        "virtio-rng-device,rng=rng0",
    ]);
    push(&[
        "-kernel",
        &path(&paths.kernel),
        "-initrd",
        &path(&paths.initrd),
    ]);
    push(&[
        "-append",
        &kernel_cmdline(vm, host, !nics.is_empty(), boot == Boot::Cold),
    ]);
    if let Boot::Restore { fd } = boot {
        // A descriptor, never a path or `exec:`: QEMU reads the stream and nothing else.
        push(&[
            "-add-fd",
            &format!("fd={fd},set={TEMPLATE_FDSET}"),
            "-incoming",
            "defer",
        ]);
    }
    args
}

fn kernel_cmdline(vm: &VmSettings, host: HostFacts, nics: bool, hints: bool) -> String {
    let mut words = vec![
        "console=ttyS0",
        "reboot=t",
        "panic=-1",
        "cryptomgr.notests",
        "8250.nr_uarts=1",
        "i8042.noaux",
        "i8042.nomux",
        "i8042.nopnp",
        "i8042.dumbkbd",
        // Tracing's kprobe events take ~200 ms to set up under TCG, for a facility nothing in
        // a container VM uses.
        "initcall_blacklist=init_kprobe_trace",
    ]
    .into_iter()
    .map(String::from)
    .collect::<Vec<_>>();
    if vm.debug {
        words.push("runq.debug".into());
    } else {
        words.push("quiet".into());
    }
    let mut features = vec![match vm.root_fs {
        RootFs::Virtiofs => "virtiofs",
        RootFs::NineP { .. } => "9p",
    }];
    if nics {
        features.push("net");
    }
    if !vm.disks.is_empty() {
        features.push("block");
    }
    // A template's guest loads the features' drivers before it is saved and binds only its
    // NICs with them: the restored guest binds the rest once its config came.
    let param = if hints {
        layout::MODULES_PARAM
    } else {
        layout::TEMPLATE_PARAM
    };
    words.push(format!("{param}={}", features.join(",")));
    if vm.accel == Accel::Tcg {
        // TCG's TSC follows the host's clock, but its timer interrupts come late when the host
        // is busy: the kernel's clocksource watchdog, which has only jiffies to check the TSC
        // against on microvm, then calls the TSC skewed and falls back to jiffies, a 4 ms
        // clock for the application (and, in a template's boot, for every container restored
        // from it).
        words.push("tsc=reliable".into());
        if let Some(khz) = host.tsc_khz {
            words.push(format!("tsc_early_khz={khz}"));
        }
    }
    words.join(" ")
}

/// The TSC rate from the host's /proc/cpuinfo (`cpu MHz`).
pub fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    cpuinfo
        .lines()
        .find(|line| line.starts_with("cpu MHz"))
        .and_then(|line| line.split(':').nth(1))
        .and_then(|mhz| mhz.trim().parse::<f64>().ok())
        .filter(|mhz| *mhz > 0.0)
        .map(|mhz| (mhz * 1000.0).round() as u64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::NinePCache;

    pub(crate) fn settings() -> VmSettings {
        VmSettings {
            cpus: 2,
            mem_mib: 300,
            accel: Accel::Tcg,
            cpu_model: None,
            root_fs: RootFs::Virtiofs,
            net: crate::config::NetMode::Tap,
            disks: vec![],
            boot_timeout_secs: 60,
            nested_vm: false,
            debug: false,
            kernel: None,
            initrd: None,
            timeline_origin_ns: None,
            confinement: Default::default(),
            noexec: false,
            dns: Default::default(),
            mirror: Default::default(),
            templates: Vec::new(),
        }
    }

    fn value_of<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn tcg_vm_with_virtiofs_root() {
        let vm = settings();
        let paths = Paths::in_own_root(&vm);
        let args = args(
            &vm,
            HostFacts {
                tsc_khz: Some(2445404),
            },
            &paths,
            &[],
            &[],
            Boot::Cold,
        );
        assert_eq!(value_of(&args, "-accel"), ["tcg,tb-size=64"]);
        assert_eq!(value_of(&args, "-cpu"), ["max,erms=off,fsrm=off"]);
        assert_eq!(value_of(&args, "-m"), ["300M"]);
        assert_eq!(value_of(&args, "-smp"), ["2"]);
        assert_eq!(value_of(&args, "-kernel"), ["/qemu/kernel/vmlinux"]);
        assert!(
            value_of(&args, "-object").contains(&"memory-backend-memfd,id=mem,size=300M,share=on")
        );
        assert!(value_of(&args, "-device")
            .iter()
            .any(|d| d.starts_with("vhost-user-fs-device") && d.ends_with("tag=rootfs")));
        let cmdline = value_of(&args, "-append")[0];
        assert!(cmdline.contains("tsc_early_khz=2445404"), "{cmdline}");
        assert!(cmdline.contains(" tsc=reliable"), "{cmdline}");
        assert!(cmdline.contains("quiet"), "{cmdline}");
        assert!(cmdline.contains(" runq.modules=virtiofs "), "{cmdline}");
        assert!(!args.iter().any(|a| a.contains("vhost=on")));
        assert!(
            value_of(&args, "-device").contains(&"virtio-balloon-device,free-page-reporting=on")
        );
        assert_eq!(
            value_of(&args, "-sandbox"),
            ["on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
        );
    }

    #[test]
    fn kvm_and_9p_and_custom_cpu() {
        let mut vm = settings();
        vm.accel = Accel::Kvm;
        vm.cpu_model = Some("Skylake-Client".into());
        vm.root_fs = RootFs::NineP {
            cache: NinePCache::Loose,
        };
        vm.kernel = Some("/kernel".into());
        let paths = Paths::in_own_root(&vm);
        let args = args(
            &vm,
            HostFacts {
                tsc_khz: Some(1000),
            },
            &paths,
            &[
                Nic {
                    fd: 7,
                    mac: "02:42:ac:11:00:02".into(),
                    stream: false,
                },
                Nic {
                    fd: 8,
                    mac: "02:00:00:00:00:01".into(),
                    stream: true,
                },
            ],
            &[
                Disk {
                    path: "/dev/runq/data.qcow2/none/ext4/data".into(),
                    format: DiskFormat::Qcow2,
                    cache: DiskCache::None,
                    block_device: false,
                },
                Disk {
                    path: "/dev/runq/odd,name/unsafe".into(),
                    format: DiskFormat::Raw,
                    cache: DiskCache::Unsafe,
                    block_device: false,
                },
                Disk {
                    path: "/dev/runq/sdb/writethrough".into(),
                    format: DiskFormat::Raw,
                    cache: DiskCache::Writethrough,
                    block_device: true,
                },
            ],
            Boot::Cold,
        );
        let blockdevs: Vec<serde_json::Value> = value_of(&args, "-blockdev")
            .iter()
            .map(|text| serde_json::from_str(text).unwrap())
            .collect();
        assert_eq!(
            blockdevs[0],
            serde_json::json!({
                "driver": "qcow2", "node-name": "disk0", "backing": null,
                "cache": {"direct": true, "no-flush": false},
                "file": {
                    "driver": "file", "filename": "/dev/runq/data.qcow2/none/ext4/data",
                    "cache": {"direct": true, "no-flush": false},
                },
            })
        );
        assert_eq!(
            blockdevs[1],
            serde_json::json!({
                "driver": "raw", "node-name": "disk1",
                "cache": {"direct": false, "no-flush": true},
                "file": {
                    "driver": "file", "filename": "/dev/runq/odd,name/unsafe",
                    "cache": {"direct": false, "no-flush": true},
                },
            })
        );
        assert_eq!(blockdevs[2]["file"]["driver"], "host_device");
        assert!(value_of(&args, "-device")
            .contains(&"virtio-blk-device,drive=disk1,serial=runq1,write-cache=on"));
        assert!(value_of(&args, "-device")
            .contains(&"virtio-blk-device,drive=disk2,serial=runq2,write-cache=off"));
        assert_eq!(
            value_of(&args, "-netdev"),
            [
                "tap,id=net0,fd=7,vhost=off",
                "stream,id=net1,addr.type=fd,addr.str=8"
            ]
        );
        assert!(value_of(&args, "-device")
            .contains(&"virtio-net-device,netdev=net0,mac=02:42:ac:11:00:02,status=off"));
        assert_eq!(value_of(&args, "-accel"), ["kvm"]);
        assert_eq!(value_of(&args, "-cpu"), ["Skylake-Client"]);
        assert_eq!(value_of(&args, "-kernel"), ["/kernel"]);
        assert_eq!(
            value_of(&args, "-fsdev"),
            ["local,id=fs0,path=/rootfs,security_model=passthrough"]
        );
        assert!(!value_of(&args, "-append")[0].contains("tsc_early_khz"));
        assert!(!value_of(&args, "-append")[0].contains("tsc=reliable"));
    }

    #[test]
    fn nested_vm_turns_the_pmu_off() {
        let mut vm = settings();
        vm.nested_vm = true;
        let args = args(
            &vm,
            HostFacts { tsc_khz: None },
            &Paths::in_own_root(&vm),
            &[],
            &[],
            Boot::Cold,
        );
        assert_eq!(value_of(&args, "-cpu"), ["max,erms=off,fsrm=off,pmu=off"]);
    }

    #[test]
    fn a_restore_has_the_templates_arguments_and_reads_the_stream_from_a_descriptor() {
        let vm = settings();
        let paths = Paths::in_own_root(&vm);
        let host = HostFacts { tsc_khz: Some(1) };
        let nics = [Nic {
            fd: 7,
            mac: crate::template::nic_mac(0),
            stream: true,
        }];
        let template = args(&vm, host, &paths, &nics, &[], Boot::Template);
        let restore = args(&vm, host, &paths, &nics, &[], Boot::Restore { fd: 9 });
        assert_eq!(restore[..template.len()], template[..]);
        assert_eq!(
            restore[template.len()..],
            ["-add-fd", "fd=9,set=1", "-incoming", "defer"]
        );
        assert!(!value_of(&template, "-append")[0].contains("runq.modules"));
        assert!(value_of(&template, "-append")[0].contains(" runq.template=virtiofs,net "));
        let cold = args(&vm, host, &paths, &nics, &[], Boot::Cold);
        assert!(value_of(&cold, "-append")[0].contains("runq.modules=virtiofs,net"));
        assert!(!cold.contains(&"-incoming".to_string()));
    }

    #[test]
    fn tsc_rate_is_read_from_cpuinfo() {
        let cpuinfo = "processor\t: 0\nmodel name\t: x\ncpu MHz\t\t: 2445.404\n";
        assert_eq!(tsc_khz_from_cpuinfo(cpuinfo), Some(2445404));
        assert_eq!(tsc_khz_from_cpuinfo("nothing"), None);
    }
}

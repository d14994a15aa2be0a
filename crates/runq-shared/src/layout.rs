//! Where things are: on the host after install, and inside a container after the spec rewrite.

/// Default install root on the host (`RUNQ_ROOT` or `--assets` change it).
pub const DEFAULT_INSTALL_ROOT: &str = "/var/lib/runq";

/// The install root: `RUNQ_ROOT` where set, else the default.
pub fn install_root() -> std::path::PathBuf {
    std::env::var_os("RUNQ_ROOT")
        .filter(|root| !root.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_INSTALL_ROOT))
}

/// The assets directory below the install root: QEMU, its libraries, virtiofsd, kernel, initrd.
pub const ASSETS_SUBDIR: &str = "qemu";

/// The installed assets: [`ASSETS_SUBDIR`] of the install root.
pub fn installed_assets() -> std::path::PathBuf {
    install_root().join(ASSETS_SUBDIR)
}

/// A tmpfs the spec rewrite mounts into every runq container, with the assets and the VM
/// config below it. The proxy makes it its root (see [`own_root`]) before any helper starts.
pub const RUNQ_DIR: &str = "/.runq";

/// The host assets directory, bind-mounted read-only: runc starts the proxy from here.
pub const ASSETS_IN_CONTAINER: &str = "/.runq/qemu";

/// The descriptors runq create hands the proxy through runc (`--preserve-fds`), instead of
/// any path: the VM config, root-only and holding the application's environment, read once;
/// the start report's FIFO (see [`crate::start_report`]); and the templates of the VM's shape
/// (see [`crate::template`]), one for each number of NICs from 0, root-only too (`/dev/null`
/// where there is none). A descriptor needs no permission on the file, so a proxy that is the
/// mapped root of a user namespace reads them as well as the host's root.
pub const VM_CONFIG_FD: i32 = 3;
pub const START_REPORT_FD: i32 = 4;
/// The template for a VM without NICs; the one with `n` NICs is `n` above it.
pub const FIRST_TEMPLATE_FD: i32 = 5;

/// runq's own root: the [`RUNQ_DIR`] tmpfs, which the proxy makes its root before it starts any
/// helper, so that nothing of the image is ever on a host-side process's library path, `/etc`
/// or PATH, and nothing the guest can change is ever on a path the host side uses. The
/// container's tree is only the directory [`own_root::ROOTFS`] that is shared with the guest.
/// `/proc/<proxy pid>/root` on the host, and the root `runc exec` enters.
pub mod own_root {
    /// The assets (QEMU, its libraries, virtiofsd, passt, kernel, initrd, runq-exec).
    pub const ASSETS: &str = "/qemu";
    /// The container's tree as the guest gets it.
    pub const ROOTFS: &str = "/rootfs";
    /// The exec socket (root only): `runq exec`'s relay connects here.
    pub const EXEC_SOCKET: &str = "/exec.sock";
    /// A kernel or initrd other than the installed ones.
    pub const KERNEL: &str = "/kernel";
    pub const INITRD: &str = "/initrd";
    /// virtiofsd's socket, which QEMU connects to.
    pub const VIRTIOFSD_SOCKET: &str = "/virtiofsd.sock";
    /// The control channel's socket, which QEMU connects to for the guest's serial port.
    pub const AGENT_SOCKET: &str = "/agent.sock";
    /// The guest's serial console.
    pub const CONSOLE_LOG: &str = "/console.log";
    /// QEMU's, virtiofsd's and passt's own messages, for error reports.
    pub const QEMU_LOG: &str = "/qemu.log";
    pub const VIRTIOFSD_LOG: &str = "/virtiofsd.log";
    pub const PASST_LOG: &str = "/passt.log";

    /// Where a path of runq's own root is in the container before the proxy pivots into it.
    pub fn in_container(path: &str) -> String {
        format!("{}{path}", super::RUNQ_DIR)
    }
}

/// File name of the VM config in runq's private directory.
pub const VM_CONFIG_FILE: &str = "vm.json";

/// File name of the engine's untouched spec in runq's private directory.
pub const ORIGINAL_SPEC_FILE: &str = "config.orig.json";

/// File name of the FIFO in runq's private directory on which the proxy tells `runq start`
/// that the application runs (see [`crate::start_report`]).
pub const START_REPORT_FIFO: &str = "start-report";

/// runq's private directories live below runc's state root (`--root`), one per container,
/// root-only: never in the engine's bundle, which a container with `root.path` `.` can reach.
pub const PRIVATE_SUBDIR: &str = ".runq";

/// runc's state root when the engine names none.
pub const DEFAULT_RUNC_ROOT: &str = "/run/runc";

/// runq's private directory for container `id` under runc's state root.
pub fn private_dir(runc_root: &std::path::Path, id: &str) -> std::path::PathBuf {
    runc_root.join(PRIVATE_SUBDIR).join(id)
}

/// The proxy binary, relative to the assets directory.
pub const PROXY: &str = "proxy";

/// The exec client binary, relative to the assets directory.
pub const EXEC_CLIENT: &str = "runq-exec";

/// Kernel parameter by which the proxy names the guest's device features (comma-separated
/// [`MODULE_FEATURES`]), so that runq-init can load their modules while the config is on
/// its way.
pub const MODULES_PARAM: &str = "runq.modules";

/// On a template's kernel command line (see [`crate::template`]), with the features of its
/// shape as [`MODULES_PARAM`] names them: runq-init loads those of their modules that bind no
/// device before it says Hello, so that a restored guest has them already.
pub const TEMPLATE_PARAM: &str = "runq.template";

/// The features [`MODULES_PARAM`] may name.
pub const MODULE_FEATURES: [&str; 4] = ["virtiofs", "9p", "net", "block"];

/// Name of the virtio-serial port that carries the control channel.
pub const AGENT_PORT_NAME: &str = "runq.agent";

/// virtio-fs tag of the container's root file system.
pub const ROOTFS_TAG: &str = "rootfs";

/// Where runq-init mounts the container's root inside the guest.
pub const GUEST_ROOTFS: &str = "/rootfs";

/// Where the container has the guest kernel's module tree (runq binds it there on the host;
/// runq-init binds it over its own, for the kernel's modprobe).
pub const MODULES_IN_CONTAINER: &str = "/lib/modules";

/// Paths of the assets, relative to the assets directory.
pub mod assets {
    pub const LOADER: &str = "lib/ld-linux-x86-64.so.2";
    pub const LIBS: &str = "lib";
    pub const QEMU: &str = "bin/qemu-system-x86_64";
    pub const VIRTIOFSD: &str = "bin/virtiofsd";
    pub const PASST: &str = "bin/passt";
    pub const FIRMWARE: &str = "share/qemu";
    pub const KERNEL: &str = "kernel/vmlinux";
    pub const INITRD: &str = "kernel/initrd";
    pub const KERNEL_RELEASE: &str = "kernel/release";
    pub const MODULES: &str = "kernel/modules";
}

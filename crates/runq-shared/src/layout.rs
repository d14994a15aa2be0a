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

/// A tmpfs the spec rewrite mounts into every runq container; everything runq adds lives below.
pub const RUNQ_DIR: &str = "/.runq";

/// The host assets directory, bind-mounted read-only.
pub const ASSETS_IN_CONTAINER: &str = "/.runq/qemu";

/// The bundle's private runq directory, bind-mounted read-only; the proxy unmounts it once read.
pub const CONFIG_DIR_IN_CONTAINER: &str = "/.runq/config";

/// File name of the VM config inside the bundle's runq directory.
pub const VM_CONFIG_FILE: &str = "vm.json";

/// File name of the engine's untouched spec inside the bundle's runq directory.
pub const ORIGINAL_SPEC_FILE: &str = "config.orig.json";

/// The bundle's private runq directory, relative to the bundle.
pub const BUNDLE_RUNQ_DIR: &str = "runq";

/// The proxy binary, relative to the assets directory.
pub const PROXY: &str = "proxy";

/// The proxy's exec socket inside the container (root only): `runq exec`'s relay and the
/// `runq-exec` command connect here. From the host: `/proc/<proxy pid>/root` + this.
pub const EXEC_SOCKET: &str = "/.runq/exec.sock";

/// Where `runq exec` leaves an exec session's process for the relay, below a container's
/// root as the host sees it (`/proc/<proxy pid>/root`) or as the relay does (`/`).
pub fn exec_request_file(root: &std::path::Path, token: &str) -> std::path::PathBuf {
    root.join(RUNQ_DIR.trim_start_matches('/'))
        .join(format!("exec-{token}.json"))
}

/// The exec client binary, relative to the assets directory.
pub const EXEC_CLIENT: &str = "runq-exec";

/// Kernel parameter by which the proxy names the guest's device features (comma-separated
/// [`MODULE_FEATURES`]), so that runq-init can load their modules while the config is on
/// its way.
pub const MODULES_PARAM: &str = "runq.modules";

/// The features [`MODULES_PARAM`] may name.
pub const MODULE_FEATURES: [&str; 4] = ["virtiofs", "9p", "net", "block"];

/// Name of the virtio-serial port that carries the control channel.
pub const AGENT_PORT_NAME: &str = "runq.agent";

/// virtio-fs tag of the container's root file system.
pub const ROOTFS_TAG: &str = "rootfs";

/// Where runq-init mounts the container's root inside the guest.
pub const GUEST_ROOTFS: &str = "/rootfs";

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

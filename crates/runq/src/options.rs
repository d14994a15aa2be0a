//! runq's own options: global flags (from `daemon.json` `runtimeArgs`), some settable per
//! container by the operator through an annotation (`run.runq.fs=9p` is `--fs 9p`), and most
//! overridable by a `RUNQ_*` variable in the container's environment. The environment
//! includes the image's `ENV`, so what it may set is bounded by the runtime (see `rewrite`).

use std::path::PathBuf;

use thiserror::Error;

pub use runq_shared::config::NetMode;
use runq_shared::config::{MirrorCaps, NinePCache};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunqOptions {
    pub cpus: Option<u32>,
    pub mem_mib: Option<u32>,
    pub dns: Option<Vec<String>>,
    pub dns_opts: Option<Vec<String>>,
    pub dns_search: Option<Vec<String>>,
    pub dns_preserve: bool,
    pub tmpfs: Vec<String>,
    pub ninep_cache: NinePCache,
    pub cpu_model: Option<String>,
    pub noexec: bool,
    pub runqenv: bool,
    pub nested_vm: bool,
    pub systemd: bool,
    pub fs: FsKind,
    pub net: NetMode,
    pub accel: AccelChoice,
    pub runc: Option<PathBuf>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub assets: Option<PathBuf>,
    pub boot_timeout_secs: u32,
    pub debug: bool,
    /// Print the boot timeline on the container's stderr when it ends (`RUNQ_TIMELINE`).
    pub timeline: bool,
    /// Start the VM from a template of its shape where there is one (`--template off`,
    /// `RUNQ_TEMPLATE=0`: always boot).
    pub template: bool,
    /// The runq disk that becomes the guest's root (`RUNQ_ROOTDISK`).
    pub root_disk: Option<String>,
    /// Absolute paths not copied onto a new root disk (`RUNQ_ROOTDISK_EXCLUDE`).
    pub root_disk_exclude: Vec<String>,
    /// The localhost mirror's caps (`--mirror-listeners`, `--mirror-conns`).
    pub mirror: MirrorCaps,
}

impl Default for RunqOptions {
    fn default() -> Self {
        RunqOptions {
            cpus: None,
            mem_mib: None,
            dns: None,
            dns_opts: None,
            dns_search: None,
            dns_preserve: false,
            tmpfs: Vec::new(),
            ninep_cache: NinePCache::Mmap,
            cpu_model: None,
            noexec: false,
            runqenv: false,
            nested_vm: false,
            systemd: false,
            fs: FsKind::Virtiofs,
            net: NetMode::Tap,
            accel: AccelChoice::Auto,
            runc: None,
            kernel: None,
            initrd: None,
            assets: None,
            boot_timeout_secs: DEFAULT_BOOT_TIMEOUT_SECS,
            debug: false,
            timeline: false,
            template: true,
            root_disk: None,
            root_disk_exclude: Vec::new(),
            mirror: MirrorCaps::default(),
        }
    }
}

/// Generous because a TCG boot on a loaded two-core machine can take several times the ~2 s
/// it takes alone.
pub const DEFAULT_BOOT_TIMEOUT_SECS: u32 = 60;

pub const MIN_MEM_MIB: u32 = 64;
pub const MAX_MEM_MIB: u32 = 1 << 20;
pub const MAX_CPUS: u32 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Virtiofs,
    NineP,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("invalid value {value:?} for {name}: expected {allowed}")]
    Invalid {
        name: String,
        value: String,
        allowed: String,
    },
    #[error("{name} needs a value")]
    MissingValue { name: String },
    #[error("{name} is not supported on x86_64: AP passthrough exists only on s390x")]
    ApPassthrough { name: String },
    #[error(
        "unknown runq annotation {name}: runq's annotations are {}",
        annotation_names()
    )]
    UnknownAnnotation { name: String },
}

/// Annotations whose name starts with this set runq options for one container. The engine
/// writes them from its caller (`docker run --annotation`, a pod's annotations that the
/// CRI runtime is configured to pass on), never from the image.
pub const ANNOTATION_PREFIX: &str = "run.runq.";

/// The options an annotation may set, by the flag's name without its dashes: what the
/// operator may choose per container. Host paths (runc, assets, kernel) and the accelerator
/// stay with the runtime's flags.
const ANNOTATED: &[Key] = &[
    Key::Cpu,
    Key::Mem,
    Key::Fs,
    Key::NinePCache,
    Key::CpuArgs,
    Key::Net,
    Key::NoExec,
    Key::MirrorListeners,
    Key::MirrorConns,
    Key::Template,
];

/// runq's annotations, for messages.
fn annotation_names() -> String {
    annotated_options()
        .filter_map(|(name, _)| name)
        .map(|name| format!("{ANNOTATION_PREFIX}{name}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn annotated_options() -> impl Iterator<Item = (Option<&'static str>, &'static OptionSpec)> {
    OPTIONS
        .iter()
        .filter(|option| ANNOTATED.contains(&option.key))
        .map(|option| (option.flag.and_then(|f| f.strip_prefix("--")), option))
}

/// One runq option; the flag and the variable that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Cpu,
    Mem,
    Dns,
    DnsOpts,
    DnsSearch,
    DnsPreserve,
    Tmpfs,
    NinePCache,
    CpuArgs,
    NoExec,
    RunqEnv,
    NestedVm,
    Systemd,
    Fs,
    Net,
    Accel,
    Runc,
    Kernel,
    Initrd,
    Assets,
    BootTimeout,
    Debug,
    Timeline,
    Template,
    RootDisk,
    RootDiskExclude,
    MirrorListeners,
    MirrorConns,
}

struct OptionSpec {
    key: Key,
    flag: Option<&'static str>,
    vars: &'static [&'static str],
    /// Boolean flags take no value on the command line.
    boolean: bool,
}

const OPTIONS: &[OptionSpec] = &[
    spec(Key::Cpu, Some("--cpu"), &["RUNQ_CPU"], false),
    spec(Key::Mem, Some("--mem"), &["RUNQ_MEM"], false),
    spec(Key::Dns, Some("--dns"), &["RUNQ_DNS"], false),
    spec(
        Key::DnsOpts,
        Some("--dns-opts"),
        &["RUNQ_DNS_OPTS", "RUNQ_DNS_OPT"],
        false,
    ),
    spec(
        Key::DnsSearch,
        Some("--dns-search"),
        &["RUNQ_DNS_SEARCH"],
        false,
    ),
    spec(
        Key::DnsPreserve,
        Some("--dns-preserve"),
        &["RUNQ_DNS_PRESERVE"],
        true,
    ),
    spec(Key::Tmpfs, Some("--tmpfs"), &[], false),
    spec(Key::NinePCache, Some("--9pcache"), &["RUNQ_9PCACHE"], false),
    spec(Key::CpuArgs, Some("--cpuargs"), &["RUNQ_CPUARGS"], false),
    spec(Key::NoExec, Some("--noexec"), &["RUNQ_NOEXEC"], true),
    spec(Key::RunqEnv, Some("--runqenv"), &["RUNQ_RUNQENV"], true),
    spec(Key::NestedVm, Some("--nestedvm"), &[], true),
    spec(Key::Systemd, None, &["RUNQ_SYSTEMD"], true),
    spec(Key::Fs, Some("--fs"), &["RUNQ_FS"], false),
    spec(Key::Net, Some("--net"), &["RUNQ_NET"], false),
    spec(Key::Accel, Some("--accel"), &[], false),
    spec(Key::Runc, Some("--runc"), &[], false),
    spec(Key::Kernel, Some("--kernel"), &[], false),
    spec(Key::Initrd, Some("--initrd"), &[], false),
    spec(Key::Assets, Some("--assets"), &[], false),
    spec(
        Key::BootTimeout,
        Some("--boot-timeout"),
        &["RUNQ_BOOT_TIMEOUT"],
        false,
    ),
    // No variable: the mirror's caps are host resources, which the image's ENV must not
    // raise.
    spec(Key::MirrorListeners, Some("--mirror-listeners"), &[], false),
    spec(Key::MirrorConns, Some("--mirror-conns"), &[], false),
    spec(Key::Debug, Some("--runq-debug"), &["RUNQ_DEBUG"], true),
    spec(Key::Timeline, None, &["RUNQ_TIMELINE"], true),
    spec(Key::Template, Some("--template"), &["RUNQ_TEMPLATE"], false),
    spec(Key::RootDisk, None, &["RUNQ_ROOTDISK"], false),
    spec(
        Key::RootDiskExclude,
        None,
        &["RUNQ_ROOTDISK_EXCLUDE"],
        false,
    ),
];

const fn spec(
    key: Key,
    flag: Option<&'static str>,
    vars: &'static [&'static str],
    boolean: bool,
) -> OptionSpec {
    OptionSpec {
        key,
        flag,
        vars,
        boolean,
    }
}

/// How a runq flag on the command line is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    Boolean,
    WithValue,
}

/// Whether `flag` (without any `=value`) is one of runq's own, and whether it takes a value.
pub fn runq_flag(flag: &str) -> Option<FlagKind> {
    OPTIONS
        .iter()
        .find(|option| option.flag == Some(flag))
        .map(|option| {
            if option.boolean {
                FlagKind::Boolean
            } else {
                FlagKind::WithValue
            }
        })
}

impl RunqOptions {
    /// Applies a flag from the command line; boolean flags may come with no value.
    pub fn set_flag(&mut self, flag: &str, value: Option<&str>) -> Result<(), OptionError> {
        let Some(option) = OPTIONS.iter().find(|o| o.flag == Some(flag)) else {
            return Err(OptionError::Invalid {
                name: flag.to_string(),
                value: value.unwrap_or_default().to_string(),
                allowed: "a runq option".into(),
            });
        };
        match (value, option.boolean) {
            (Some(value), _) => self.set(option.key, flag, value),
            (None, true) => self.set(option.key, flag, "true"),
            (None, false) => Err(OptionError::MissingValue {
                name: flag.to_string(),
            }),
        }
    }

    /// Applies runq's annotations (`run.runq.<flag>`) among a container's.
    pub fn apply_annotations<'a>(
        &mut self,
        annotations: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), OptionError> {
        for (name, value) in annotations {
            let Some(short) = name.strip_prefix(ANNOTATION_PREFIX) else {
                continue;
            };
            let option = annotated_options()
                .find(|(flag, _)| *flag == Some(short))
                .map(|(_, option)| option)
                .ok_or_else(|| OptionError::UnknownAnnotation {
                    name: name.to_string(),
                })?;
            let value = match (option.boolean, value) {
                (true, "") => "true",
                _ => value,
            };
            self.set(option.key, name, value)?;
        }
        Ok(())
    }

    /// Applies the `RUNQ_*` variables found in a container's environment (`KEY=VALUE` lines).
    pub fn apply_env<S: AsRef<str>>(&mut self, env: &[S]) -> Result<(), OptionError> {
        for line in env {
            let Some((name, value)) = line.as_ref().split_once('=') else {
                continue;
            };
            if name == "RUNQ_APUUID" {
                return Err(OptionError::ApPassthrough {
                    name: name.to_string(),
                });
            }
            if let Some(option) = OPTIONS.iter().find(|o| o.vars.contains(&name)) {
                let operators_template = self.template;
                self.set(option.key, name, value)?;
                // The environment is the image's: it may have its VM booted, never restored
                // where the operator said to boot (`--template off`, `runq-booted`).
                self.template &= operators_template;
            }
        }
        Ok(())
    }

    fn set(&mut self, key: Key, name: &str, value: &str) -> Result<(), OptionError> {
        let invalid = |allowed: &str| OptionError::Invalid {
            name: name.to_string(),
            value: value.to_string(),
            allowed: allowed.to_string(),
        };
        match key {
            Key::Cpu => {
                self.cpus = Some(parse_in_range(value, 1, MAX_CPUS).ok_or_else(|| {
                    invalid(&format!("a whole number of vCPUs from 1 to {MAX_CPUS}"))
                })?)
            }
            Key::Mem => {
                self.mem_mib = Some(parse_in_range(value, MIN_MEM_MIB, MAX_MEM_MIB).ok_or_else(
                    || {
                        invalid(&format!(
                            "a whole number of MiB from {MIN_MEM_MIB} to {MAX_MEM_MIB}, e.g. 512"
                        ))
                    },
                )?)
            }
            Key::Dns => self.dns = Some(split_list(value)),
            Key::DnsOpts => self.dns_opts = Some(split_list(value)),
            Key::DnsSearch => self.dns_search = Some(split_list(value)),
            Key::DnsPreserve => {
                self.dns_preserve = parse_bool(value).ok_or_else(|| invalid(BOOL))?
            }
            Key::Tmpfs => self.tmpfs = split_list(value),
            Key::NinePCache => {
                self.ninep_cache = match value {
                    "none" => NinePCache::None,
                    "loose" => NinePCache::Loose,
                    "fscache" => NinePCache::Fscache,
                    "mmap" => NinePCache::Mmap,
                    _ => return Err(invalid("one of none, loose, fscache, mmap")),
                }
            }
            Key::CpuArgs => {
                if value.is_empty() || value.contains(char::is_whitespace) {
                    return Err(invalid("a QEMU -cpu value without spaces, e.g. max"));
                }
                self.cpu_model = Some(value.to_string())
            }
            Key::NoExec => self.noexec = parse_bool(value).ok_or_else(|| invalid(BOOL))?,
            Key::RunqEnv => self.runqenv = parse_bool(value).ok_or_else(|| invalid(BOOL))?,
            Key::NestedVm => self.nested_vm = parse_bool(value).ok_or_else(|| invalid(BOOL))?,
            Key::Systemd => self.systemd = parse_bool(value).ok_or_else(|| invalid(BOOL))?,
            Key::Debug => self.debug = parse_bool(value).ok_or_else(|| invalid(BOOL))?,
            Key::Timeline => self.timeline = parse_bool(value).ok_or_else(|| invalid(BOOL))?,
            Key::Template => self.template = parse_bool(value).ok_or_else(|| invalid(BOOL))?,
            Key::Fs => {
                self.fs = match value {
                    "virtiofs" => FsKind::Virtiofs,
                    "9p" => FsKind::NineP,
                    _ => return Err(invalid("one of virtiofs, 9p")),
                }
            }
            Key::Net => {
                self.net = match value {
                    "tap" => NetMode::Tap,
                    "macvtap" => NetMode::Macvtap,
                    "shared" => NetMode::Shared,
                    _ => return Err(invalid("one of tap, macvtap, shared")),
                }
            }
            Key::Accel => {
                self.accel = match value {
                    "auto" => AccelChoice::Auto,
                    "kvm" => AccelChoice::Kvm,
                    "tcg" => AccelChoice::Tcg,
                    _ => return Err(invalid("one of auto, kvm, tcg")),
                }
            }
            Key::Runc => self.runc = Some(non_empty_path(value).ok_or_else(|| invalid(PATH))?),
            Key::Kernel => self.kernel = Some(non_empty_path(value).ok_or_else(|| invalid(PATH))?),
            Key::Initrd => self.initrd = Some(non_empty_path(value).ok_or_else(|| invalid(PATH))?),
            Key::Assets => self.assets = Some(non_empty_path(value).ok_or_else(|| invalid(PATH))?),
            Key::MirrorListeners => {
                let most = MirrorCaps::MAX_LISTENERS;
                self.mirror.listeners = parse_in_range(value, 0, most)
                    .ok_or_else(|| invalid(&format!("a whole number from 0 to {most}")))?
            }
            Key::MirrorConns => {
                let most = MirrorCaps::MAX_CONNS;
                self.mirror.conns = parse_in_range(value, 0, most)
                    .ok_or_else(|| invalid(&format!("a whole number from 0 to {most}")))?
            }
            Key::BootTimeout => {
                self.boot_timeout_secs = parse_in_range(value, 1, 3600)
                    .ok_or_else(|| invalid("a whole number of seconds from 1 to 3600"))?
            }
            Key::RootDisk => {
                self.root_disk = match value.trim() {
                    "" => None,
                    id => Some(id.to_string()),
                }
            }
            Key::RootDiskExclude => {
                let paths = split_list(value);
                if paths.iter().any(|p| !p.starts_with('/')) {
                    return Err(invalid(
                        "comma-separated absolute paths, e.g. /var/cache,/tmp",
                    ));
                }
                self.root_disk_exclude = paths;
            }
        }
        Ok(())
    }
}

const BOOL: &str = "one of 1, 0, true, false, yes, no, on, off";
const PATH: &str = "a non-empty path";

fn parse_in_range(value: &str, min: u32, max: u32) -> Option<u32> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

fn non_empty_path(value: &str) -> Option<PathBuf> {
    (!value.is_empty()).then(|| PathBuf::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_beats_flag() {
        let mut options = RunqOptions::default();
        options.set_flag("--mem", Some("512")).unwrap();
        options.set_flag("--cpu", Some("2")).unwrap();
        options.apply_env(&["RUNQ_MEM=1024", "PATH=/bin"]).unwrap();
        assert_eq!(options.mem_mib, Some(1024));
        assert_eq!(options.cpus, Some(2));
    }

    #[test]
    fn the_environment_may_turn_templates_off_but_never_on() {
        let mut options = RunqOptions::default();
        assert!(options.template);
        options.apply_env(&["RUNQ_TEMPLATE=1"]).unwrap();
        assert!(options.template);
        options.apply_env(&["RUNQ_TEMPLATE=0"]).unwrap();
        assert!(!options.template, "the environment may have its VM booted");
        let mut booted = RunqOptions::default();
        booted.set_flag("--template", Some("off")).unwrap();
        booted.apply_env(&["RUNQ_TEMPLATE=1"]).unwrap();
        assert!(
            !booted.template,
            "but not restored where the operator said to boot"
        );
    }

    #[test]
    fn invalid_values_name_the_variable_and_the_allowed_values() {
        let mut options = RunqOptions::default();
        let err = options.apply_env(&["RUNQ_MEM=lots"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("RUNQ_MEM"), "{text}");
        assert!(text.contains("lots"), "{text}");
        assert!(text.contains("MiB"), "{text}");

        let err = options.apply_env(&["RUNQ_CPU=0"]).unwrap_err().to_string();
        assert!(
            err.contains("RUNQ_CPU") && err.contains("1 to 255"),
            "{err}"
        );

        let err = options
            .apply_env(&["RUNQ_9PCACHE=fast"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("none, loose, fscache, mmap"), "{err}");

        let err = options
            .set_flag("--fs", Some("nfs"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--fs") && err.contains("virtiofs, 9p"),
            "{err}"
        );
    }

    #[test]
    fn boolean_flags_need_no_value_and_value_flags_do() {
        let mut options = RunqOptions::default();
        options.set_flag("--noexec", None).unwrap();
        assert!(options.noexec);
        assert_eq!(
            options.set_flag("--cpu", None),
            Err(OptionError::MissingValue {
                name: "--cpu".into()
            })
        );
        assert_eq!(runq_flag("--noexec"), Some(FlagKind::Boolean));
        assert_eq!(runq_flag("--mem"), Some(FlagKind::WithValue));
        assert_eq!(runq_flag("--root"), None);
    }

    #[test]
    fn lists_split_on_commas_and_empty_variable_clears() {
        let mut options = RunqOptions::default();
        options.set_flag("--dns", Some("1.1.1.1, 8.8.8.8")).unwrap();
        assert_eq!(
            options.dns,
            Some(vec!["1.1.1.1".to_string(), "8.8.8.8".to_string()])
        );
        options.apply_env(&["RUNQ_DNS="]).unwrap();
        assert_eq!(options.dns, Some(vec![]));
        options.apply_env(&["RUNQ_DNS_OPT=ndots:1"]).unwrap();
        assert_eq!(options.dns_opts, Some(vec!["ndots:1".to_string()]));
    }

    #[test]
    fn the_mirror_s_caps_are_the_operator_s_within_the_proxy_s_descriptors() {
        let mut options = RunqOptions::default();
        assert_eq!(options.mirror, MirrorCaps::default());
        options.set_flag("--mirror-listeners", Some("16")).unwrap();
        options
            .apply_annotations([("run.runq.mirror-conns", "64")])
            .unwrap();
        // The image's ENV may not raise them: there is no variable.
        options
            .apply_env(&["RUNQ_MIRROR_LISTENERS=1024", "RUNQ_MIRROR_CONNS=2048"])
            .unwrap();
        assert_eq!(
            options.mirror,
            MirrorCaps {
                listeners: 16,
                conns: 64
            }
        );
        let err = options
            .set_flag("--mirror-conns", Some("5000"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--mirror-conns") && err.contains("0 to 2048"),
            "{err}"
        );
    }

    #[test]
    fn ap_passthrough_is_refused_on_x86() {
        let err = RunqOptions::default()
            .apply_env(&["RUNQ_APUUID=abc"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("s390x"), "{err}");
    }

    #[test]
    fn huge_and_hostile_values_are_refused_by_name() {
        let huge = "9".repeat(4096);
        for (line, name) in [
            (format!("RUNQ_MEM={huge}"), "RUNQ_MEM"),
            ("RUNQ_MEM=18446744073709551616".to_string(), "RUNQ_MEM"),
            ("RUNQ_CPU=4294967296".to_string(), "RUNQ_CPU"),
            ("RUNQ_CPU=-1".to_string(), "RUNQ_CPU"),
            (format!("RUNQ_BOOT_TIMEOUT={huge}"), "RUNQ_BOOT_TIMEOUT"),
            ("RUNQ_CPUARGS=max -device evil".to_string(), "RUNQ_CPUARGS"),
            (
                "RUNQ_ROOTDISK_EXCLUDE=relative/path".to_string(),
                "RUNQ_ROOTDISK_EXCLUDE",
            ),
            ("RUNQ_NET=\u{0}".to_string(), "RUNQ_NET"),
        ] {
            let err = RunqOptions::default()
                .apply_env(&[line.as_str()])
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{line}: {err}");
            assert!(err.len() < 5000 + huge.len(), "{err}");
        }
    }

    #[test]
    fn annotations_set_the_operators_options_and_unknown_ones_are_refused() {
        let mut options = RunqOptions::default();
        options
            .apply_annotations([
                ("run.runq.fs", "9p"),
                ("run.runq.9pcache", "loose"),
                ("run.runq.cpuargs", "qemu64"),
                ("run.runq.noexec", ""),
                ("org.example", "anything"),
            ])
            .unwrap();
        assert_eq!(options.fs, FsKind::NineP);
        assert_eq!(options.ninep_cache, NinePCache::Loose);
        assert_eq!(options.cpu_model.as_deref(), Some("qemu64"));
        assert!(options.noexec);

        let err = RunqOptions::default()
            .apply_annotations([("run.runq.runc", "/tmp/runc")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("run.runq.runc") && err.contains("run.runq.fs"),
            "{err}"
        );
        let err = RunqOptions::default()
            .apply_annotations([("run.runq.fs", "nfs")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("run.runq.fs") && err.contains("virtiofs, 9p"),
            "{err}"
        );
    }

    #[test]
    fn root_disk_variables() {
        let mut options = RunqOptions::default();
        options
            .apply_env(&[
                "RUNQ_ROOTDISK=data",
                "RUNQ_ROOTDISK_EXCLUDE=/tmp, /var/cache",
            ])
            .unwrap();
        assert_eq!(options.root_disk.as_deref(), Some("data"));
        assert_eq!(options.root_disk_exclude, ["/tmp", "/var/cache"]);
    }
}

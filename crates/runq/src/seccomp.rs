//! OCI seccomp profiles compiled to BPF with libseccomp, on the host, as runc would build them.
//! The guest init only has to load the program, so it needs no libseccomp of its own.

use std::io::{Read, Seek, SeekFrom};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator,
};
use runq_shared::config::SeccompFilter;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SeccompError {
    #[error("seccomp: {0}")]
    Libseccomp(#[from] libseccomp::error::SeccompError),
    #[error("seccomp: action {0:?} is not supported by runq")]
    UnsupportedAction(LinuxSeccompAction),
    #[error("seccomp: architecture {0:?} is not supported by runq")]
    UnsupportedArch(Arch),
    #[error("seccomp: export the BPF program: {0}")]
    Export(std::io::Error),
}

const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;
const SECCOMP_FILTER_FLAG_LOG: u32 = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: u32 = 4;

pub fn compile(profile: &LinuxSeccomp) -> Result<SeccompFilter, SeccompError> {
    let default_action = action(profile.default_action(), profile.default_errno_ret())?;
    let mut filter = ScmpFilterContext::new(default_action)?;
    // A binary tree by syscall number instead of a chain of comparisons. When the filter is
    // loaded, the guest kernel runs it once for every syscall number of every architecture
    // (its cache of always-allowed calls); along Docker's ~350-rule chain that took 10-15 ms
    // under TCG, along the tree's log2 a fraction of it.
    filter.set_ctl_optimize(2)?;
    for arch in profile.architectures().iter().flatten() {
        filter.add_arch(scmp_arch(*arch)?)?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let rule_action = action(rule.action(), rule.errno_ret())?;
        // libseccomp refuses rules that repeat the default; runc skips them as well.
        if rule_action == default_action {
            continue;
        }
        for name in rule.names() {
            // Profiles list syscalls of newer kernels or other architectures: skipped, as runc.
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            add_rule(&mut filter, rule_action, syscall, rule.args().as_deref())?;
        }
    }
    Ok(SeccompFilter {
        program: export(&filter)?,
        flags: flags(profile.flags().as_deref()),
    })
}

/// What no host-side process needs once the proxy's setup is done: mounts and namespaces,
/// new programs, other processes' memory, the kernel's and the machine's settings, and
/// io_uring (whose operations seccomp does not see): every call Docker's default profile
/// refuses a container without added capabilities, and more. The proxy loads it on itself
/// after starting QEMU, which has its own `-sandbox`; virtiofsd and passt filter themselves.
const HOST_SIDE_DENIED: &[&str] = &[
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "execve",
    "execveat",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "keyctl",
    "add_key",
    "request_key",
    "iopl",
    "ioperm",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "vhangup",
    "sethostname",
    "setdomainname",
    "mknod",
    "mknodat",
    "lookup_dcookie",
    "uselib",
    "personality",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setfsuid",
    "setfsgid",
    "setgroups",
    "capset",
    "mbind",
    "set_mempolicy",
    "get_mempolicy",
    "move_pages",
    "migrate_pages",
    "sysfs",
    "_sysctl",
    "ustat",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "nfsservctl",
];

/// The namespace flags of clone(2): a new thread needs none of them.
const CLONE_NAMESPACES: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// runq's seccomp filter for the host side (see [`HOST_SIDE_DENIED`]): those calls fail with
/// EPERM, clone3 with ENOSYS (its flags are behind a pointer, out of seccomp's sight; the C
/// library then falls back to clone, whose namespace flags are refused), and a call of
/// another architecture's ABI ends the process. Synchronised to every thread of the proxy.
pub fn host_side() -> Result<SeccompFilter, SeccompError> {
    let mut filter = ScmpFilterContext::new(ScmpAction::Allow)?;
    filter.set_act_badarch(ScmpAction::KillProcess)?;
    filter.set_ctl_optimize(2)?;
    let denied = ScmpAction::Errno(libc::EPERM);
    for name in HOST_SIDE_DENIED {
        // A name this libseccomp does not know is a call the kernel cannot have either.
        if let Ok(syscall) = ScmpSyscall::from_name(name) {
            filter.add_rule(denied, syscall)?;
        }
    }
    filter.add_rule(
        ScmpAction::Errno(libc::ENOSYS),
        ScmpSyscall::from_name("clone3")?,
    )?;
    let clone = ScmpSyscall::from_name("clone")?;
    for flag in CLONE_NAMESPACES {
        let has_flag = ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(*flag), *flag);
        filter.add_rule_conditional(denied, clone, &[has_flag])?;
    }
    Ok(SeccompFilter {
        program: export(&filter)?,
        flags: SECCOMP_FILTER_FLAG_TSYNC,
    })
}

/// Conditions on distinct arguments go in one rule; libseccomp cannot AND two conditions on
/// the same argument, so runc then adds one rule per condition, and so does runq.
fn add_rule(
    filter: &mut ScmpFilterContext,
    action: ScmpAction,
    syscall: ScmpSyscall,
    args: Option<&[LinuxSeccompArg]>,
) -> Result<(), SeccompError> {
    let conditions: Vec<ScmpArgCompare> = args.unwrap_or_default().iter().map(condition).collect();
    let mut indexes: Vec<usize> = args.unwrap_or_default().iter().map(|a| a.index()).collect();
    indexes.sort_unstable();
    indexes.dedup();
    if conditions.is_empty() {
        filter.add_rule(action, syscall)?;
    } else if indexes.len() == conditions.len() {
        filter.add_rule_conditional(action, syscall, &conditions)?;
    } else {
        for condition in conditions {
            filter.add_rule_conditional(action, syscall, &[condition])?;
        }
    }
    Ok(())
}

fn condition(arg: &LinuxSeccompArg) -> ScmpArgCompare {
    let index = arg.index() as u32;
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        // OCI: value is the mask, valueTwo the value compared with.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    ScmpArgCompare::new(index, op, datum)
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.map(|e| e as i32).unwrap_or(libc::EPERM))
        }
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.map(|e| e as u16).unwrap_or(libc::EPERM as u16))
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        // The notifying process would have to live in the guest; not offered.
        other => return Err(SeccompError::UnsupportedAction(other)),
    })
}

fn scmp_arch(arch: Arch) -> Result<ScmpArch, SeccompError> {
    Ok(match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        other => return Err(SeccompError::UnsupportedArch(other)),
    })
}

fn flags(flags: Option<&[LinuxSeccompFilterFlag]>) -> u32 {
    flags
        .unwrap_or_default()
        .iter()
        .map(|flag| match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            // Only meaningful with a notify listener, which runq does not offer.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        })
        .fold(0, |all, flag| all | flag)
}

/// libseccomp 2.5 exports only to a file descriptor.
fn export(filter: &ScmpFilterContext) -> Result<Vec<u8>, SeccompError> {
    let fd = memfd_create(c"runq-seccomp", MemFdCreateFlag::MFD_CLOEXEC)
        .map_err(|e| SeccompError::Export(e.into()))?;
    let mut file = std::fs::File::from(fd);
    filter.export_bpf(&file)?;
    let mut program = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut program))
        .map_err(SeccompError::Export)?;
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompBuilder, LinuxSyscallBuilder};

    fn profile(
        default: LinuxSeccompAction,
        rules: Vec<oci_spec::runtime::LinuxSyscall>,
    ) -> LinuxSeccomp {
        LinuxSeccompBuilder::default()
            .default_action(default)
            .architectures(vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86])
            .flags(vec![LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow])
            .syscalls(rules)
            .build()
            .unwrap()
    }

    fn rule(names: &[&str], action: LinuxSeccompAction) -> oci_spec::runtime::LinuxSyscall {
        LinuxSyscallBuilder::default()
            .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .action(action)
            .build()
            .unwrap()
    }

    #[test]
    fn a_deny_list_compiles_to_whole_bpf_instructions() {
        let filter = compile(&profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![rule(
                &["mkdir", "mkdirat"],
                LinuxSeccompAction::ScmpActErrno,
            )],
        ))
        .unwrap();
        assert!(filter.program.len() >= 8 * 4);
        assert_eq!(filter.program.len() % 8, 0);
        assert_eq!(filter.flags, SECCOMP_FILTER_FLAG_SPEC_ALLOW);
    }

    #[test]
    fn unknown_syscalls_and_rules_repeating_the_default_are_skipped() {
        let with_unknown = compile(&profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![
                rule(
                    &["read", "no_such_syscall_xyz"],
                    LinuxSeccompAction::ScmpActAllow,
                ),
                rule(&["write"], LinuxSeccompAction::ScmpActErrno),
            ],
        ))
        .unwrap();
        let plain = compile(&profile(
            LinuxSeccompAction::ScmpActErrno,
            vec![rule(&["read"], LinuxSeccompAction::ScmpActAllow)],
        ))
        .unwrap();
        assert_eq!(with_unknown.program, plain.program);
    }

    #[test]
    fn the_host_side_filter_compiles_and_synchronises_every_thread() {
        let filter = host_side().unwrap();
        assert!(filter.program.len() >= 8 * HOST_SIDE_DENIED.len());
        assert_eq!(filter.program.len() % 8, 0);
        assert_eq!(filter.flags, SECCOMP_FILTER_FLAG_TSYNC);
    }

    /// Loaded on a thread of its own (without TSYNC, so the rest of the test process stays
    /// unfiltered): the calls the host side never needs fail with EPERM where they would
    /// otherwise fail with ENOENT, and ordinary calls work.
    #[test]
    fn the_host_side_filter_refuses_mounts_exec_and_namespaces() {
        let mut filter = host_side().unwrap();
        filter.flags = 0;
        let results = std::thread::spawn(move || {
            nix::sys::prctl::set_no_new_privs().unwrap();
            runq_shared::seccomp::load(&filter).unwrap();
            let missing = "/nonexistent-runq-seccomp-test";
            let mount = nix::mount::mount(
                Some(missing),
                missing,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            );
            let exec = nix::unistd::execv(c"/nonexistent-runq-seccomp-test", &[c"x"]);
            let unshare = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS);
            let stat = std::fs::metadata(missing).map(drop).map_err(|e| e.kind());
            (mount, exec.map(|_| ()), unshare, stat)
        })
        .join()
        .unwrap();
        use nix::errno::Errno::EPERM;
        assert_eq!(results.0, Err(EPERM));
        assert_eq!(results.1, Err(EPERM));
        assert_eq!(results.2, Err(EPERM));
        assert_eq!(results.3, Err(std::io::ErrorKind::NotFound));
    }

    #[test]
    fn notify_is_refused_by_name() {
        let err = compile(&profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![rule(&["mkdir"], LinuxSeccompAction::ScmpActNotify)],
        ))
        .unwrap_err();
        assert!(err.to_string().contains("ScmpActNotify"), "{err}");
    }
}

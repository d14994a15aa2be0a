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
    fn notify_is_refused_by_name() {
        let err = compile(&profile(
            LinuxSeccompAction::ScmpActAllow,
            vec![rule(&["mkdir"], LinuxSeccompAction::ScmpActNotify)],
        ))
        .unwrap_err();
        assert!(err.to_string().contains("ScmpActNotify"), "{err}");
    }
}

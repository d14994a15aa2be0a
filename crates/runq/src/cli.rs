//! The runtime's command line as engines write it:
//!
//! ```text
//! runq [runq flags] [runc global flags] COMMAND [command flags and arguments]
//! ```
//!
//! runq's own flags are taken out; everything else reaches runc untouched and in order.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::options::{runq_flag, FlagKind, OptionError, RunqOptions};

#[derive(Debug, Default)]
pub struct Invocation {
    pub options: RunqOptions,
    /// runc's global flags, as given.
    pub runc_globals: Vec<OsString>,
    pub log: Option<PathBuf>,
    pub log_json: bool,
    /// runc's state root (`--root`), as given.
    pub runc_root: Option<PathBuf>,
    pub command: Option<String>,
    /// Everything after the command, as given.
    pub args: Vec<OsString>,
}

/// Where errors go when the command line itself cannot be read: the `--log` and
/// `--log-format` flags, found by a plain scan.
pub fn log_flags(argv: &[OsString]) -> (Option<PathBuf>, bool) {
    let mut log = None;
    let mut json = false;
    let mut args = argv.iter().filter_map(|a| a.to_str());
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (arg, None),
        };
        match name.trim_start_matches('-') {
            "log" => log = inline.or_else(|| args.next()).map(PathBuf::from),
            "log-format" => json = inline.or_else(|| args.next()) == Some("json"),
            _ => {}
        }
    }
    (log, json)
}

/// runc 1.1's global flags that take a value.
const RUNC_VALUE_FLAGS: &[&str] = &["root", "log", "log-format", "criu", "rootless"];

pub fn parse(argv: &[OsString]) -> Result<Invocation, OptionError> {
    let mut invocation = Invocation::default();
    let mut rest = argv.iter().skip(1);
    while let Some(arg) = rest.next() {
        let Some(text) = arg.to_str() else {
            invocation.runc_globals.push(arg.clone());
            continue;
        };
        if !text.starts_with('-') {
            invocation.command = Some(text.to_string());
            invocation.args = rest.cloned().collect();
            break;
        }
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (text, None),
        };
        if let Some(kind) = runq_flag(name) {
            let value = match (inline, kind) {
                (Some(value), _) => Some(value),
                (None, FlagKind::Boolean) => None,
                (None, FlagKind::WithValue) => Some(
                    rest.next()
                        .and_then(|v| v.to_str())
                        .ok_or_else(|| OptionError::MissingValue {
                            name: name.to_string(),
                        })?
                        .to_string(),
                ),
            };
            invocation.options.set_flag(name, value.as_deref())?;
            continue;
        }
        invocation.runc_globals.push(arg.clone());
        let bare = name.trim_start_matches('-');
        if RUNC_VALUE_FLAGS.contains(&bare) {
            let value = match inline {
                Some(value) => OsString::from(value),
                None => {
                    let value = rest
                        .next()
                        .cloned()
                        .ok_or_else(|| OptionError::MissingValue {
                            name: name.to_string(),
                        })?;
                    invocation.runc_globals.push(value.clone());
                    value
                }
            };
            match bare {
                "log" => invocation.log = Some(PathBuf::from(value)),
                "log-format" => invocation.log_json = value == "json",
                "root" => invocation.runc_root = Some(PathBuf::from(value)),
                _ => {}
            }
        }
    }
    Ok(invocation)
}

impl Invocation {
    /// runc's state root: the one given, or runc's default.
    pub fn runc_root(&self) -> PathBuf {
        self.runc_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(runq_shared::layout::DEFAULT_RUNC_ROOT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn docker_create_line_keeps_runc_flags_in_order() {
        let inv = parse(&argv(
            "runq --cpu 2 --mem=512 --root /run/runq --log /x/log.json --log-format json \
             create --bundle /b --pid-file /p id1",
        ))
        .unwrap();
        assert_eq!(inv.options.cpus, Some(2));
        assert_eq!(inv.options.mem_mib, Some(512));
        assert_eq!(
            inv.runc_globals,
            argv("--root /run/runq --log /x/log.json --log-format json")
        );
        assert_eq!(inv.log, Some(PathBuf::from("/x/log.json")));
        assert!(inv.log_json);
        assert_eq!(inv.runc_root(), PathBuf::from("/run/runq"));
        assert_eq!(inv.command.as_deref(), Some("create"));
        assert_eq!(inv.args, argv("--bundle /b --pid-file /p id1"));
    }

    #[test]
    fn conmon_line_without_globals() {
        let inv = parse(&argv("runq create --bundle /b --pid-file /p id")).unwrap();
        assert!(inv.runc_globals.is_empty());
        assert_eq!(inv.command.as_deref(), Some("create"));
        assert_eq!(inv.runc_root(), PathBuf::from("/run/runc"));
    }

    #[test]
    fn boolean_runc_flags_pass_and_runq_booleans_are_taken() {
        let inv = parse(&argv("runq --noexec --debug --systemd-cgroup kill id 15")).unwrap();
        assert!(inv.options.noexec);
        assert_eq!(inv.runc_globals, argv("--debug --systemd-cgroup"));
        assert_eq!(inv.args, argv("id 15"));
    }

    #[test]
    fn flags_after_the_command_are_not_runqs() {
        let inv = parse(&argv("runq run --cpu 3 id")).unwrap();
        assert_eq!(inv.options.cpus, None);
        assert_eq!(inv.args, argv("--cpu 3 id"));
    }

    #[test]
    fn log_flags_are_found_even_when_parsing_fails() {
        let (log, json) = log_flags(&argv("runq --mem lots --log /l --log-format=json create"));
        assert_eq!(log, Some(PathBuf::from("/l")));
        assert!(json);
    }

    #[test]
    fn bad_runq_flag_values_are_named() {
        let err = parse(&argv("runq --mem lots create id")).unwrap_err();
        assert!(err.to_string().contains("--mem"), "{err}");
        let err = parse(&argv("runq --cpu")).unwrap_err();
        assert!(err.to_string().contains("--cpu needs a value"), "{err}");
    }
}

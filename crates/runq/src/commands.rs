//! The commands runq changes; all others go to runc untouched.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

use crate::bundle::Bundle;
use crate::cli::Invocation;
use crate::host;
use crate::log::Logger;
use crate::rewrite::{self, HostFacts};
use crate::runc::{exit_code, Runc};
use crate::start::StartWatch;

/// Runs one invocation; returns the exit status (when runq did not become runc).
pub fn dispatch(invocation: Invocation, logger: &Logger) -> Result<i32> {
    let runc = Runc {
        path: invocation
            .options
            .runc
            .clone()
            .unwrap_or_else(|| PathBuf::from("runc")),
        globals: invocation.runc_globals.clone(),
    };
    let Some(command) = invocation.command.as_deref() else {
        // `runq --version`, `runq --help`: runq's word first, then runc's.
        if invocation
            .runc_globals
            .iter()
            .any(|a| a == "--version" || a == "-v")
        {
            println!("runq version {}", env!("CARGO_PKG_VERSION"));
        }
        return Err(runc.exec_globals_only().into());
    };
    let args = &invocation.args;
    let runc_root = invocation.runc_root();
    match command {
        "create" => {
            let parsed = parse_args::<CreateArgs>("create", args)?;
            let bundle = Bundle::new(
                &parsed.create.bundle,
                &runc_root,
                &parsed.create.container_id,
            )?;
            if is_pod_sandbox(&bundle)? {
                return Err(runc.exec(command, args).into());
            }
            let templates = prepare_bundle(&bundle, &invocation, logger)?;
            // A child rather than exec, to clean up when runc refuses: the engine will not
            // call delete for a container that was never created.
            let status = run_runc(&runc, command, args, &bundle, templates)?;
            if !status.success() {
                bundle.clean_up()?;
            }
            Ok(exit_code(status))
        }
        "run" => {
            let parsed = parse_args::<RunArgs>("run", args)?;
            let bundle = Bundle::new(&parsed.run.bundle, &runc_root, &parsed.run.container_id)?;
            if is_pod_sandbox(&bundle)? {
                return Err(runc.exec(command, args).into());
            }
            let templates = prepare_bundle(&bundle, &invocation, logger)?;
            let watch = StartWatch::open(bundle.private_dir())?;
            let status = run_runc(&runc, command, args, &bundle, templates)?;
            // A detached container lives on; `runq delete` cleans up after it.
            if !parsed.run.detach {
                if let Some(watch) = watch {
                    watch.after_foreground_run();
                }
                bundle.clean_up()?;
            } else if let (true, Some(watch)) = (status.success(), watch) {
                watch.wait(&runc, &parsed.run.container_id, boot_timeout(&bundle)?)?;
            }
            Ok(exit_code(status))
        }
        "start" => {
            let id = last_positional(args).context("start: no container id given")?;
            let private = crate::bundle::private_dir(&runc_root, &id)?;
            // A container runq left to runc, or that runc will refuse to start: runc's word.
            let Some(watch) = StartWatch::open(&private)? else {
                return Err(runc.exec(command, args).into());
            };
            let status = runc.run_forwarding_signals(command, args)?;
            if status.success() {
                let timeout = crate::bundle::read_vm_config(&private)
                    .map(|vm| Duration::from_secs(vm.vm.boot_timeout_secs.into()))?;
                watch.wait(&runc, &id, timeout)?;
            }
            Ok(exit_code(status))
        }
        "delete" => {
            let id = last_positional(args).context("delete: no container id given")?;
            let status = runc.run_forwarding_signals(command, args)?;
            if status.success() {
                crate::bundle::clean_up(&crate::bundle::private_dir(&runc_root, &id)?)?;
            }
            Ok(exit_code(status))
        }
        "state" => {
            let id = last_positional(args).context("state: no container id given")?;
            let private = crate::bundle::private_dir(&runc_root, &id)?;
            match crate::bundle::engine_bundle(&private) {
                // runc knows runq's directory as the bundle; the engine gave another.
                Some(engine_bundle) => Ok(runc.state_with_bundle(args, &engine_bundle)?),
                None => Err(runc.exec(command, args).into()),
            }
        }
        "kill" => Err(runc.exec(command, &kill_args(args)).into()),
        "list" => Ok(runc.list(args)?),
        "exec" => crate::exec::exec(
            &runc,
            &runc_root,
            &host::assets_dir(&invocation.options),
            args,
        ),
        "check" => Ok(crate::check::report(&invocation.options)),
        "template" => {
            let words: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
            match words.as_slice() {
                ["build"] => {
                    let facts = host_facts(&invocation.options, logger)?;
                    crate::template_build::build_default(&invocation.options, &facts)
                }
                ["build", "--shapes-on-stdin"] => crate::template_build::build_from_stdin(),
                _ => bail!(
                    "template: the command is `runq [flags] template build`: it makes the \
                     templates of a container of the flags' defaults (runq create makes the \
                     others when it first meets their shape)"
                ),
            }
        }
        _ => Err(runc.exec(command, args).into()),
    }
}

#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
struct CreateArgs {
    #[command(flatten)]
    create: liboci_cli::Create,
}

#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
struct RunArgs {
    #[command(flatten)]
    run: liboci_cli::Run,
}

fn parse_args<T: Parser>(command: &str, args: &[OsString]) -> Result<T> {
    T::try_parse_from(args).map_err(|e| anyhow!("{command}: {}", e.to_string().trim()))
}

/// A Kubernetes pod's sandbox is left to runc as it is (see [`crate::sandbox`]).
fn is_pod_sandbox(bundle: &Bundle) -> Result<bool> {
    let spec = bundle.original_spec()?;
    Ok(crate::sandbox::is_pod_sandbox(&spec)?)
}

fn boot_timeout(bundle: &Bundle) -> Result<Duration> {
    Ok(Duration::from_secs(
        bundle.vm_config()?.vm.boot_timeout_secs.into(),
    ))
}

fn host_facts(options: &crate::options::RunqOptions, logger: &Logger) -> Result<HostFacts> {
    let assets_dir = host::assets_dir(options);
    host::check_assets(&assets_dir, options)?;
    let (accel, warning) = host::choose_accel(options.accel)?;
    if let Some(warning) = warning {
        logger.warning(&warning);
    }
    Ok(HostFacts {
        assets_dir,
        accel,
        tun: host::has_tun(),
        macvtap_major: host::macvtap_major(),
        rlimits: host::own_rlimits(),
        node_dir: runq_shared::layout::install_root().join("nodes"),
    })
}

/// Writes runq's files for the container; returns the template descriptors for the proxy.
fn prepare_bundle(
    bundle: &Bundle,
    invocation: &Invocation,
    logger: &Logger,
) -> Result<Vec<std::os::fd::OwnedFd>> {
    let original = bundle.original_spec()?;
    bundle.check_image(&original)?;
    let options = &invocation.options;
    let facts = host_facts(options, logger)?;
    let mut rewritten = rewrite::rewrite(&original, options, &facts)?;
    crate::disk_images::check(&original)?;
    let templates = if rewritten.template {
        let shapes = crate::templates::shapes(&rewritten.vm.vm, options, &facts.assets_dir);
        crate::templates::find(shapes)?
    } else {
        crate::templates::Found::none()?
    };
    rewritten.vm.vm.templates = templates.offers;
    bundle.write(&original, &rewritten)?;
    Ok(templates.descriptors)
}

/// runc's create or run on runq's directory, with runq's descriptors handed over.
fn run_runc(
    runc: &Runc,
    command: &str,
    args: &[OsString],
    bundle: &Bundle,
    templates: Vec<std::os::fd::OwnedFd>,
) -> Result<std::process::ExitStatus> {
    let mut handed = bundle.handed_fds()?;
    handed.extend(
        templates
            .into_iter()
            .zip(runq_shared::layout::FIRST_TEMPLATE_FD..),
    );
    let args = for_runc(args, bundle.runc_bundle(), handed.len());
    Ok(runc.run_forwarding_signals_with_fds(command, &args, handed)?)
}

/// runc's create or run arguments with runq's directory as the bundle, in place of the
/// engine's (`--bundle`, `-b`, or none: the current directory), and runq's descriptors as the
/// only ones preserved: the application runs in the guest, where no host descriptor can
/// follow it, so the engine's `--preserve-fds` would reach only the proxy.
fn for_runc(args: &[OsString], bundle: &std::path::Path, handed: usize) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec![
        "--bundle".into(),
        bundle.into(),
        "--preserve-fds".into(),
        handed.to_string().into(),
    ];
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.to_str() {
            Some("--bundle" | "-b" | "--preserve-fds") => {
                rest.next();
            }
            Some(text)
                if text.starts_with("--bundle=")
                    || text.starts_with("-b=")
                    || text.starts_with("--preserve-fds=") => {}
            _ => out.push(arg.clone()),
        }
    }
    out
}

fn last_positional(args: &[OsString]) -> Option<String> {
    args.iter()
        .rev()
        .filter_map(|a| a.to_str())
        .find(|a| !a.starts_with('-'))
        .map(str::to_string)
}

/// `kill --all` would hit QEMU and virtiofsd too, and QEMU ends the VM on SIGTERM. Only the
/// proxy should get a catchable signal: it passes it to the application in the guest. SIGKILL
/// still goes to everything.
fn kill_args(args: &[OsString]) -> Vec<OsString> {
    let positional: Vec<&str> = args
        .iter()
        .filter_map(|a| a.to_str())
        .filter(|a| !a.starts_with('-'))
        .collect();
    let signal = positional.get(1).copied().unwrap_or("TERM");
    let is_kill = matches!(
        signal
            .trim_start_matches("SIG")
            .to_ascii_uppercase()
            .as_str(),
        "KILL" | "9"
    );
    args.iter()
        .filter(|a| is_kill || !matches!(a.to_str(), Some("--all") | Some("-a")))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn kill_all_reaches_only_the_proxy_unless_it_is_sigkill() {
        assert_eq!(kill_args(&args("--all id TERM")), args("id TERM"));
        assert_eq!(kill_args(&args("-a id 15")), args("id 15"));
        assert_eq!(kill_args(&args("--all id")), args("id"));
        assert_eq!(kill_args(&args("--all id KILL")), args("--all id KILL"));
        assert_eq!(
            kill_args(&args("--all id SIGKILL")),
            args("--all id SIGKILL")
        );
        assert_eq!(kill_args(&args("--all id 9")), args("--all id 9"));
        assert_eq!(kill_args(&args("id 2")), args("id 2"));
    }

    #[test]
    fn create_arguments_are_read_with_runcs_flags() {
        let parsed: CreateArgs = parse_args(
            "create",
            &args("--bundle /b --pid-file /p --console-socket /s id"),
        )
        .unwrap();
        assert_eq!(parsed.create.bundle, PathBuf::from("/b"));
        assert_eq!(parsed.create.container_id, "id");
        let err = parse_args::<CreateArgs>("create", &args("--bundle /b")).unwrap_err();
        assert!(err.to_string().starts_with("create:"), "{err}");
    }

    #[test]
    fn runc_gets_runqs_directory_as_the_bundle_and_runqs_descriptors_only() {
        let ours = std::path::Path::new("/run/runc/.runq/id");
        for engine in [
            "--bundle /b --pid-file /p id",
            "-b /b --pid-file /p id",
            "--bundle=/b --pid-file /p id",
            "--pid-file /p id",
            "--preserve-fds 3 --pid-file /p id",
            "--preserve-fds=3 -b /b --pid-file /p id",
        ] {
            assert_eq!(
                for_runc(&args(engine), ours, 2),
                args("--bundle /run/runc/.runq/id --preserve-fds 2 --pid-file /p id"),
                "{engine}"
            );
        }
    }

    #[test]
    fn delete_finds_the_id_after_flags() {
        assert_eq!(
            last_positional(&args("--force id7")).as_deref(),
            Some("id7")
        );
        assert_eq!(last_positional(&args("--force")), None);
    }
}

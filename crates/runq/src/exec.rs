//! `runq exec`: a process in the running VM, inside the application's namespaces.
//!
//! runc cannot enter the VM, so runq hands runc a different process to exec into the
//! container: the relay (`runq-exec --relay TOKEN`, from the assets), which carries the
//! session over the proxy's exec socket. The real process goes to the relay through a
//! root-only file in the container's /.runq tmpfs, never through a command line.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCapabilitiesBuilder, Process, ProcessBuilder, UserBuilder,
};
use runq_shared::layout::{exec_request_file, ASSETS_IN_CONTAINER, EXEC_CLIENT};

use crate::bundle::Bundle;
use crate::rewrite::process_config;
use crate::runc::{exit_code, Runc};

#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
struct ExecArgs {
    #[command(flatten)]
    exec: liboci_cli::Exec,
}

pub fn exec(runc: &Runc, raw_args: &[OsString]) -> Result<i32> {
    let args = ExecArgs::try_parse_from(raw_args)
        .map_err(|e| anyhow!("exec: {}", e.to_string().trim()))?
        .exec;
    let id = &args.container_id;
    let state = runc.state(id)?;
    if state.status != "running" {
        bail!("exec: container {id} is {}, not running", state.status);
    }
    let bundle = Bundle::new(&state.bundle)?;
    if !bundle.is_runq()? {
        // A container runq left to runc (a pod sandbox): runc's own exec.
        return Err(runc.exec("exec", raw_args).into());
    }
    let vm = bundle
        .vm_config()
        .with_context(|| format!("exec: {id} is not a runq container"))?;
    if vm.guest.noexec {
        bail!("exec is disabled for container {id} (runq --noexec or RUNQ_NOEXEC=1)");
    }
    let process = match &args.process {
        Some(path) => read_process(path)?,
        None => process_from_flags(&bundle, &args)?,
    };
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        bail!("exec: no command given");
    }

    let token = random_token()?;
    let request = exec_request_file(&PathBuf::from(format!("/proc/{}/root", state.pid)), &token);
    crate::bundle::write_json(&request, &process_config(&process), 0o600)
        .with_context(|| format!("exec: hand the process to container {id}"))?;
    let relay_file = bundle.write_private(&format!("exec-{token}.json"), &relay(&process, &token)?);
    let status = relay_file
        .map_err(anyhow::Error::from)
        .and_then(|relay_file| {
            let status = runc.run_forwarding_signals("exec", &runc_args(&args, &relay_file));
            let _ = std::fs::remove_file(&relay_file);
            Ok(status?)
        });
    if !status.as_ref().is_ok_and(|s| s.success()) {
        // The relay never ran to take it.
        let _ = std::fs::remove_file(&request);
    }
    Ok(exit_code(status?))
}

fn read_process(path: &Path) -> Result<Process> {
    let bytes = std::fs::read(path).with_context(|| format!("exec: read {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("exec: {} is not an OCI process", path.display()))
}

/// runc's own way: the container's process with the command and flags applied.
fn process_from_flags(bundle: &Bundle, args: &liboci_cli::Exec) -> Result<Process> {
    let spec = bundle.original_spec()?;
    let mut process = spec
        .process()
        .clone()
        .context("exec: the container's spec has no process")?;
    process.set_args(Some(args.command.clone()));
    let mut env = process.env().clone().unwrap_or_default();
    for (key, value) in &args.env {
        env.retain(|kv| kv.split_once('=').map(|(k, _)| k) != Some(key.as_str()));
        env.push(format!("{key}={value}"));
    }
    process.set_env(Some(env));
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    let mut user = process.user().clone();
    if let Some((uid, gid)) = args.user {
        user.set_uid(uid);
        if let Some(gid) = gid {
            user.set_gid(gid);
        }
    }
    if !args.additional_gids.is_empty() {
        let mut gids = user.additional_gids().clone().unwrap_or_default();
        gids.extend(&args.additional_gids);
        user.set_additional_gids(Some(gids));
    }
    process.set_user(user);
    process.set_terminal(Some(args.tty));
    if args.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    if !args.cap.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for name in &args.cap {
            let cap: Capability = name
                .parse()
                .map_err(|_| anyhow!("exec: unknown capability {name:?}"))?;
            let with = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            caps.set_bounding(with(caps.bounding()));
            caps.set_effective(with(caps.effective()));
            caps.set_permitted(with(caps.permitted()));
        }
        process.set_capabilities(Some(caps));
    }
    Ok(process)
}

/// The process runc execs into the container: the relay, as root without capabilities; it
/// needs only to read its request and reach the exec socket, both root's.
fn relay(process: &Process, token: &str) -> Result<Process> {
    let none = oci_spec::runtime::Capabilities::new;
    let no_caps: LinuxCapabilities = LinuxCapabilitiesBuilder::default()
        .bounding(none())
        .effective(none())
        .inheritable(none())
        .permitted(none())
        .ambient(none())
        .build()?;
    let mut relay = ProcessBuilder::default()
        .terminal(process.terminal().unwrap_or(false))
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(vec![
            format!("{ASSETS_IN_CONTAINER}/{EXEC_CLIENT}"),
            "--relay".to_string(),
            token.to_string(),
        ])
        .env(vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_string()])
        .cwd("/")
        .capabilities(no_caps)
        .no_new_privileges(true)
        .build()?;
    relay.set_console_size(process.console_size());
    Ok(relay)
}

/// runc's exec arguments with the relay's process in place of everything that described the
/// real one.
fn runc_args(args: &liboci_cli::Exec, relay_file: &Path) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec!["--process".into(), relay_file.into()];
    if let Some(socket) = &args.console_socket {
        out.extend(["--console-socket".into(), socket.into()]);
    }
    if args.detach {
        out.push("--detach".into());
    }
    if let Some(pid_file) = &args.pid_file {
        out.extend(["--pid-file".into(), pid_file.into()]);
    }
    if args.preserve_fds > 0 {
        out.extend([
            "--preserve-fds".into(),
            args.preserve_fds.to_string().into(),
        ]);
    }
    if let Some(cgroup) = &args.cgroup {
        out.extend(["--cgroup".into(), cgroup.into()]);
    }
    out.push(args.container_id.clone().into());
    out
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

//! `runq exec`: a process in the running VM, inside the application's namespaces.
//!
//! runc cannot enter the VM, so runq hands runc a different process to exec into the
//! container: the relay (`runq-exec --relay FD`, from the assets in the proxy's own root),
//! which carries the session over the proxy's exec socket. The real process reaches the relay
//! as an anonymous file runc passes on as descriptor FD, never through a command line or a
//! file anything in the container could see.
//!
//! `runc exec` enters the proxy's mount namespace, whose root is runq's own once the proxy
//! has set it up; until then it is the image's, where nothing may be run. So runq first waits
//! until the proxy's root holds the very relay binary of the assets and the exec socket.

use std::ffi::OsString;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCapabilitiesBuilder, Process, ProcessBuilder, UserBuilder,
};
use runq_shared::layout::{own_root, EXEC_CLIENT};

use crate::bundle::Bundle;
use crate::rewrite::process_config;
use crate::runc::{exit_code, Runc};

#[derive(Parser, Debug)]
#[command(no_binary_name = true)]
struct ExecArgs {
    #[command(flatten)]
    exec: liboci_cli::Exec,
}

pub fn exec(runc: &Runc, runc_root: &Path, assets: &Path, raw_args: &[OsString]) -> Result<i32> {
    let args = ExecArgs::try_parse_from(raw_args)
        .map_err(|e| anyhow!("exec: {}", e.to_string().trim()))?
        .exec;
    let id = &args.container_id;
    let state = runc.state(id)?;
    if state.status != "running" {
        bail!("exec: container {id} is {}, not running", state.status);
    }
    let bundle = Bundle::new(&state.bundle, runc_root, id)?;
    if !bundle.is_runq() {
        // A container runq left to runc (a pod sandbox): runc's own exec.
        return Err(runc.exec("exec", raw_args).into());
    }
    let vm = bundle
        .vm_config()
        .with_context(|| format!("exec: {id} is not a runq container"))?;
    if vm.vm.noexec {
        bail!("exec is disabled for container {id} (runq --noexec or RUNQ_NOEXEC=1)");
    }
    let process = match &args.process {
        Some(path) => read_process(path)?,
        None => process_from_flags(&bundle, &args)?,
    };
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        bail!("exec: no command given");
    }

    wait_for_proxy(
        id,
        state.pid,
        assets,
        Duration::from_secs(vm.vm.boot_timeout_secs.into()),
    )?;
    let request = request_file(&runq_shared::config::ExecRelayRequest {
        process: process_config(&process),
        seccomp: vm.vm.confinement.seccomp.clone(),
    })
    .with_context(|| format!("exec: hand the process to container {id}"))?;
    // runc passes descriptors 3 .. 3+N on, N being --preserve-fds: the request comes after
    // the caller's own.
    let request_fd = 3 + args.preserve_fds.max(0);
    let token = random_token()?;
    let relay_file =
        bundle.write_private(&format!("exec-{token}.json"), &relay(&process, request_fd)?)?;
    let status = runc.run_forwarding_signals_with_fd(
        "exec",
        &runc_args(&args, &relay_file),
        Some((request, request_fd)),
    );
    let _ = std::fs::remove_file(&relay_file);
    Ok(exit_code(status?))
}

/// Waits until the container's root is runq's own, holding the relay of these assets and the
/// exec socket. The proxy makes it so before it starts QEMU, within moments of its start.
fn wait_for_proxy(id: &str, pid: i32, assets: &Path, timeout: Duration) -> Result<()> {
    let relay = std::fs::metadata(assets.join(EXEC_CLIENT))
        .with_context(|| format!("exec: {}", assets.join(EXEC_CLIENT).display()))?;
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let relay_in_root = format!("{}/{EXEC_CLIENT}", own_root::ASSETS);
    let deadline = Instant::now() + timeout;
    loop {
        use runq_shared::in_root::identity;
        let ours = identity(&root, &relay_in_root)
            .is_ok_and(|found| (found.dev, found.ino) == (relay.dev(), relay.ino()));
        let socket = identity(&root, own_root::EXEC_SOCKET)
            .is_ok_and(|found| found.kind == nix::sys::stat::SFlag::S_IFSOCK);
        if ours && socket {
            return Ok(());
        }
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("exec: container {id} ended before it could run an exec session");
        }
        if Instant::now() > deadline {
            bail!(
                "exec: container {id}'s proxy did not set up its exec socket within {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An anonymous file holding the relay's request, read from the start.
fn request_file(request: &runq_shared::config::ExecRelayRequest) -> Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(
        c"runq-exec-request",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&serde_json::to_vec(request)?)?;
    file.rewind()?;
    Ok(file.into())
}

fn read_process(path: &Path) -> Result<Process> {
    let bytes = std::fs::read(path).with_context(|| format!("exec: read {}", path.display()))?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("exec: {} is not an OCI process", path.display()))
}

/// runc's own way: the container's process with the command and flags applied.
fn process_from_flags(bundle: &Bundle, args: &liboci_cli::Exec) -> Result<Process> {
    let spec = bundle.created_spec()?;
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
/// needs only to read its request and reach the exec socket, which is root's.
fn relay(process: &Process, request_fd: i32) -> Result<Process> {
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
            format!("{}/{EXEC_CLIENT}", own_root::ASSETS),
            "--relay".to_string(),
            request_fd.to_string(),
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
    // The caller's descriptors, then the relay's request.
    out.extend([
        "--preserve-fds".into(),
        (args.preserve_fds.max(0) + 1).to_string().into(),
    ]);
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

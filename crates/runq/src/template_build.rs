//! `runq template build`: makes templates on the host, never in a container's QEMU (a guest
//! that ran anything of a container could poison every VM restored from it).
//!
//! For each shape: boot QEMU with the shape's arguments (see `qemu::Boot::Template`), runq's
//! kernel and initrd, an empty root share and NICs on taps of its own (socket pairs where the
//! shape's are passt's); wait for runq-init's Hello on the control channel (it then waits for
//! a config that never comes); have QEMU migrate the running VM into a root-only file through
//! a descriptor; hash it, write the meta last and rename the directory into place. One
//! builder per key at a time (a lock file); a template that exists is left alone.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use runq_shared::helpers;
use runq_shared::layout::assets;
use runq_shared::log_tail::log_tail;
use runq_shared::protocol::{read_message_within, Message, GUEST_FRAME_LIMIT, PROTOCOL_VERSION};
use runq_shared::qemu::{self, Boot, HostFacts, Nic, Paths};
use runq_shared::qmp::Qmp;
use runq_shared::template::{self, FileId, Meta, Shape, KEEP, META, STATE};

/// How long a template's boot and save may take, at most.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// Builds the templates of the shapes on stdin that do not exist yet.
pub fn build_from_stdin() -> Result<i32> {
    let mut text = Vec::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_end(&mut text)
        .context("read the shapes")?;
    build(serde_json::from_slice(&text).context("parse the shapes")?)
}

/// Builds the templates of a container with the options' defaults (`make install` does).
pub fn build_default(
    options: &crate::options::RunqOptions,
    facts: &crate::rewrite::HostFacts,
) -> Result<i32> {
    let mut spec = oci_spec::runtime::Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(vec!["true".into()]));
    spec.set_process(Some(process));
    let vm = crate::rewrite::rewrite(&spec, options, facts)?.vm.vm;
    let shapes = crate::templates::shapes(&vm, options, &facts.assets_dir);
    if shapes.is_empty() {
        bail!("a container of these options can have no template");
    }
    build(shapes)
}

fn build(shapes: Vec<Shape>) -> Result<i32> {
    let dir = crate::templates::templates_dir().context("make the templates' directory")?;
    let mut failed = false;
    // Every shape's lock first, so that a create meanwhile sees all of them being built
    // (see `templates::being_built`) and starts no builder of its own.
    let mut claimed = Vec::new();
    for shape in shapes {
        let key = shape.key();
        match claim(&dir, &key) {
            Ok(Some(lock)) => claimed.push((shape, key, lock)),
            Ok(None) => {}
            Err(error) => {
                failed = true;
                eprintln!("runq template {key}: {error:#}");
            }
        }
    }
    for (shape, key, lock) in claimed {
        match build_once(&dir, &shape, &key) {
            Ok(true) => eprintln!("runq template {key}: built ({} NICs)", shape.nics),
            Ok(false) => {}
            Err(error) => {
                failed = true;
                eprintln!("runq template {key}: {error:#}");
            }
        }
        let _ = std::fs::remove_file(lock_path(&dir, &key));
        drop(lock);
    }
    remove_oldest(&dir, KEEP);
    Ok(if failed { 1 } else { 0 })
}

pub fn lock_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.lock"))
}

/// The build lock of `key`, or `None` where another builder holds it.
fn claim(dir: &Path, key: &str) -> Result<Option<nix::fcntl::Flock<File>>> {
    let path = lock_path(dir, key);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    Ok(nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock).ok())
}

/// Builds the template, its lock held, unless it exists or its inputs changed since the
/// shape was taken; true when it built it.
fn build_once(dir: &Path, shape: &Shape, key: &str) -> Result<bool> {
    let target = dir.join(key);
    if crate::templates::usable(&target, key) || !inputs_unchanged(shape) {
        return Ok(false);
    }
    let _ = std::fs::remove_dir_all(&target);
    build_into(dir, shape, key)?;
    Ok(true)
}

fn inputs_unchanged(shape: &Shape) -> bool {
    [&shape.assets, &shape.kernel, &shape.initrd]
        .iter()
        .all(|id| FileId::of(&id.path).is_ok_and(|now| now == **id))
}

fn build_into(dir: &Path, shape: &Shape, key: &str) -> Result<()> {
    let work = dir.join(format!(".build-{key}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&work)
        .with_context(|| format!("mkdir {}", work.display()))?;
    let result = boot_and_save(&work, shape, key);
    if let Err(error) = &result {
        let console = log_tail(&work.join("console.log"), 10);
        let qemu = log_tail(&work.join("qemu.log"), 10);
        let _ = std::fs::remove_dir_all(&work);
        bail!("{error:#}\n--- console ---\n{console}\n--- QEMU ---\n{qemu}");
    }
    let target = dir.join(key);
    for scratch in ["root", "agent.sock", "qmp.sock", "vfsd.sock"] {
        let path = work.join(scratch);
        let _ = std::fs::remove_dir(&path).or_else(|_| std::fs::remove_file(&path));
    }
    std::fs::rename(&work, &target)
        .with_context(|| format!("rename {} to {}", work.display(), target.display()))?;
    File::open(dir).and_then(|d| d.sync_all()).ok();
    Ok(())
}

fn boot_and_save(work: &Path, shape: &Shape, key: &str) -> Result<()> {
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let vm = shape.vm_settings();
    let paths = Paths {
        assets: shape.assets.path.clone(),
        kernel: shape.kernel.path.clone(),
        initrd: shape.initrd.path.clone(),
        virtiofsd_socket: work.join("vfsd.sock"),
        agent_socket: work.join("agent.sock"),
        console_log: work.join("console.log"),
        qemu_log: work.join("qemu.log"),
        virtiofsd_log: work.join("virtiofsd.log"),
        passt_log: work.join("passt.log"),
        shared_root: work.join("root"),
    };
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&paths.shared_root)
        .context("make the empty root")?;
    let mut helpers = Vec::new();
    if shape.root_device == "virtiofs" {
        helpers.push(Reaped(start_virtiofsd(&paths)?));
    }
    let (nic_fds, _far_ends) = nic_backends(shape)?;
    let nics: Vec<Nic> = nic_fds
        .iter()
        .enumerate()
        .map(|(number, fd)| Nic {
            fd: fd.as_raw_fd(),
            mac: template::nic_mac(number),
            stream: shape.nic_stream,
        })
        .collect();
    let agent = UnixListener::bind(&paths.agent_socket).context("listen for the channel")?;
    let qmp_socket = work.join("qmp.sock");
    let host = HostFacts {
        tsc_khz: shape.tsc_khz,
    };
    let mut args = qemu::args(&vm, host, &paths, &nics, &[], Boot::Template);
    unprivileged(&mut args);
    args.extend([
        "-qmp".to_string(),
        format!("unix:{},server=on,wait=off", qmp_socket.display()),
    ]);
    let qemu = Reaped(start_qemu(&paths, &args, &nics)?);

    let mut channel = accept_within(&agent, deadline).context("wait for the guest's channel")?;
    channel.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now())))?;
    match read_message_within(&mut channel, GUEST_FRAME_LIMIT) {
        Ok(Some(Message::Hello { version })) if version == PROTOCOL_VERSION => {}
        Ok(other) => bail!("the guest said {other:?} instead of its Hello"),
        Err(error) => bail!("no Hello from the guest: {error}"),
    }
    let state_path = work.join(STATE);
    let state = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&state_path)
        .context("create the template's state")?;
    let monitor = UnixStream::connect(&qmp_socket).context("connect to QEMU's monitor")?;
    let mut monitor = Qmp::over(monitor, deadline)?;
    // QEMU serves its monitor once set up, so after it gave up root.
    check_unprivileged(qemu.0.id())?;
    monitor.save(state.try_clone()?.into())?;
    drop(qemu);
    drop(helpers);
    drop(channel);
    state.sync_all().context("sync the template's state")?;
    let size = state.metadata()?.len();
    let sha256 = template::sha256_of(&File::open(&state_path)?, size)?;
    let meta = Meta {
        key: key.to_string(),
        size,
        sha256,
        state: FileId::of(&state_path)?,
        shape: shape.clone(),
    };
    let meta_path = work.join(META);
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&meta_path)
        .context("create the template's meta")?;
    file.write_all(&serde_json::to_vec_pretty(&meta)?)?;
    file.sync_all()?;
    Ok(())
}

/// QEMU's ends of the template's NICs, open until the save is done: like a container's, taps
/// with virtio-net headers, made in a network namespace of the builder's own (the host's
/// sees nothing), or one end of a socket pair where the shape's NICs are passt's. The guest
/// binds its NICs in the template and negotiates their offloads with these.
/// The socket pairs' far ends come back too, to be held open as long as QEMU's.
fn nic_backends(shape: &Shape) -> Result<(Vec<OwnedFd>, Vec<OwnedFd>)> {
    if shape.nics == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    if shape.nic_stream {
        let pairs = (0..shape.nics)
            .map(|_| UnixStream::pair().context("a socket pair for a NIC"))
            .collect::<Result<Vec<_>>>()?;
        return Ok(pairs
            .into_iter()
            .map(|(qemu_end, far_end)| (OwnedFd::from(qemu_end), OwnedFd::from(far_end)))
            .unzip());
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("a network namespace for the template's taps")?;
    let taps = (0..shape.nics)
        .map(|number| {
            runq_shared::tap::open(&format!("runqt{number}"))
                .with_context(|| format!("a tap for NIC {number}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((taps, Vec::new()))
}

/// The overflow user and group, which the builder's QEMU runs as.
const NOBODY: u32 = 65534;

/// The builder's QEMU opens what it needs as root (the kernel, its logs, the sockets), then
/// becomes nobody, with no capabilities, before the guest runs: `-run-with user`. Its
/// seccomp filter then has to allow that one change of user, which the `-sandbox` of a
/// container's QEMU denies; once nobody, QEMU cannot become root again anyway.
fn unprivileged(args: &mut Vec<String>) {
    if let Some(at) = args.iter().position(|arg| arg == "-sandbox") {
        if let Some(value) = args.get_mut(at + 1) {
            *value = value.replace("elevateprivileges=deny", "elevateprivileges=allow");
        }
    }
    args.extend(["-run-with".to_string(), format!("user={NOBODY}:{NOBODY}")]);
}

/// Refuses to save a VM whose QEMU still runs as anyone but nobody.
fn check_unprivileged(pid: u32) -> Result<()> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("read QEMU's status")?;
    let ids = |field: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|id| id.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (uids, gids) = (ids("Uid:"), ids("Gid:"));
    let nobody = |ids: &[u32]| ids.len() == 4 && ids.iter().all(|&id| id == NOBODY);
    if !nobody(&uids) || !nobody(&gids) {
        bail!("QEMU runs as uids {uids:?}, gids {gids:?}, not as nobody");
    }
    Ok(())
}

/// A helper that is killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_virtiofsd(paths: &Paths) -> Result<Child> {
    let listener = UnixListener::bind(&paths.virtiofsd_socket).context("listen for virtiofsd")?;
    let fd: OwnedFd = listener.into();
    let mut command = helpers::virtiofsd(paths, fd.as_raw_fd())?;
    command.spawn().context("start virtiofsd")
}

fn start_qemu(paths: &Paths, args: &[String], nics: &[Nic]) -> Result<Child> {
    let mut command = helpers::command(paths, assets::QEMU);
    command
        .args(args)
        // With `debug` the console is QEMU's stdout.
        .stdout(helpers::log_file(&paths.console_log)?)
        .stderr(helpers::log_file(&paths.qemu_log)?);
    helpers::keep_open(&mut command, nics.iter().map(|nic| nic.fd).collect());
    command.spawn().context("start QEMU")
}

fn accept_within(listener: &UnixListener, deadline: Instant) -> Result<UnixStream> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let left = deadline.saturating_duration_since(Instant::now());
    let timeout = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
        .unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, timeout).context("poll")? == 0 {
        bail!(
            "the guest did not connect within {} s",
            BUILD_TIMEOUT.as_secs()
        );
    }
    Ok(listener.accept()?.0)
}

/// Keeps the `keep` templates made last, of those a shape can still match (inputs unchanged,
/// this format); removes what killed builders left (a lock, a work directory) once no build
/// could still be using it.
fn remove_oldest(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let stale = |path: &Path| {
        std::fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age > 2 * BUILD_TIMEOUT))
    };
    let entries: Vec<_> = entries.flatten().collect();
    for entry in &entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.ends_with(".lock") && stale(&path) {
            let _ = std::fs::remove_file(&path);
        } else if name.starts_with(".build-") && stale(&path) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    let mut made: Vec<(std::time::SystemTime, PathBuf)> = entries
        .into_iter()
        .filter(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|entry| {
            let path = entry.path();
            let meta = path.join(META);
            let time = std::fs::metadata(&meta).and_then(|m| m.modified()).ok()?;
            // Made from inputs that are gone or changed (an earlier install, a kernel since
            // replaced), or in another format (its meta may not even parse): no shape can
            // match it again.
            let key = entry.file_name().to_string_lossy().into_owned();
            let usable = template::read_meta(&path, &key).is_ok_and(|meta| {
                meta.shape.format == template::FORMAT && inputs_unchanged(&meta.shape)
            });
            if !usable {
                let _ = std::fs::remove_dir_all(&path);
                return None;
            }
            Some((time, path))
        })
        .collect();
    made.sort();
    let excess = made.len().saturating_sub(keep);
    for (_, path) in made.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(path);
    }
}

//! Starts the application: PID 1 of fresh PID, mount, IPC and UTS namespaces, its root moved
//! onto the shared container root, with the user, capabilities and limits of the OCI spec.
//!
//! The forked child may allocate before exec: glibc's fork takes malloc's locks, so another
//! thread of init (the localhost mirror) cannot leave one held.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;

use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::{ForkResult, Pid};
use runq_shared::config::{GuestConfig, ProcessConfig, SeccompFilter};
use runq_shared::layout::GUEST_ROOTFS;

use crate::disks::Attached;
use crate::error::{Context, InitError};
use crate::{console, identity, mounts};
use runq_shared::seccomp;

/// The running application and the host ends of its stdio.
pub struct App {
    pub pid: Pid,
    /// Where the application's stdin is written (the pty master with a terminal); taken by
    /// the relay, which closes it at the end of input.
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    /// `None` with a terminal: stderr shares the pty with stdout.
    pub stderr: Option<OwnedFd>,
    pub terminal: bool,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Returns once the application's exec has happened (or its setup failed), so that the
/// boot timeline's `app_exec` is the exec itself, not the fork before the container's setup.
/// `resolv_conf`, when the proxy gave one, replaces the engine's.
pub fn spawn(
    config: &GuestConfig,
    resolv_conf: Option<&str>,
    disks: &[Attached],
) -> Result<App, InitError> {
    // Every later child of init starts in the application's PID namespace: exec sessions too.
    unshare(CloneFlags::CLONE_NEWPID).context(|| "new PID namespace".to_string())?;
    // The child holds the write end until exec closes it (FD_CLOEXEC), or until it exits.
    let (exec_seen, exec_done) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context(|| "pipe".to_string())?;
    let app = fork_with_stdio(&config.process, || {
        setup_and_exec(config, resolv_conf, disks)
    })?;
    drop(exec_done);
    wait_for_eof(exec_seen);
    Ok(app)
}

fn wait_for_eof(pipe: OwnedFd) {
    // read_to_end retries EINTR; any other error could only be a broken pipe, and the
    // application runs either way.
    let _ = std::fs::File::from(pipe).read_to_end(&mut Vec::new());
}

/// Starts an exec session's process beside the application: in its PID (inherited from
/// init), mount, IPC and UTS namespaces, with the session's own user, capabilities and
/// limits, under the container's seccomp filter, as `runc exec` does.
pub fn spawn_exec(
    app: Pid,
    process: &ProcessConfig,
    seccomp: Option<&SeccompFilter>,
) -> Result<App, InitError> {
    fork_with_stdio(process, || {
        enter_namespaces(app)?;
        become_process(process, seccomp)
    })
}

fn fork_with_stdio(
    process: &ProcessConfig,
    setup_and_exec: impl FnOnce() -> Result<(), ChildFailure>,
) -> Result<App, InitError> {
    let stdio = Stdio::new(process.terminal, process.terminal_onlcr)?;
    // SAFETY: the child only sets itself up and execs or exits; glibc's fork leaves it a
    // consistent heap even though init may have other threads by now (see the module docs).
    match unsafe { nix::unistd::fork() }.context(|| "fork".to_string())? {
        ForkResult::Child => {
            let failure = stdio
                .attach_child()
                .and_then(|()| set_oom_score_adj(process))
                .and_then(|()| setup_and_exec());
            let (code, message) = failure.unwrap_err_or_exit();
            let _ = writeln!(std::io::stderr(), "runq: {message}");
            // SAFETY: _exit ends the child without running the parent's atexit handlers or
            // flushing its buffers a second time.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            console::debug(&format!("{:?} started as {child}", process.args));
            Ok(stdio.into_app(child))
        }
    }
}

/// `process.oomScoreAdj`, first thing in the child: as root (lowering it needs
/// CAP_SYS_RESOURCE) and in init's root, whose /proc is there whatever the spec mounts.
fn set_oom_score_adj(process: &ProcessConfig) -> Result<(), ChildFailure> {
    match process.oom_score_adj {
        Some(adjust) => std::fs::write("/proc/self/oom_score_adj", adjust.to_string())
            .map_err(fail(format!("set oom_score_adj to {adjust}"))),
        None => Ok(()),
    }
}

/// Joins the application's namespaces. Joining its mount namespace lands on the container
/// root, which the application's init moved onto /.
fn enter_namespaces(app: Pid) -> Result<(), ChildFailure> {
    let namespaces = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    // All opened first: /proc is another one once the mount namespace changes.
    let mut opened = Vec::new();
    for (name, flag) in namespaces {
        let path = format!("/proc/{app}/ns/{name}");
        let file = std::fs::File::open(&path)
            .map_err(fail(format!("open {path} (has the application ended?)")))?;
        opened.push((name, flag, file));
    }
    for (name, flag, file) in opened {
        nix::sched::setns(file, flag).map_err(fail(format!("join the {name} namespace")))?;
    }
    std::env::set_current_dir("/").map_err(fail("chdir /"))
}

/// A failure in the child before exec: the exit code to report and what went wrong.
type ChildFailure = (i32, String);

trait ExitOnOk {
    fn unwrap_err_or_exit(self) -> ChildFailure;
}

impl ExitOnOk for Result<(), ChildFailure> {
    fn unwrap_err_or_exit(self) -> ChildFailure {
        match self {
            Err(failure) => failure,
            // setup_and_exec only returns on failure.
            Ok(()) => (1, "exec returned without an error".to_string()),
        }
    }
}

fn fail<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> ChildFailure {
    move |error| (1, format!("{what}: {error}"))
}

/// The application's stdio: pipes, or one pty for a terminal.
struct Stdio {
    terminal: bool,
    /// (parent end, child end) of stdin, stdout, stderr; with a terminal all three child ends
    /// are the pty slave and the parent ends the master.
    stdin: (OwnedFd, OwnedFd),
    stdout: (OwnedFd, OwnedFd),
    stderr: Option<(OwnedFd, OwnedFd)>,
}

impl Stdio {
    fn new(terminal: bool, onlcr: bool) -> Result<Stdio, InitError> {
        if terminal {
            let pty = nix::pty::openpty(None, None).context(|| "open a pty".to_string())?;
            if !onlcr {
                let mut attrs = nix::sys::termios::tcgetattr(&pty.slave)
                    .context(|| "read pty settings".to_string())?;
                attrs
                    .output_flags
                    .remove(nix::sys::termios::OutputFlags::ONLCR);
                nix::sys::termios::tcsetattr(
                    &pty.slave,
                    nix::sys::termios::SetArg::TCSANOW,
                    &attrs,
                )
                .context(|| "clear ONLCR on the pty".to_string())?;
            }
            let master_in = pty
                .master
                .try_clone()
                .context(|| "dup pty master".to_string())?;
            let slave_out = pty
                .slave
                .try_clone()
                .context(|| "dup pty slave".to_string())?;
            set_cloexec(&pty.master)?;
            set_cloexec(&master_in)?;
            return Ok(Stdio {
                terminal,
                stdin: (master_in, pty.slave),
                stdout: (pty.master, slave_out),
                stderr: None,
            });
        }
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).context(|| "pipe".to_string());
        let (stdin_read, stdin_write) = pipe()?;
        let (stdout_read, stdout_write) = pipe()?;
        let (stderr_read, stderr_write) = pipe()?;
        Ok(Stdio {
            terminal,
            stdin: (stdin_write, stdin_read),
            stdout: (stdout_read, stdout_write),
            stderr: Some((stderr_read, stderr_write)),
        })
    }

    /// In the child: makes the child ends fds 0, 1, 2 and the terminal the controlling one.
    fn attach_child(&self) -> Result<(), ChildFailure> {
        SigSet::empty()
            .thread_set_mask()
            .map_err(fail("reset the signal mask"))?;
        let _ =
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
        nix::unistd::setsid().map_err(fail("setsid"))?;
        let stderr_child = match &self.stderr {
            Some((_, child)) => child.as_raw_fd(),
            None => self.stdout.1.as_raw_fd(),
        };
        if self.terminal {
            // SAFETY: TIOCSCTTY takes an integer argument; the fd is the pty slave we own.
            if unsafe { libc::ioctl(self.stdin.1.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
                return Err(fail("make the pty the controlling terminal")(
                    std::io::Error::last_os_error(),
                ));
            }
        }
        for (from, to) in [
            (self.stdin.1.as_raw_fd(), 0),
            (self.stdout.1.as_raw_fd(), 1),
            (stderr_child, 2),
        ] {
            dup_onto(from, to).map_err(fail("set up stdio"))?;
        }
        Ok(())
    }

    fn into_app(self, pid: Pid) -> App {
        App {
            pid,
            stdin: Some(self.stdin.0),
            stdout: self.stdout.0,
            stderr: self.stderr.map(|(parent, _)| parent),
            terminal: self.terminal,
        }
    }
}

fn dup_onto(from: RawFd, to: RawFd) -> nix::Result<()> {
    if from == to {
        // dup2 onto itself keeps FD_CLOEXEC; clear it so the fd survives exec.
        nix::fcntl::fcntl(
            from,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )?;
        return Ok(());
    }
    nix::unistd::dup2(from, to).map(drop)
}

fn set_cloexec(fd: &OwnedFd) -> Result<(), InitError> {
    nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map(drop)
    .context(|| "set FD_CLOEXEC".to_string())
}

/// Everything between fork and exec. Returns only on failure.
fn setup_and_exec(
    config: &GuestConfig,
    resolv_conf: Option<&str>,
    disks: &[Attached],
) -> Result<(), ChildFailure> {
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
        .map_err(fail("new mount, IPC and UTS namespaces"))?;
    mounts::prepare_root(config, resolv_conf, disks).map_err(|e| (1, e.to_string()))?;
    if let Some(hostname) = &config.hostname {
        nix::unistd::sethostname(hostname).map_err(fail(format!("set hostname {hostname:?}")))?;
    }
    enter_root()?;
    if config.runqenv {
        write_runqenv(&config.process)?;
    }
    become_process(&config.process, config.seccomp.as_ref())
}

/// Limits, directory, seccomp, user and capabilities of the process, then exec. Returns only
/// on failure.
fn become_process(
    process: &ProcessConfig,
    seccomp: Option<&SeccompFilter>,
) -> Result<(), ChildFailure> {
    set_rlimits(process)?;
    if let Some(umask) = process.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    // As root first, so a directory only its owner may enter works; again as the user below.
    let cwd_entered = std::env::set_current_dir(&process.cwd).is_ok();
    // As runc: without no_new_privs, loading a filter needs CAP_SYS_ADMIN, so it goes in
    // before the capabilities are narrowed; with it, as late as possible.
    if let (Some(filter), false) = (seccomp, process.no_new_privileges) {
        seccomp::load(filter).map_err(|e| (1, e))?;
    }
    identity::apply(process).map_err(|e| (1, e.to_string()))?;
    if !cwd_entered {
        std::env::set_current_dir(&process.cwd)
            .map_err(fail(format!("chdir to cwd {:?}", process.cwd)))?;
    }
    if process.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().map_err(fail("set no_new_privs"))?;
        if let Some(filter) = seccomp {
            seccomp::load(filter).map_err(|e| (1, e))?;
        }
    }
    exec(process)
}

/// `/.runqenv`: the environment as shell `export` lines, for shells that start without it
/// (ssh logins, `su -`). Readable by the application's user only.
fn write_runqenv(process: &ProcessConfig) -> Result<(), ChildFailure> {
    use std::os::unix::fs::OpenOptionsExt;
    const PATH: &str = "/.runqenv";
    let text: String = process
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(key, value)| format!("export {key}='{}'\n", value.replace('\'', "'\\''")))
        .collect();
    let _ = std::fs::remove_file(PATH);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(PATH)
        .map_err(fail(format!("create {PATH}")))?;
    file.write_all(text.as_bytes())
        .map_err(fail(format!("write {PATH}")))?;
    nix::unistd::fchown(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        Some(nix::unistd::Uid::from_raw(process.uid)),
        Some(nix::unistd::Gid::from_raw(process.gid)),
    )
    .map_err(fail(format!("chown {PATH}")))
}

/// Moves the shared root onto / of the application's mount namespace, as switch_root does:
/// the initramfs root cannot be pivoted away from.
fn enter_root() -> Result<(), ChildFailure> {
    std::env::set_current_dir(GUEST_ROOTFS).map_err(fail(format!("chdir {GUEST_ROOTFS}")))?;
    nix::mount::mount(
        Some("."),
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(fail("move the container root onto /"))?;
    nix::unistd::chroot(".").map_err(fail("chroot into the container root"))?;
    std::env::set_current_dir("/").map_err(fail("chdir /"))
}

fn set_rlimits(process: &ProcessConfig) -> Result<(), ChildFailure> {
    for limit in &process.rlimits {
        let Some(resource) = runq_shared::rlimits::resource(&limit.kind) else {
            return Err((1, format!("unknown rlimit type {:?}", limit.kind)));
        };
        let value = libc::rlimit {
            rlim_cur: limit.soft,
            rlim_max: limit.hard,
        };
        // SAFETY: setrlimit reads the rlimit struct we pass by reference.
        if unsafe { libc::setrlimit(resource, &value) } != 0 {
            return Err(fail(format!(
                "set {} to {}:{}",
                limit.kind, limit.soft, limit.hard
            ))(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// execve with the exit codes a shell and Docker use: 127 not found, 126 not executable.
fn exec(process: &ProcessConfig) -> Result<(), ChildFailure> {
    let Some(program) = process.args.first() else {
        return Err((
            127,
            "exec: no command given (process.args is empty)".to_string(),
        ));
    };
    let path = if program.contains('/') {
        program.clone()
    } else {
        let search = process
            .env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        look_path(program, search).ok_or_else(|| {
            (
                127,
                format!("exec: {program:?}: executable file not found in $PATH"),
            )
        })?
    };
    let to_c = |s: &String| {
        CString::new(s.as_bytes()).map_err(|_| (1, format!("exec: {s:?} contains a NUL byte")))
    };
    let c_path = to_c(&path)?;
    let args = process
        .args
        .iter()
        .map(to_c)
        .collect::<Result<Vec<_>, _>>()?;
    let env = with_home(&process.env, process.uid)
        .iter()
        .map(to_c)
        .collect::<Result<Vec<_>, _>>()?;
    let errno = match nix::unistd::execve(&c_path, &args, &env) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    let code = if errno == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    Err((
        code,
        format!("exec {path}: {}", errno.desc().to_lowercase()),
    ))
}

/// The environment with HOME added, as runc adds it, where the process was given none: the
/// user's home from the container's /etc/passwd, or /.
fn with_home(env: &[String], uid: u32) -> Vec<String> {
    let mut env = env.to_vec();
    if !env.iter().any(|kv| kv.starts_with("HOME=")) {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        env.push(format!("HOME={}", home_of(&passwd, uid)));
    }
    env
}

fn home_of(passwd: &str, uid: u32) -> &str {
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.get(2).and_then(|f| f.parse::<u32>().ok()) == Some(uid))
        .and_then(|fields| fields.get(5).copied())
        .filter(|home| !home.is_empty())
        .unwrap_or("/")
}

/// Like Go's exec.LookPath, which runc uses: the first regular file with an execute bit.
fn look_path(program: &str, search: &str) -> Option<String> {
    search
        .split(':')
        .map(|dir| if dir.is_empty() { "." } else { dir })
        .map(|dir| format!("{dir}/{program}"))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::home_of;

    #[test]
    fn home_comes_from_passwd_or_is_the_root() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/home:/bin/false\nbad";
        assert_eq!(home_of(passwd, 0), "/root");
        assert_eq!(home_of(passwd, 65534), "/home");
        assert_eq!(home_of(passwd, 4242), "/");
        assert_eq!(home_of("", 0), "/");
    }
}

//! Relays the stdio, signals and exits of the application and of every exec session over the
//! control channel.
//!
//! One poll loop, no threads of its own (forks from a busy multi-threaded process are a
//! hazard; the mirror's threads touch nothing a child uses). The loop also loads the late
//! modules, once the application has had the guest to itself for a while. Each output
//! stream is read only while the host has granted credit for it, stdin is written without
//! blocking, and so are the frames to the host (through the [`Outbox`]), so neither a slow
//! host nor a process that ignores its stdin stalls the loop, one session never holds up
//! another, and the port is always read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use runq_mirror::Mirror;
use runq_shared::config::{GuestConfig, ProcessConfig};
use runq_shared::protocol::{
    Decoder, Message, StreamKind, DATA_CHUNK, MAIN_SESSION, STREAM_WINDOW,
};

use runq_shared::timeline::GuestMarks;

use crate::console;
use crate::container::{self, App};
use crate::dns_relay::DnsRelay;
use crate::error::{Context, InitError};
use crate::outbox::{self, Outbox};

/// SIGCHLD must be blocked before the application is forked, or an early exit is lost.
pub fn block_child_signals() -> Result<SignalFd, InitError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()
        .context(|| "block SIGCHLD".to_string())?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context(|| "signalfd".to_string())
}

struct Output {
    stream: StreamKind,
    fd: Option<OwnedFd>,
    credit: u32,
}

/// A process whose stdio the relay carries: the application (session 0) or an exec.
struct Session {
    pid: Pid,
    terminal: bool,
    /// The pty master with a terminal, for resizing.
    pty: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    stdin_eof: bool,
    outputs: Vec<Output>,
    exit_code: Option<i32>,
}

impl Session {
    fn new(mut app: App) -> Result<Session, InitError> {
        let stdin = app
            .stdin
            .take()
            .ok_or_else(|| InitError::Channel(std::io::Error::other("stdin already taken")))?;
        if !app.terminal {
            fcntl(stdin.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                .context(|| "make stdin non-blocking".to_string())?;
        }
        let pty = if app.terminal {
            Some(
                app.stdout
                    .try_clone()
                    .context(|| "dup the pty".to_string())?,
            )
        } else {
            None
        };
        let mut outputs = vec![Output {
            stream: StreamKind::Stdout,
            fd: Some(app.stdout),
            credit: STREAM_WINDOW,
        }];
        if let Some(stderr) = app.stderr {
            outputs.push(Output {
                stream: StreamKind::Stderr,
                fd: Some(stderr),
                credit: STREAM_WINDOW,
            });
        }
        Ok(Session {
            pid: app.pid,
            terminal: app.terminal,
            pty,
            stdin: Some(stdin),
            stdin_buf: Vec::new(),
            stdin_eof: false,
            outputs,
            exit_code: None,
        })
    }

    /// The process exited and everything it wrote is delivered.
    fn finished(&self) -> Option<i32> {
        self.exit_code
            .filter(|_| self.outputs.iter().all(|o| o.fd.is_none()))
    }

    fn close_stdin(&mut self) {
        // A terminal has no end of input of its own; the pty stays for the output.
        if !self.terminal {
            self.stdin = None;
        }
    }
}

/// A descriptor the poll loop waits on for a session.
#[derive(Clone, Copy)]
enum Slot {
    Stdin(u32),
    Output(u32, usize),
}

/// How long the relay, done, waits for the host to take its last frames (the exit among them).
const LAST_FRAMES_TIMEOUT: Duration = Duration::from_secs(10);

struct Relay<'a> {
    /// Non-blocking: read whenever the host sent something, written by the outbox.
    port: File,
    outbox: Outbox,
    mirror: Option<Mirror>,
    decoder: Decoder,
    config: &'a GuestConfig,
    sessions: BTreeMap<u32, Session>,
    dns: Option<DnsRelay>,
    /// When the late modules (balloon, entropy) are due; `None` once they are loaded.
    late_modules_at: Option<Instant>,
}

/// How long the application runs before the late modules load. Neither is needed to run it,
/// and on a one-CPU guest its start comes first; a short-lived application ends before they
/// would load at all. Loading them in a thread of their own cost the boot ~10 ms under TCG
/// for the thread alone.
pub const LATE_MODULES_AFTER: Duration = Duration::from_secs(1);

/// Until the next event, or until the late modules are due (`due`), seen at `now`.
fn poll_timeout(due: Option<Instant>, now: Instant) -> PollTimeout {
    match due {
        None => PollTimeout::NONE,
        Some(at) => {
            let left = at.saturating_duration_since(now);
            // Rounded up, so that the loop does not spin in the last millisecond.
            let millis = left.as_millis().saturating_add(1);
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// Runs until the application has exited and its output is delivered; returns its exit code.
#[allow(clippy::too_many_arguments)]
pub fn run(
    port: File,
    outbox: Outbox,
    mirror: Option<Mirror>,
    config: &GuestConfig,
    app: App,
    children: SignalFd,
    dns: Option<DnsRelay>,
    marks: GuestMarks,
) -> Result<i32, InitError> {
    let mut relay = Relay {
        port,
        outbox,
        mirror,
        decoder: Decoder::default(),
        config,
        sessions: BTreeMap::new(),
        dns,
        late_modules_at: Some(Instant::now() + LATE_MODULES_AFTER),
    };
    let result = relay.serve(app, &children, marks);
    // The relay owns the port from its start: its own failure goes out through the outbox
    // too, after whole frames, never into the middle of one.
    if let Err(error) = &result {
        let _ = relay.send(&Message::Error {
            session: MAIN_SESSION,
            message: error.to_string(),
        });
    }
    relay.send_the_rest();
    result
}

impl Relay<'_> {
    fn serve(
        &mut self,
        app: App,
        children: &SignalFd,
        mut marks: GuestMarks,
    ) -> Result<i32, InitError> {
        fcntl(self.port.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .context(|| "make the port non-blocking".to_string())?;
        self.sessions.insert(MAIN_SESSION, Session::new(app)?);
        self.send(&Message::Started {
            session: MAIN_SESSION,
        })?;
        self.send_marks(&marks)?;
        loop {
            let finished: Vec<(u32, i32)> = self
                .sessions
                .iter()
                .filter_map(|(&id, session)| session.finished().map(|code| (id, code)))
                .collect();
            for (session, code) in finished {
                self.sessions.remove(&session);
                if session == MAIN_SESSION {
                    marks.mark("app_exit");
                    self.send_marks(&marks)?;
                    nix::unistd::sync();
                    if code == 128 + libc::SIGKILL && out_of_memory_kills() > 0 {
                        self.send(&Message::Data {
                        session,
                        stream: StreamKind::Stderr,
                        bytes: format!(
                            "runq: the guest ran out of memory and its kernel killed the \
                             application ({} MiB usable in the guest: raise RUNQ_MEM or docker -m)\n",
                            guest_memory_mib()
                        )
                        .into_bytes(),
                    })?;
                    }
                }
                self.send(&Message::Exit { session, code })?;
                if session == MAIN_SESSION {
                    return Ok(code);
                }
            }
            self.load_late_modules_when_due();
            self.poll_once(children)?;
        }
    }

    fn send(&mut self, message: &Message) -> Result<(), InitError> {
        self.outbox.send(message).map_err(InitError::Channel)
    }

    /// Writes what is queued, reading (and handling) what the host sends meanwhile, until all
    /// is out or the host has taken nothing for a while.
    /// Writes what is queued until all is out or the host has taken nothing for a while. What
    /// the host sends meanwhile is read, so that its writes never wait on this guest, and
    /// dropped: the container is over.
    fn send_the_rest(&mut self) {
        let deadline = Instant::now() + LAST_FRAMES_TIMEOUT;
        let mut sink = [0u8; 4096];
        while self.outbox.queued() > 0 && Instant::now() < deadline {
            let mut fds = [PollFd::new(
                self.port.as_fd(),
                PollFlags::POLLIN | PollFlags::POLLOUT,
            )];
            if matches!(poll(&mut fds, PollTimeout::from(100u16)), Err(e) if e != Errno::EINTR) {
                return;
            }
            let events = fds[0].revents().unwrap_or(PollFlags::empty());
            if events.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                return;
            }
            if events.contains(PollFlags::POLLIN) {
                let _ = nix::unistd::read(self.port.as_raw_fd(), &mut sink);
            }
            if events.contains(PollFlags::POLLOUT) && self.outbox.flush(&self.port).is_err() {
                return;
            }
        }
    }

    fn send_marks(&mut self, marks: &GuestMarks) -> Result<(), InitError> {
        let json = serde_json::to_vec(&marks.stamped()).unwrap_or_default();
        self.send(&Message::Timeline { json })
    }

    fn load_late_modules_when_due(&mut self) {
        if self.late_modules_at.is_some_and(|at| Instant::now() >= at) {
            self.late_modules_at = None;
            crate::modules::load_late();
        }
    }

    fn poll_once(&mut self, children: &SignalFd) -> Result<(), InitError> {
        let timeout = poll_timeout(self.late_modules_at, Instant::now());
        // Above the high-water mark only the host's frames and the children are attended to,
        // until the host has taken the backlog.
        let backlog = self.outbox.queued();
        let take_more = backlog < outbox::HIGH_WATER;
        let (port_ready, children_ready, dns_ready, slots_ready) = {
            let port_events = match backlog {
                0 => PollFlags::POLLIN,
                _ => PollFlags::POLLIN | PollFlags::POLLOUT,
            };
            let mut fds = vec![
                PollFd::new(self.port.as_fd(), port_events),
                PollFd::new(children.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.outbox.wake_fd(), PollFlags::POLLIN),
            ];
            let dns_slot = self.dns.as_ref().filter(|_| take_more).map(|dns| {
                fds.push(PollFd::new(dns.socket.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let mut slots = Vec::new();
            for (&id, session) in &self.sessions {
                if let (Some(fd), false) = (&session.stdin, session.stdin_buf.is_empty()) {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
                    slots.push((Slot::Stdin(id), fds.len() - 1));
                }
                for (index, output) in session.outputs.iter().enumerate() {
                    if let (Some(fd), true, true) = (&output.fd, output.credit > 0, take_more) {
                        fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                        slots.push((Slot::Output(id, index), fds.len() - 1));
                    }
                }
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    return Err(InitError::Sys {
                        what: "poll".into(),
                        source: e,
                    })
                }
            }
            let ready = |slot: usize| fds[slot].any().unwrap_or(false);
            if ready(2) {
                self.outbox.clear_wake();
            }
            (
                ready(0),
                ready(1),
                dns_slot.is_some_and(ready),
                slots
                    .into_iter()
                    .filter(|&(_, index)| ready(index))
                    .map(|(slot, _)| slot)
                    .collect::<Vec<_>>(),
            )
        };
        if dns_ready {
            if let Some((id, packet)) = self.dns.as_mut().and_then(DnsRelay::receive_query) {
                self.send(&Message::DnsQuery { id, packet })?;
            }
        }
        if children_ready {
            self.reap(children);
        }
        for slot in slots_ready {
            match slot {
                Slot::Output(id, index) => self.forward_output(id, index)?,
                Slot::Stdin(id) => self.feed_stdin(id)?,
            }
        }
        if port_ready {
            self.read_port()?;
        }
        // Without waiting for POLLOUT: most frames fit at once.
        self.outbox.flush(&self.port).map_err(InitError::Channel)
    }

    fn reap(&mut self, children: &SignalFd) {
        while let Ok(Some(_)) = children.read_signal() {}
        loop {
            let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            let main = self.sessions.get(&MAIN_SESSION).map(|s| s.pid);
            if let Some(session) = self.sessions.values_mut().find(|s| s.pid == pid) {
                session.exit_code = Some(if self.config.systemd && main == Some(pid) {
                    systemd_exit_code(code)
                } else {
                    code
                });
            }
        }
    }

    fn forward_output(&mut self, id: u32, index: usize) -> Result<(), InitError> {
        let Some(output) = self
            .sessions
            .get_mut(&id)
            .and_then(|session| session.outputs.get_mut(index))
        else {
            return Ok(());
        };
        let Some(fd) = &output.fd else {
            return Ok(());
        };
        let mut buf = vec![0u8; DATA_CHUNK.min(output.credit as usize)];
        let read = nix::unistd::read(fd.as_raw_fd(), &mut buf);
        let stream = output.stream;
        let message = match read {
            Ok(0) | Err(Errno::EIO) => {
                // EIO: the pty's last slave is closed.
                output.fd = None;
                Message::Eof {
                    session: id,
                    stream,
                }
            }
            Ok(n) => {
                output.credit -= n as u32;
                buf.truncate(n);
                Message::Data {
                    session: id,
                    stream,
                    bytes: buf,
                }
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => return Ok(()),
            Err(e) => {
                console::log(&format!("read {stream:?} of session {id}: {e}"));
                output.fd = None;
                Message::Eof {
                    session: id,
                    stream,
                }
            }
        };
        self.send(&message)
    }

    fn feed_stdin(&mut self, id: u32) -> Result<(), InitError> {
        let Some(session) = self.sessions.get_mut(&id) else {
            return Ok(());
        };
        let Some(fd) = &session.stdin else {
            return Ok(());
        };
        let written = match nix::unistd::write(fd, &session.stdin_buf) {
            Ok(n) => n,
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => return Ok(()),
            Err(_) => {
                // The process closed its stdin: what is left will never be read.
                session.stdin = None;
                session.stdin_buf.len()
            }
        };
        session.stdin_buf.drain(..written);
        if session.stdin_buf.is_empty() && session.stdin_eof {
            session.close_stdin();
        }
        self.send(&Message::Credit {
            session: id,
            stream: StreamKind::Stdin,
            bytes: written as u32,
        })
    }

    fn read_port(&mut self) -> Result<(), InitError> {
        let mut buf = vec![0u8; 64 << 10];
        let n = match self.port.read(&mut buf) {
            Ok(0) => return Err(InitError::ChannelClosed),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(InitError::Channel(e)),
        };
        self.decoder.push(&buf[..n]);
        while let Some(message) = self.decoder.next_message()? {
            self.handle(message)?;
        }
        Ok(())
    }

    fn handle(&mut self, message: Message) -> Result<(), InitError> {
        if Mirror::handles(&message) {
            if let Some(mirror) = &self.mirror {
                mirror.deliver(message);
            }
            return Ok(());
        }
        if let Message::Exec { session, json } = message {
            return self.start_exec(session, &json);
        }
        if let Message::DnsAnswer { id, packet } = message {
            if let Some(dns) = self.dns.as_mut() {
                dns.answer(id, &packet);
            }
            return Ok(());
        }
        let Some(id) = message.session() else {
            console::log(&format!("unexpected message {message:?}"));
            return Ok(());
        };
        let Some(session) = self.sessions.get_mut(&id) else {
            // A session that just ended; stdin for it has nowhere to go.
            return match message.credit_for() {
                Some(credit) => self.send(&credit),
                None => Ok(()),
            };
        };
        match message {
            Message::Data {
                stream: StreamKind::Stdin,
                ref bytes,
                ..
            } => match (&session.stdin, message.credit_for()) {
                (Some(_), _) => session.stdin_buf.extend_from_slice(bytes),
                // Nobody reads them any more; keep the host's window open.
                (None, Some(credit)) => self.send(&credit)?,
                (None, None) => {}
            },
            Message::Eof {
                stream: StreamKind::Stdin,
                ..
            } => {
                session.stdin_eof = true;
                if session.stdin_buf.is_empty() {
                    session.close_stdin();
                }
            }
            Message::Credit { stream, bytes, .. } => {
                if let Some(output) = session.outputs.iter_mut().find(|o| o.stream == stream) {
                    output.credit = output.credit.saturating_add(bytes).min(STREAM_WINDOW);
                }
            }
            Message::Signal { signal, .. } => {
                let signal = if self.config.systemd && id == MAIN_SESSION && signal == libc::SIGTERM
                {
                    // systemd's request to power off, where SIGTERM would only re-execute it.
                    libc::SIGRTMIN() + 4
                } else {
                    signal
                };
                send_signal(session.pid, signal)
            }
            Message::Resize { rows, cols, .. } => {
                if let Some(pty) = &session.pty {
                    let size = libc::winsize {
                        ws_row: rows,
                        ws_col: cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ reads the winsize we pass; the fd is the pty master.
                    unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn start_exec(&mut self, id: u32, json: &[u8]) -> Result<(), InitError> {
        // noexec never reaches the guest: `runq exec` refuses it, and the proxy of such a
        // container has no exec socket.
        let started = if id == MAIN_SESSION || self.sessions.contains_key(&id) {
            Err(format!("exec session {id} exists already"))
        } else {
            self.spawn_exec(json)
        };
        match started {
            Ok(session) => {
                self.sessions.insert(id, session);
                self.send(&Message::Started { session: id })
            }
            Err(message) => self.send(&Message::Error {
                session: id,
                message,
            }),
        }
    }

    fn spawn_exec(&self, json: &[u8]) -> Result<Session, String> {
        let process: ProcessConfig =
            serde_json::from_slice(json).map_err(|e| format!("invalid exec process: {e}"))?;
        let app = self
            .sessions
            .get(&MAIN_SESSION)
            .filter(|main| main.exit_code.is_none())
            .ok_or("the container's application has ended")?
            .pid;
        container::spawn_exec(app, &process, self.config.seccomp.as_ref())
            .and_then(Session::new)
            .map_err(|e| e.to_string())
    }
}

/// How many processes the guest kernel's OOM killer has killed since boot.
fn out_of_memory_kills() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn guest_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// systemd as the application: poweroff and halt are a clean end, anything else is not. In a
/// PID namespace systemd-shutdown exits 0 where it would power off; a reboot(2) for poweroff
/// or halt from inside the namespace ends its PID 1 with SIGINT (and a restart with SIGHUP).
fn systemd_exit_code(code: i32) -> i32 {
    if code == 0 || code == 128 + libc::SIGINT {
        0
    } else {
        1
    }
}

fn send_signal(pid: Pid, signal: i32) {
    match Signal::try_from(signal) {
        Ok(signal) => {
            let _ = kill(pid, signal);
        }
        Err(_) => {
            // Real-time signals are not in nix's enum.
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(pid.as_raw(), signal) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{poll_timeout, systemd_exit_code, Duration, Instant, PollTimeout};

    #[test]
    fn the_poll_waits_for_events_only_once_the_late_modules_are_loaded() {
        let now = Instant::now();
        assert_eq!(poll_timeout(None, now), PollTimeout::NONE);
        let due = now + Duration::from_millis(250);
        assert_eq!(poll_timeout(Some(due), now), PollTimeout::from(251u16));
        // Overdue: a short wait, never a negative or endless one.
        assert_eq!(poll_timeout(Some(now), due), PollTimeout::from(1u16));
    }

    #[test]
    fn only_poweroff_and_halt_are_clean_systemd_ends() {
        assert_eq!(systemd_exit_code(0), 0);
        assert_eq!(systemd_exit_code(128 + libc::SIGINT), 0);
        assert_eq!(systemd_exit_code(128 + libc::SIGHUP), 1);
        assert_eq!(systemd_exit_code(137), 1);
        assert_eq!(systemd_exit_code(3), 1);
    }
}

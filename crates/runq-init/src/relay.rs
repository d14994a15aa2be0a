//! Relays the application's stdio, signals and exit over the control channel.
//!
//! One poll loop, no threads: init must stay single-threaded to fork safely. Each output
//! stream is read only while the host has granted credit for it, and stdin is written without
//! blocking, so neither a slow host nor an application that ignores its stdin stalls the loop.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use runq_shared::protocol::{
    Decoder, Message, StreamKind, DATA_CHUNK, MAIN_SESSION, STREAM_WINDOW,
};

use crate::container::App;
use crate::dns_relay::DnsRelay;
use crate::{console, Context, InitError};

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

struct Relay {
    port: File,
    decoder: Decoder,
    app: App,
    stdin: Option<OwnedFd>,
    stdin_buf: Vec<u8>,
    stdin_eof: bool,
    outputs: Vec<Output>,
    exit_code: Option<i32>,
    dns: Option<DnsRelay>,
}

/// Runs until the application has exited and its output is delivered; returns its exit code.
pub fn run(
    port: File,
    mut app: App,
    children: SignalFd,
    dns: Option<DnsRelay>,
) -> Result<i32, InitError> {
    let stdin = app
        .stdin
        .take()
        .ok_or_else(|| InitError::Channel(std::io::Error::other("stdin already taken")))?;
    if !app.terminal {
        fcntl(stdin.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .context(|| "make stdin non-blocking".to_string())?;
    }
    let mut outputs = vec![Output {
        stream: StreamKind::Stdout,
        fd: Some(
            app.stdout
                .try_clone()
                .context(|| "dup stdout".to_string())?,
        ),
        credit: STREAM_WINDOW,
    }];
    if let Some(stderr) = &app.stderr {
        outputs.push(Output {
            stream: StreamKind::Stderr,
            fd: Some(stderr.try_clone().context(|| "dup stderr".to_string())?),
            credit: STREAM_WINDOW,
        });
    }
    let mut relay = Relay {
        port,
        decoder: Decoder::default(),
        app,
        stdin: Some(stdin),
        stdin_buf: Vec::new(),
        stdin_eof: false,
        outputs,
        exit_code: None,
        dns,
    };
    relay.send(&Message::Started {
        session: MAIN_SESSION,
    })?;
    loop {
        if let Some(code) = relay.exit_code {
            if relay.outputs.iter().all(|o| o.fd.is_none()) {
                nix::unistd::sync();
                relay.send(&Message::Exit {
                    session: MAIN_SESSION,
                    code,
                })?;
                return Ok(code);
            }
        }
        relay.poll_once(&children)?;
    }
}

impl Relay {
    fn send(&mut self, message: &Message) -> Result<(), InitError> {
        self.port
            .write_all(&message.encode())
            .map_err(InitError::Channel)
    }

    fn poll_once(&mut self, children: &SignalFd) -> Result<(), InitError> {
        let (port_ready, children_ready, stdin_ready, outputs_ready, dns_ready) = {
            let mut fds = vec![
                PollFd::new(self.port.as_fd(), PollFlags::POLLIN),
                PollFd::new(children.as_fd(), PollFlags::POLLIN),
            ];
            let dns_slot = self.dns.as_ref().map(|dns| {
                fds.push(PollFd::new(dns.socket.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let stdin_slot = match &self.stdin {
                Some(fd) if !self.stdin_buf.is_empty() => {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLOUT));
                    Some(fds.len() - 1)
                }
                _ => None,
            };
            let mut output_slots = Vec::new();
            for (index, output) in self.outputs.iter().enumerate() {
                if let (Some(fd), true) = (&output.fd, output.credit > 0) {
                    fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    output_slots.push((index, fds.len() - 1));
                }
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    return Err(InitError::Sys {
                        what: "poll".into(),
                        source: e,
                    })
                }
            }
            let ready = |slot: usize| fds[slot].any().unwrap_or(false);
            (
                ready(0),
                ready(1),
                stdin_slot.is_some_and(ready),
                output_slots
                    .into_iter()
                    .filter(|&(_, slot)| ready(slot))
                    .map(|(index, _)| index)
                    .collect::<Vec<_>>(),
                dns_slot.is_some_and(ready),
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
        for index in outputs_ready {
            self.forward_output(index)?;
        }
        if stdin_ready {
            self.feed_stdin()?;
        }
        if port_ready {
            self.read_port()?;
        }
        Ok(())
    }

    fn reap(&mut self, children: &SignalFd) {
        while let Ok(Some(_)) = children.read_signal() {}
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == self.app.pid => {
                    self.exit_code = Some(code)
                }
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == self.app.pid => {
                    self.exit_code = Some(128 + signal as i32)
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    fn forward_output(&mut self, index: usize) -> Result<(), InitError> {
        let output = &mut self.outputs[index];
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
                    session: MAIN_SESSION,
                    stream,
                }
            }
            Ok(n) => {
                output.credit -= n as u32;
                buf.truncate(n);
                Message::Data {
                    session: MAIN_SESSION,
                    stream,
                    bytes: buf,
                }
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => return Ok(()),
            Err(e) => {
                console::log(&format!("read {stream:?}: {e}"));
                output.fd = None;
                Message::Eof {
                    session: MAIN_SESSION,
                    stream,
                }
            }
        };
        self.send(&message)
    }

    fn feed_stdin(&mut self) -> Result<(), InitError> {
        let Some(fd) = &self.stdin else {
            return Ok(());
        };
        let written = match nix::unistd::write(fd, &self.stdin_buf) {
            Ok(n) => n,
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => return Ok(()),
            Err(_) => {
                // The application closed its stdin: what is left will never be read.
                self.stdin = None;
                self.stdin_buf.len()
            }
        };
        self.stdin_buf.drain(..written);
        if self.stdin_buf.is_empty() && self.stdin_eof {
            self.close_stdin();
        }
        self.send(&Message::Credit {
            session: MAIN_SESSION,
            stream: StreamKind::Stdin,
            bytes: written as u32,
        })
    }

    fn close_stdin(&mut self) {
        // A terminal has no end of input of its own; the pty stays for the output.
        if !self.app.terminal {
            self.stdin = None;
        }
    }

    fn read_port(&mut self) -> Result<(), InitError> {
        let mut buf = vec![0u8; 64 << 10];
        let n = match self.port.read(&mut buf) {
            Ok(0) => return Err(InitError::ChannelClosed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(InitError::Channel(e)),
        };
        self.decoder.push(&buf[..n]);
        while let Some(message) = self.decoder.next_message()? {
            self.handle(message)?;
        }
        Ok(())
    }

    fn handle(&mut self, message: Message) -> Result<(), InitError> {
        match message {
            Message::Data {
                stream: StreamKind::Stdin,
                bytes,
                ..
            } => {
                if self.stdin.is_some() {
                    self.stdin_buf.extend_from_slice(&bytes);
                } else {
                    // Nobody reads them any more; keep the host's window open.
                    self.send(&Message::Credit {
                        session: MAIN_SESSION,
                        stream: StreamKind::Stdin,
                        bytes: bytes.len() as u32,
                    })?;
                }
            }
            Message::Eof {
                stream: StreamKind::Stdin,
                ..
            } => {
                self.stdin_eof = true;
                if self.stdin_buf.is_empty() {
                    self.close_stdin();
                }
            }
            Message::Credit { stream, bytes, .. } => {
                if let Some(output) = self.outputs.iter_mut().find(|o| o.stream == stream) {
                    output.credit = output.credit.saturating_add(bytes).min(STREAM_WINDOW);
                }
            }
            Message::Signal { signal, .. } => {
                match Signal::try_from(signal) {
                    Ok(signal) => {
                        let _ = kill(self.app.pid, signal);
                    }
                    Err(_) => {
                        // Real-time signals are not in nix's enum.
                        // SAFETY: kill takes plain integers.
                        unsafe { libc::kill(self.app.pid.as_raw(), signal) };
                    }
                }
            }
            Message::Resize { rows, cols, .. } => {
                if self.app.terminal {
                    let size = libc::winsize {
                        ws_row: rows,
                        ws_col: cols,
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ reads the winsize we pass; the fd is the pty master.
                    unsafe { libc::ioctl(self.app.stdout.as_raw_fd(), libc::TIOCSWINSZ, &size) };
                }
            }
            Message::DnsAnswer { id, packet } => {
                if let Some(dns) = self.dns.as_mut() {
                    dns.answer(id, &packet);
                }
            }
            other => console::log(&format!("unexpected message {other:?}")),
        }
        Ok(())
    }
}

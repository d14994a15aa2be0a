//! The host end of a session's stdio: this process's fds 0, 1 and 2, carried as frames of one
//! session. runq-proxy serves the application's with it, runq-exec an exec session's.
//!
//! stdin is read only as far as the guest has granted credit; output chunks are written by
//! one thread per stream, which returns credit once a chunk is out, so a slow reader of stdout
//! holds back only stdout.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use nix::sys::termios::{self, SetArg};
use runq_shared::protocol::{Message, StreamKind, DATA_CHUNK};

/// The sending end of a framed connection, shared by threads: every sender writes whole
/// frames under a lock so they never interleave.
#[derive(Clone)]
pub struct FrameWriter(Arc<Mutex<UnixStream>>);

impl FrameWriter {
    pub fn new(stream: UnixStream) -> FrameWriter {
        FrameWriter(Arc::new(Mutex::new(stream)))
    }

    pub fn send(&self, message: &Message) -> std::io::Result<()> {
        let mut stream = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("frame writer lock poisoned"))?;
        message.write_to(&mut *stream)
    }
}

/// Bytes of stdin the guest will still accept.
#[derive(Clone, Default)]
pub struct Credit(Arc<(Mutex<u32>, Condvar)>);

impl Credit {
    pub fn new(initial: u32) -> Credit {
        Credit(Arc::new((Mutex::new(initial), Condvar::new())))
    }

    pub fn add(&self, bytes: u32) {
        let (lock, ready) = &*self.0;
        if let Ok(mut credit) = lock.lock() {
            *credit = credit.saturating_add(bytes);
            ready.notify_all();
        }
    }

    /// Waits until some credit is available and takes up to `want` of it.
    fn take(&self, want: u32) -> u32 {
        let (lock, ready) = &*self.0;
        let Ok(mut credit) = lock.lock() else {
            return 0;
        };
        while *credit == 0 {
            credit = match ready.wait(credit) {
                Ok(guard) => guard,
                Err(_) => return 0,
            };
        }
        let taken = want.min(*credit);
        *credit -= taken;
        taken
    }
}

/// Forwards fd 0 to the guest until end of file.
pub fn spawn_stdin_pump(session: u32, channel: FrameWriter, credit: Credit) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; DATA_CHUNK];
            loop {
                let allowed = credit.take(DATA_CHUNK as u32) as usize;
                if allowed == 0 {
                    return;
                }
                let message = match stdin.read(&mut buf[..allowed]) {
                    Ok(0) | Err(_) => Message::Eof {
                        session,
                        stream: StreamKind::Stdin,
                    },
                    Ok(n) => {
                        credit.add((allowed - n) as u32);
                        Message::Data {
                            session,
                            stream: StreamKind::Stdin,
                            bytes: buf[..n].to_vec(),
                        }
                    }
                };
                let end = matches!(message, Message::Eof { .. });
                if channel.send(&message).is_err() || end {
                    return;
                }
            }
        })
        .map(drop)
}

/// One output stream (stdout or stderr) of the session.
pub struct Output {
    chunks: Option<Sender<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Output {
    pub fn spawn(
        session: u32,
        stream: StreamKind,
        channel: FrameWriter,
    ) -> std::io::Result<Output> {
        // Unbounded in chunks but not in bytes: the guest never has more than a window of
        // this stream in flight. Blocking here would stall the channel reader.
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("{stream:?}"))
            .spawn(move || write_chunks(session, stream, receiver, channel))?;
        Ok(Output {
            chunks: Some(sender),
            thread: Some(thread),
        })
    }

    pub fn push(&self, bytes: Vec<u8>) {
        if let Some(chunks) = &self.chunks {
            let _ = chunks.send(bytes);
        }
    }

    /// Writes out what is queued and stops.
    pub fn finish(&mut self) {
        self.chunks = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_chunks(session: u32, stream: StreamKind, chunks: Receiver<Vec<u8>>, channel: FrameWriter) {
    let mut out: Box<dyn Write> = match stream {
        StreamKind::Stderr => Box::new(std::io::stderr()),
        _ => Box::new(std::io::stdout()),
    };
    let mut broken = false;
    for chunk in chunks {
        if !broken {
            // A reader that went away must not stop the application: keep accepting output.
            broken = out.write_all(&chunk).and_then(|()| out.flush()).is_err();
        }
        let _ = channel.send(&Message::Credit {
            session,
            stream,
            bytes: chunk.len() as u32,
        });
    }
}

/// With a terminal the guest's pty does the line discipline; ours must pass bytes through.
pub fn make_raw() {
    let stdin = std::io::stdin();
    if let Ok(mut attrs) = termios::tcgetattr(&stdin) {
        termios::cfmakeraw(&mut attrs);
        let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &attrs);
    }
}

/// Whether the host pty, as the engine left it, maps "\n" to "\r\n" on output.
pub fn terminal_onlcr() -> bool {
    termios::tcgetattr(std::io::stdin())
        .map(|attrs| {
            attrs.output_flags.contains(termios::OutputFlags::OPOST)
                && attrs.output_flags.contains(termios::OutputFlags::ONLCR)
        })
        .unwrap_or(true)
}

/// The terminal's size, if fd 0 is one.
pub fn window_size() -> Option<(u16, u16)> {
    // SAFETY: fd 0 is open for the life of the process.
    let fd = unsafe { BorrowedFd::borrow_raw(0) };
    let mut size: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

/// Waits for the next of the signals in `set`, which the calling thread must have blocked.
pub fn wait_for_signal(set: &nix::sys::signal::SigSet) -> Option<libc::c_int> {
    let mut signal: libc::c_int = 0;
    // SAFETY: sigwait reads the set and writes one int we own.
    (unsafe { libc::sigwait(set.as_ref(), &mut signal) } == 0).then_some(signal)
}

//! The stream machinery of a session: stdin read only as far as the peer granted credit, and
//! one writer thread per output stream that returns credit once a chunk is out, so a slow
//! reader of stdout holds back only stdout.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use runq_shared::protocol::{Message, StreamKind, DATA_CHUNK, STREAM_WINDOW};

use crate::FrameWriter;

/// Told when a write to the peer timed out: the peer stopped reading.
pub type OnStall = Arc<dyn Fn() + Send + Sync>;

/// The session's connection to its peer, and who hears when the peer stops reading (where
/// the connection has a write timeout).
#[derive(Clone)]
pub struct Link {
    pub writer: FrameWriter,
    pub on_stall: Option<OnStall>,
}

impl Link {
    pub fn send(&self, message: &Message) -> std::io::Result<()> {
        let result = self.writer.send(message);
        if let (Err(error), Some(on_stall)) = (&result, &self.on_stall) {
            use std::io::ErrorKind::{TimedOut, WouldBlock};
            if matches!(error.kind(), WouldBlock | TimedOut) {
                on_stall();
            }
        }
        result
    }
}

/// Where a stream's bytes are read or written on this side.
pub type Source = Box<dyn Read + Send>;
pub type Sink = Box<dyn Write + Send>;

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

/// Forwards `stdin` as the session's stdin until end of file.
pub fn spawn_stdin_pump(
    session: u32,
    mut stdin: Source,
    channel: Link,
    credit: Credit,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
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

/// The peer sent more of a stream than the window it was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun(pub StreamKind);

impl std::fmt::Display for Overrun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} beyond its window of {STREAM_WINDOW} bytes", self.0)
    }
}

impl std::error::Error for Overrun {}

/// One output stream (stdout or stderr) of the session, written by a thread of its own.
pub struct Output {
    stream: StreamKind,
    pending: Arc<Pending>,
    thread: Option<JoinHandle<Sink>>,
    /// Bytes received and not yet credited back: never more than the window.
    in_flight: Arc<AtomicU32>,
}

/// The bytes waiting for the writer: one buffer, so that they take a window's memory at most
/// however the peer cut them into frames.
#[derive(Default)]
struct Pending {
    state: Mutex<PendingState>,
    ready: Condvar,
}

#[derive(Default)]
struct PendingState {
    bytes: Vec<u8>,
    /// No more bytes come: the writer ends once it wrote these.
    closed: bool,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        // A panic elsewhere leaves bytes that are still worth writing.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next bytes to write; `None` once closed and written.
    fn take(&self) -> Option<Vec<u8>> {
        let mut state = self.lock();
        while state.bytes.is_empty() && !state.closed {
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        match state.bytes.is_empty() {
            true => None,
            false => Some(std::mem::take(&mut state.bytes)),
        }
    }
}

impl Output {
    pub fn spawn(
        session: u32,
        stream: StreamKind,
        sink: Sink,
        channel: Link,
    ) -> std::io::Result<Output> {
        let pending = Arc::new(Pending::default());
        let in_flight = Arc::new(AtomicU32::new(0));
        let (taken, credited) = (Arc::clone(&pending), Arc::clone(&in_flight));
        let thread = std::thread::Builder::new()
            .name(format!("{stream:?}"))
            .spawn(move || write_out(session, stream, sink, &taken, channel, &credited))?;
        Ok(Output {
            stream,
            pending,
            thread: Some(thread),
            in_flight,
        })
    }

    /// Adds bytes for writing, without waiting (that would stall the channel reader);
    /// refused when the peer exceeded its window.
    pub fn push(&self, bytes: Vec<u8>) -> Result<(), Overrun> {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_flight| {
                in_flight
                    .checked_add(len)
                    .filter(|&total| total <= STREAM_WINDOW)
            })
            .map_err(|_| Overrun(self.stream))?;
        if !bytes.is_empty() {
            self.pending.lock().bytes.extend_from_slice(&bytes);
            self.pending.ready.notify_one();
        }
        Ok(())
    }

    /// Writes out what is pending, stops, and hands the sink back (`None` if its thread
    /// panicked).
    pub fn finish(mut self) -> Option<Sink> {
        self.pending.lock().closed = true;
        self.pending.ready.notify_one();
        self.thread.take().and_then(|thread| thread.join().ok())
    }
}

fn write_out(
    session: u32,
    stream: StreamKind,
    mut out: Sink,
    pending: &Pending,
    channel: Link,
    in_flight: &AtomicU32,
) -> Sink {
    let mut broken = false;
    while let Some(bytes) = pending.take() {
        if !broken {
            // A reader that went away must not stop the application: keep accepting output.
            broken = out.write_all(&bytes).and_then(|()| out.flush()).is_err();
        }
        // Never more than a window, so it fits the credit's u32.
        let len = bytes.len() as u32;
        // Before the credit goes out, or the peer's next bytes could find these still counted.
        in_flight.fetch_sub(len, Ordering::AcqRel);
        let _ = channel.send(&Message::Credit {
            session,
            stream,
            bytes: len,
        });
    }
    out
}

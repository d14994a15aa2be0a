//! The stream machinery of a session: stdin read only as far as the peer granted credit, and
//! one writer thread per output stream that returns credit once a chunk is out, so a slow
//! reader of stdout holds back only stdout.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
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
    chunks: Option<Sender<Vec<u8>>>,
    thread: Option<JoinHandle<Sink>>,
    /// Bytes received and not yet credited back: never more than the window.
    in_flight: Arc<AtomicU32>,
}

impl Output {
    pub fn spawn(
        session: u32,
        stream: StreamKind,
        sink: Sink,
        channel: Link,
    ) -> std::io::Result<Output> {
        // Unbounded in chunks but not in bytes: `push` refuses more than a window in flight.
        // Blocking here would stall the channel reader.
        let (sender, receiver) = mpsc::channel();
        let in_flight = Arc::new(AtomicU32::new(0));
        let credited = Arc::clone(&in_flight);
        let thread = std::thread::Builder::new()
            .name(format!("{stream:?}"))
            .spawn(move || write_chunks(session, stream, sink, receiver, channel, credited))?;
        Ok(Output {
            stream,
            chunks: Some(sender),
            thread: Some(thread),
            in_flight,
        })
    }

    /// Queues a chunk for writing; refused when the peer exceeded its window.
    pub fn push(&self, bytes: Vec<u8>) -> Result<(), Overrun> {
        // Nothing to write and nothing to credit: queueing it would let a peer that sends
        // empty frames grow the queue without spending its window.
        if bytes.is_empty() {
            return Ok(());
        }
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_flight| {
                in_flight
                    .checked_add(len)
                    .filter(|&total| total <= STREAM_WINDOW)
            })
            .map_err(|_| Overrun(self.stream))?;
        if let Some(chunks) = &self.chunks {
            let _ = chunks.send(bytes);
        }
        Ok(())
    }

    /// Writes out what is queued, stops, and hands the sink back (`None` if its thread
    /// panicked).
    pub fn finish(mut self) -> Option<Sink> {
        self.chunks = None;
        self.thread.take().and_then(|thread| thread.join().ok())
    }
}

fn write_chunks(
    session: u32,
    stream: StreamKind,
    mut out: Sink,
    chunks: Receiver<Vec<u8>>,
    channel: Link,
    in_flight: Arc<AtomicU32>,
) -> Sink {
    let mut broken = false;
    for chunk in chunks {
        if !broken {
            // A reader that went away must not stop the application: keep accepting output.
            broken = out.write_all(&chunk).and_then(|()| out.flush()).is_err();
        }
        // Before the credit goes out, or the peer's next chunk could find it still counted.
        in_flight.fetch_sub(chunk.len() as u32, Ordering::AcqRel);
        let _ = channel.send(&Message::Credit {
            session,
            stream,
            bytes: chunk.len() as u32,
        });
    }
    out
}

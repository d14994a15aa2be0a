//! The guest's sending end of the control channel. Frames are queued here and only the relay's
//! loop writes them to the port, without blocking, so that the guest goes on reading the host's
//! frames while its own wait. The host reads the guest into bounded queues and may block
//! writing to it (up to its write timeout); it must always find the guest reading, or the two
//! would wait on each other. The mirror's thread queues its frames here too.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use runq_shared::protocol::Message;

/// Queued bytes above which the relay stops reading its own sources (the sessions' output, DNS
/// queries) until the host has taken some: what the host's frames make the guest send (credit,
/// replies) is queued regardless, and is as bounded as the host's frames are. The mirror's
/// frames are not held back here: they are bounded by the credit the host's mirror grants
/// (a window a connection), and only ever cost the guest's own memory.
pub const HIGH_WATER: usize = 256 << 10;

#[derive(Clone)]
pub struct Outbox {
    pending: Arc<Mutex<VecDeque<u8>>>,
    /// Readable once another thread queued a frame, so that the relay's poll wakes for it.
    wake_read: Arc<OwnedFd>,
    wake_write: Arc<OwnedFd>,
}

impl Outbox {
    pub fn new() -> io::Result<Outbox> {
        let (wake_read, wake_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(Outbox {
            pending: Arc::default(),
            wake_read: Arc::new(wake_read),
            wake_write: Arc::new(wake_write),
        })
    }

    /// Queues the message's frame; never blocks on the port.
    pub fn send(&self, message: &Message) -> io::Result<()> {
        let frame = message.encode();
        self.pending
            .lock()
            .map_err(|_| io::Error::other("outbox lock poisoned"))?
            .extend(frame);
        // A full pipe already wakes the relay.
        let _ = nix::unistd::write(&*self.wake_write, &[1]);
        Ok(())
    }

    /// Bytes queued and not yet written to the port.
    pub fn queued(&self) -> usize {
        self.pending.lock().map_or(0, |pending| pending.len())
    }

    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake_read.as_fd()
    }

    pub fn clear_wake(&self) {
        let mut drain = [0u8; 64];
        while matches!(nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&*self.wake_read), &mut drain), Ok(n) if n > 0)
        {
        }
    }

    /// Writes what the port takes now. The port must be non-blocking.
    pub fn flush(&self, port: &File) -> io::Result<()> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| io::Error::other("outbox lock poisoned"))?;
        while !pending.is_empty() {
            let (front, _) = pending.as_slices();
            match nix::unistd::write(port, front) {
                Ok(n) => {
                    pending.drain(..n);
                }
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn frames_queued_from_two_threads_reach_the_port_whole_and_in_order_per_thread() {
        let outbox = Outbox::new().unwrap();
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_NONBLOCK).unwrap();
        let port = File::from(write_end);
        let mut reader = File::from(read_end);
        let other = outbox.clone();
        let thread = std::thread::spawn(move || {
            for conn in 0..100 {
                other.send(&Message::ConnEof { conn }).unwrap();
            }
        });
        for session in 0..100 {
            outbox.send(&Message::Started { session }).unwrap();
        }
        thread.join().unwrap();
        assert!(outbox.queued() > 0);
        outbox.flush(&port).unwrap();
        assert_eq!(outbox.queued(), 0);
        drop(port);
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).unwrap();
        let mut decoder = runq_shared::protocol::Decoder::default();
        decoder.push(&bytes);
        let (mut sessions, mut conns) = (Vec::new(), Vec::new());
        while let Some(message) = decoder.next_message().unwrap() {
            match message {
                Message::Started { session } => sessions.push(session),
                Message::ConnEof { conn } => conns.push(conn),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(sessions, (0..100).collect::<Vec<_>>());
        assert_eq!(conns, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn a_port_that_takes_nothing_more_leaves_the_rest_queued() {
        let outbox = Outbox::new().unwrap();
        let (_read_end, write_end) = nix::unistd::pipe2(OFlag::O_NONBLOCK).unwrap();
        let port = File::from(write_end);
        let chunk = Message::Data {
            session: 0,
            stream: runq_shared::protocol::StreamKind::Stdout,
            bytes: vec![0; 32 << 10],
        };
        for _ in 0..8 {
            outbox.send(&chunk).unwrap();
        }
        // A pipe holds 64 KiB: the rest waits, and flush does not block.
        outbox.flush(&port).unwrap();
        let left = outbox.queued();
        assert!(left > 0 && left < 8 * (32 << 10), "{left}");
    }
}

//! What the proxy's threads tell its main loop: inputs for the supervisor, and what only the
//! loop needs (the connections to write to, which child ended).

use std::os::unix::net::UnixStream;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use runq_session::FrameWriter;

use crate::exec::Client;
use crate::supervisor::Input;

/// Events waiting for the main loop. A thread that finds the queue full waits: the channel's
/// reader then stops reading the guest, which holds its frames. With every guest frame within
/// [`runq_shared::protocol::GUEST_FRAME_LIMIT`], the queue holds at most 16 MiB however the
/// guest floods; the main loop never waits on the guest for long (its writes time out, and
/// the guest's init always reads), so the queue drains.
pub const EVENT_QUEUE: usize = 64;

pub type Events = SyncSender<Event>;

pub fn queue() -> (Events, Receiver<Event>) {
    sync_channel(EVENT_QUEUE)
}

pub enum Event {
    Input(Input),
    /// QEMU connected the control channel.
    Connected {
        writer: FrameWriter,
        /// The same socket outside the writer's lock, to shut it down while a write waits.
        socket: UnixStream,
    },
    /// An exec client connected for this session; its request follows.
    ExecClientConnected {
        session: u32,
        client: Client,
        /// The thread that writes to the client, waited for at the end.
        writer: JoinHandle<()>,
    },
    ChildExited {
        pid: i32,
        status: String,
    },
}

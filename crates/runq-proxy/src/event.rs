//! What the proxy's threads tell its main loop (the supervisor).

use runq_session::FrameWriter;
use runq_shared::protocol::Message;

/// What the proxy's threads report to its main loop.
pub enum Event {
    Connected(FrameWriter),
    Guest(Message),
    ChannelClosed(Option<String>),
    ChildExited {
        pid: i32,
        status: String,
    },
    Signal(i32),
    WindowChanged,
    /// A client on the exec socket asks for a session running this process.
    ExecRequest {
        session: u32,
        json: Vec<u8>,
        client: FrameWriter,
    },
    /// A frame from an exec client for its session.
    ExecClient {
        session: u32,
        message: Message,
    },
    /// The exec client hung up.
    ExecClientGone {
        session: u32,
    },
}

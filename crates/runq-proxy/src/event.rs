//! What the proxy's threads tell its main loop: inputs for the supervisor, and what only the
//! loop needs (the connections to write to, which child ended).

use runq_session::FrameWriter;

use crate::supervisor::Input;

pub enum Event {
    Input(Input),
    /// QEMU connected the control channel.
    Connected(FrameWriter),
    /// An exec client connected for this session; its request follows.
    ExecClientConnected {
        session: u32,
        client: FrameWriter,
    },
    ChildExited {
        pid: i32,
        status: String,
    },
}

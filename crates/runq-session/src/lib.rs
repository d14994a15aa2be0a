//! The host end of a session: this process's stdio, signals and terminal size carried as
//! the frames of one session. runq-proxy serves the application's session with it (toward
//! the guest), runq-exec an exec session's (toward the proxy).

mod session;
pub mod signals;
mod stdio;
pub mod terminal;

pub use session::{Endpoints, HostSession};
pub use stdio::{Link, OnStall, Overrun};

/// Both ends of a session write frames to a Unix socket (the channel, an exec connection).
pub type FrameWriter = runq_shared::protocol::FrameWriter<std::os::unix::net::UnixStream>;

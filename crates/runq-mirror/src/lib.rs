//! Localhost for VMs that share one network namespace, as the containers of a Kubernetes pod
//! do. Each VM has a loopback of its own, so the proxy (in the namespace) and the guest init
//! each run a mirror: it reports the TCP ports listening on its side, listens on the ports
//! the other side reports, and carries every connection to them over the control channel,
//! where the other side connects to the real listener on its loopback.
//!
//! A port an application in VM A listens on thus appears in the pod's namespace (bound by
//! A's proxy), from where B's proxy sees it and B's init listens on it inside VM B.

mod engine;
pub mod listening;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::mpsc;

use runq_shared::protocol::Message;

/// Which end of the channel this mirror is; the two number their connections apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Host,
    Guest,
}

/// Sends one frame on the control channel.
pub type SendFrame = Box<dyn Fn(&Message) -> io::Result<()> + Send>;

/// The handle of a running mirror: hands it the other side's mirror messages.
pub struct Mirror {
    inbox: mpsc::Sender<Message>,
    wake: OwnedFd,
}

impl Mirror {
    /// Starts the mirror's thread. In the guest this must happen before init enters the
    /// application's PID namespace: the kernel refuses new threads after that.
    pub fn spawn(side: Side, send: SendFrame) -> io::Result<Mirror> {
        let (wake_read, wake) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        let (inbox, queue) = mpsc::channel();
        let engine = engine::Engine::new(side, send, queue, wake_read);
        std::thread::Builder::new()
            .name("mirror".into())
            .spawn(move || engine.run())?;
        Ok(Mirror { inbox, wake })
    }

    /// Whether the message belongs to the mirror.
    pub fn handles(message: &Message) -> bool {
        matches!(
            message,
            Message::Listening { .. }
                | Message::Connect { .. }
                | Message::ConnData { .. }
                | Message::ConnEof { .. }
                | Message::ConnCredit { .. }
                | Message::ConnClose { .. }
        )
    }

    /// Passes a message from the other side to the mirror's thread; never blocks.
    pub fn deliver(&self, message: Message) {
        if self.inbox.send(message).is_ok() {
            // A full pipe already wakes the thread.
            let _ = nix::unistd::write(&self.wake, &[1]);
        }
    }
}

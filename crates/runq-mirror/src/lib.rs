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

pub use runq_shared::config::MirrorCaps;

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

/// The other side's messages waiting for the mirror's thread. A full inbox makes the caller
/// wait: the thread never waits on anything but its poll (its sockets are non-blocking, and
/// its frames go to a writer the other side always reads), so the wait is short, and what the
/// other side sends is held in its own memory, not here.
pub const INBOX: usize = 64;

/// The handle of a running mirror: hands it the other side's mirror messages.
pub struct Mirror {
    inbox: mpsc::SyncSender<Message>,
    wake: OwnedFd,
}

impl Mirror {
    /// Starts the mirror's thread. In the guest this must happen before init enters the
    /// application's PID namespace: the kernel refuses new threads after that.
    pub fn spawn(side: Side, caps: MirrorCaps, send: SendFrame) -> io::Result<Mirror> {
        let (wake_read, wake) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        let (inbox, queue) = mpsc::sync_channel(INBOX);
        let engine = engine::Engine::new(side, caps, send, queue, wake_read);
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

    /// Passes a message from the other side to the mirror's thread; waits while the inbox is
    /// full.
    pub fn deliver(&self, message: Message) {
        let message = match self.inbox.try_send(message) {
            Ok(()) => None,
            Err(mpsc::TrySendError::Full(message)) => Some(message),
            Err(mpsc::TrySendError::Disconnected(_)) => return,
        };
        // A full pipe already wakes the thread.
        let _ = nix::unistd::write(&self.wake, &[1]);
        if let Some(message) = message {
            if self.inbox.send(message).is_ok() {
                let _ = nix::unistd::write(&self.wake, &[1]);
            }
        }
    }
}

/// Cuts a listening report to the ports any mirror takes (the first
/// [`MirrorCaps::MAX_LISTENERS`]), so that a long one never waits whole in a queue: the proxy
/// applies it to the guest's frames as it reads them, where they enter the host.
pub fn trim(message: &mut Message) {
    let most = MirrorCaps::MAX_LISTENERS as usize;
    if let Message::Listening { ports } = message {
        if ports.len() > most {
            ports.truncate(most);
            ports.shrink_to_fit();
        }
    }
}

/// What a mirror holds; each is capped whatever the other side sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub listeners: usize,
    pub conns: usize,
    /// Bytes received for connections and not yet written to their sockets.
    pub unwritten: usize,
}

impl Held {
    /// Whether it is within the caps: listeners, connections, a window a connection.
    pub fn within(&self, caps: MirrorCaps) -> bool {
        self.listeners <= caps.listeners as usize
            && self.conns <= caps.conns as usize
            && self.unwritten <= self.conns * runq_shared::protocol::STREAM_WINDOW as usize
    }
}

/// The mirror's engine without its thread, for the fuzz target: the caller hands it the
/// other side's messages and lets it serve its sockets, in the caller's thread.
#[doc(hidden)]
pub struct Stepped(engine::Engine);

impl Stepped {
    pub fn new(side: Side, caps: MirrorCaps, send: SendFrame) -> io::Result<Stepped> {
        let (wake, _) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        let (_, queue) = mpsc::sync_channel(0);
        Ok(Stepped(engine::Engine::new(side, caps, send, queue, wake)))
    }

    pub fn handle(&mut self, message: Message) -> io::Result<()> {
        self.0.handle(message)
    }

    pub fn serve_ready(&mut self) -> io::Result<()> {
        self.0.serve_ready()
    }

    pub fn held(&self) -> Held {
        self.0.held()
    }
}

#[cfg(test)]
mod tests {
    //! The mirror against real sockets on this machine's loopback; the other side is played
    //! by the test through `deliver` and the frames the mirror sends.

    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc::Receiver;
    use std::time::Duration;

    use runq_shared::protocol::{ListenPort, STREAM_WINDOW};

    fn mirror() -> (Mirror, Receiver<Message>) {
        let (frames, sent) = mpsc::channel();
        let send = Box::new(move |message: &Message| {
            frames
                .send(message.clone())
                .map_err(|_| io::Error::other("test over"))
        });
        (
            Mirror::spawn(Side::Host, MirrorCaps::default(), send).expect("spawn"),
            sent,
        )
    }

    /// The next frame about connections; the reports of this machine's listeners are not
    /// what these tests look at.
    fn next(sent: &Receiver<Message>) -> Message {
        loop {
            let message = sent
                .recv_timeout(Duration::from_secs(10))
                .expect("a frame from the mirror");
            if !matches!(message, Message::Listening { .. }) {
                return message;
            }
        }
    }

    fn free_port() -> u16 {
        let probe = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        probe.local_addr().expect("address").port()
    }

    #[test]
    fn a_connection_from_the_other_side_is_carried_both_ways_and_closed_in_order() {
        let (mirror, sent) = mirror();
        let server = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = server.local_addr().expect("address").port();
        mirror.deliver(Message::Connect { conn: 7, port });
        let (mut accepted, _) = server.accept().expect("the mirror connects");
        accepted
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");

        mirror.deliver(Message::ConnData {
            conn: 7,
            bytes: b"ping".to_vec(),
        });
        let mut buf = [0u8; 4];
        accepted.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"ping");
        assert_eq!(next(&sent), Message::ConnCredit { conn: 7, bytes: 4 });

        accepted.write_all(b"pong").expect("write");
        assert_eq!(
            next(&sent),
            Message::ConnData {
                conn: 7,
                bytes: b"pong".to_vec()
            }
        );

        mirror.deliver(Message::ConnEof { conn: 7 });
        assert_eq!(
            accepted.read(&mut buf).expect("read"),
            0,
            "end-of-file passed on"
        );
        drop(accepted);
        assert_eq!(next(&sent), Message::ConnEof { conn: 7 });
    }

    #[test]
    fn a_refused_connection_is_closed_on_the_other_side() {
        let (mirror, sent) = mirror();
        mirror.deliver(Message::Connect {
            conn: 9,
            port: free_port(),
        });
        assert_eq!(next(&sent), Message::ConnClose { conn: 9 });
    }

    #[test]
    fn a_port_of_the_other_side_is_listened_on_here_and_its_clients_carried_over() {
        let (mirror, sent) = mirror();
        let port = free_port();
        mirror.deliver(Message::Listening {
            ports: vec![ListenPort { port, any: false }],
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut client = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(client) => break client,
                Err(error) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the mirror never listened: {error}"
                    );
                    std::thread::yield_now();
                }
            }
        };
        let Message::Connect { conn, port: asked } = next(&sent) else {
            panic!("no Connect for the client");
        };
        assert_eq!(asked, port);
        assert_ne!(conn & (1 << 31), 0, "the host numbers with the top bit set");

        mirror.deliver(Message::ConnData {
            conn,
            bytes: b"hi".to_vec(),
        });
        let mut buf = [0u8; 2];
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        client.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"hi");

        // Withdrawn: nothing listens there any more, so the port can be bound again (a
        // connect could meet itself on a port of the ephemeral range).
        mirror.deliver(Message::Listening { ports: vec![] });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpListener::bind(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the mirror still listens"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn data_beyond_the_granted_window_resets_the_connection() {
        let (mirror, sent) = mirror();
        let server = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = server.local_addr().expect("address").port();
        mirror.deliver(Message::Connect { conn: 5, port });
        let (accepted, _) = server.accept().expect("the mirror connects");
        // One byte more than the window this side granted.
        mirror.deliver(Message::ConnData {
            conn: 5,
            bytes: vec![b'x'; STREAM_WINDOW as usize + 1],
        });
        loop {
            match next(&sent) {
                Message::ConnClose { conn: 5 } => break,
                Message::ConnCredit { conn: 5, .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(accepted);
    }

    #[test]
    fn a_listener_whose_backlog_is_full_holds_up_no_other_connection() {
        use nix::sys::socket::{
            bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn,
        };
        let (mirror, sent) = mirror();
        // A listener that never accepts, with room for one connection, which we take: the
        // kernel drops the mirror's SYN and would retry it for minutes.
        let full = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&full),
            &SockaddrIn::new(127, 0, 0, 1, 0),
        )
        .expect("bind");
        listen(&full, Backlog::new(0).expect("backlog")).expect("listen");
        let full = TcpListener::from(full);
        let port = full.local_addr().expect("address").port();
        let _queued = TcpStream::connect(("127.0.0.1", port)).expect("the one queued connection");
        mirror.deliver(Message::Connect { conn: 1, port });
        // The next request is answered at once, not after the first connect gave up.
        mirror.deliver(Message::Connect {
            conn: 2,
            port: free_port(),
        });
        assert_eq!(next(&sent), Message::ConnClose { conn: 2 });
    }

    #[test]
    fn a_flood_of_requests_waits_for_the_bounded_inbox_and_every_one_is_answered() {
        let (mirror, sent) = mirror();
        // Below the ephemeral range: thousands of connects to a free port there could meet
        // themselves.
        let port = (20500..21000)
            .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
            .expect("a free port below the ephemeral range");
        let flood = 50 * INBOX as u32;
        // More than the inbox holds: deliver waits for the thread instead of queueing them.
        for conn in 0..flood {
            mirror.deliver(Message::Connect { conn, port });
        }
        let mut closed = 0;
        while closed < flood {
            match next(&sent) {
                Message::ConnClose { .. } => closed += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn the_other_side_s_ports_are_mirrored_up_to_the_cap() {
        let (mirror, _sent) = mirror();
        // Below the ephemeral range: a connect to a free port there can never meet itself
        // (TCP's simultaneous open on a source port the kernel picked).
        let first = 21000;
        let cap = MirrorCaps::default().listeners as u16;
        let ports = (0..cap + 50)
            .map(|n| ListenPort {
                port: first + n,
                any: false,
            })
            .collect();
        mirror.deliver(Message::Listening { ports });
        // The last of the capped range listens once the mirror got to it; the next port is
        // still free, which a bind of our own shows.
        let last = first + cap - 1;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", last)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "port {last} never mirrored"
            );
            std::thread::yield_now();
        }
        assert!(TcpListener::bind(("127.0.0.1", last + 1)).is_ok());
    }
}

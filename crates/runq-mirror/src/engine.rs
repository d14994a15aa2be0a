//! The mirror's thread: one poll loop over the wake pipe, the mirrored listeners and the
//! connections, with a scan of this side's listeners between polls.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{send, MsgFlags};
use runq_shared::config::MirrorCaps;
use runq_shared::protocol::{ListenPort, Message, DATA_CHUNK, STREAM_WINDOW};

use crate::{listening, SendFrame, Side};

/// How often this side's listeners are read again.
const SCAN_INTERVAL: Duration = Duration::from_millis(300);

/// Connections the host opens are numbered with the top bit set, the guest's without it.
const HOST_CONN_BIT: u32 = 1 << 31;

struct Mirrored {
    socket: TcpListener,
    any: bool,
}

struct Conn {
    stream: TcpStream,
    /// A connect of this side still under way (to this port): nothing is read until it
    /// completes, and the other side's data waits in the outbox.
    connecting: Option<Connecting>,
    /// Bytes the other side will still accept.
    credit: u32,
    /// Received, not yet written to the socket.
    outbox: Vec<u8>,
    /// This side's socket reached end-of-file and the other side was told.
    read_done: bool,
    /// The other side reached end-of-file; shut down writing once the outbox is empty.
    peer_done: bool,
    write_shut: bool,
}

pub struct Engine {
    side: Side,
    /// The other side's ports mirrored here at most (further ones are not), and connections
    /// carried at once (a further one is refused, closed).
    caps: MirrorCaps,
    send: SendFrame,
    queue: Receiver<Message>,
    wake: OwnedFd,
    /// The other side's ports, as it last reported them.
    wanted: BTreeMap<u16, bool>,
    /// The listeners standing in for them here.
    mirrored: BTreeMap<u16, Mirrored>,
    conns: HashMap<u32, Conn>,
    next_conn: u32,
    reported: Vec<ListenPort>,
}

enum Ready {
    Listener(u16),
    Readable(u32),
    Writable(u32),
}

impl Engine {
    pub fn new(
        side: Side,
        caps: MirrorCaps,
        send: SendFrame,
        queue: Receiver<Message>,
        wake: OwnedFd,
    ) -> Engine {
        Engine {
            side,
            caps,
            send,
            queue,
            wake,
            wanted: BTreeMap::new(),
            mirrored: BTreeMap::new(),
            conns: HashMap::new(),
            next_conn: 0,
            reported: Vec::new(),
        }
    }

    /// Runs until the channel is gone.
    pub fn run(mut self) {
        let mut next_scan = Instant::now();
        // Messages left in the inbox after a batch: the sockets get their turn first.
        let mut more = false;
        loop {
            if Instant::now() >= next_scan {
                if self.scan().is_err() {
                    return;
                }
                next_scan = Instant::now() + SCAN_INTERVAL;
            }
            let timeout = match more {
                true => Duration::ZERO,
                false => next_scan.saturating_duration_since(Instant::now()),
            };
            let (woken, ready) = self.wait(timeout);
            if woken || more {
                match self.take_messages() {
                    Ok(left) => more = left,
                    Err(_) => return,
                }
            }
            if self.serve(ready).is_err() {
                return;
            }
        }
    }

    /// Accepts, reads and writes what the poll found ready.
    fn serve(&mut self, ready: Vec<Ready>) -> io::Result<()> {
        for event in ready {
            match event {
                Ready::Listener(port) => self.accept(port)?,
                Ready::Readable(conn) => self.read(conn)?,
                Ready::Writable(conn) => self.write(conn)?,
            }
        }
        Ok(())
    }

    /// One turn without waiting: the sockets that are ready now are served (for the fuzz
    /// target, which drives the engine in its own thread).
    pub fn serve_ready(&mut self) -> io::Result<()> {
        let (_, ready) = self.wait(Duration::ZERO);
        self.serve(ready)
    }

    /// What the engine holds: mirrored listeners, connections, bytes not yet written to them.
    pub fn held(&self) -> crate::Held {
        crate::Held {
            listeners: self.mirrored.len(),
            conns: self.conns.len(),
            unwritten: self.conns.values().map(|conn| conn.outbox.len()).sum(),
        }
    }

    fn wait(&self, timeout: Duration) -> (bool, Vec<Ready>) {
        let mut fds = vec![PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        let mut slots = Vec::new();
        for (&port, mirrored) in &self.mirrored {
            fds.push(PollFd::new(mirrored.socket.as_fd(), PollFlags::POLLIN));
            slots.push(Ready::Listener(port));
        }
        for (&id, conn) in &self.conns {
            // A socket with nothing to do is left out, so that a hang-up cannot spin the loop.
            if !conn.read_done && conn.credit > 0 && conn.connecting.is_none() {
                fds.push(PollFd::new(conn.stream.as_fd(), PollFlags::POLLIN));
                slots.push(Ready::Readable(id));
            }
            // A connect under way shows its end as writable.
            if !conn.outbox.is_empty() || conn.connecting.is_some() {
                fds.push(PollFd::new(conn.stream.as_fd(), PollFlags::POLLOUT));
                slots.push(Ready::Writable(id));
            }
        }
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return (false, Vec::new()),
        }
        let ready = |fd: &PollFd| fd.any().unwrap_or(false);
        let woken = ready(&fds[0]);
        let events = slots
            .into_iter()
            .zip(&fds[1..])
            .filter(|(_, fd)| ready(fd))
            .map(|(slot, _)| slot)
            .collect();
        (woken, events)
    }

    /// Reports this side's listeners when they changed, leaving out the mirror's own, and
    /// retries mirrored ports that were busy before.
    fn scan(&mut self) -> io::Result<()> {
        let ports: Vec<ListenPort> = listening::scan()
            .into_iter()
            .filter(|listen| !self.mirrored.contains_key(&listen.port))
            .collect();
        if ports != self.reported {
            (self.send)(&Message::Listening {
                ports: ports.clone(),
            })?;
            self.reported = ports;
        }
        self.reconcile();
        Ok(())
    }

    /// Handles at most an inbox's worth of the other side's messages; whether more may wait.
    fn take_messages(&mut self) -> io::Result<bool> {
        let mut drain = [0u8; 64];
        while matches!(nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&self.wake), &mut drain), Ok(n) if n > 0)
        {
        }
        for _ in 0..crate::INBOX {
            match self.queue.try_recv() {
                Ok(message) => self.handle(message)?,
                Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }

    pub fn handle(&mut self, message: Message) -> io::Result<()> {
        match message {
            Message::Listening { ports } => {
                self.wanted = ports
                    .iter()
                    .take(self.caps.listeners as usize)
                    .map(|l| (l.port, l.any))
                    .collect();
                self.reconcile();
            }
            Message::Connect { conn, port } => {
                let started = match self.conns.len() < self.caps.conns as usize
                    && !self.conns.contains_key(&conn)
                {
                    true => Connecting::start(port),
                    false => Err(io::Error::other("too many connections")),
                };
                match started {
                    Ok((stream, connecting)) => {
                        let mut open = Conn::new(stream);
                        open.connecting = Some(connecting);
                        self.conns.insert(conn, open);
                    }
                    Err(_) => (self.send)(&Message::ConnClose { conn })?,
                }
            }
            Message::ConnData { conn, bytes } => match self.conns.get_mut(&conn) {
                // Within the window this side granted; more is the other side's fault.
                Some(open) if open.outbox.len() + bytes.len() <= STREAM_WINDOW as usize => {
                    open.outbox.extend_from_slice(&bytes)
                }
                Some(_) => self.reset(conn)?,
                None => (self.send)(&Message::ConnClose { conn })?,
            },
            Message::ConnEof { conn } => {
                if let Some(open) = self.conns.get_mut(&conn) {
                    open.peer_done = true;
                }
                self.settle(conn);
            }
            Message::ConnCredit { conn, bytes } => {
                if let Some(open) = self.conns.get_mut(&conn) {
                    open.credit = open.credit.saturating_add(bytes);
                }
            }
            Message::ConnClose { conn } => {
                if let Some(open) = self.conns.remove(&conn) {
                    let _ = open.stream.shutdown(Shutdown::Both);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Listens on each port the other side has, and on no other. A port busy here (an
    /// application of this side took it first) is tried again at the next scan.
    fn reconcile(&mut self) {
        let wanted = &self.wanted;
        self.mirrored
            .retain(|port, mirrored| wanted.get(port) == Some(&mirrored.any));
        for (&port, &any) in &self.wanted {
            if self.mirrored.contains_key(&port) {
                continue;
            }
            let Ok(socket) = listen(port, any) else {
                continue;
            };
            if socket.set_nonblocking(true).is_ok() {
                self.mirrored.insert(port, Mirrored { socket, any });
            }
        }
    }

    fn accept(&mut self, port: u16) -> io::Result<()> {
        loop {
            let Some(mirrored) = self.mirrored.get(&port) else {
                return Ok(());
            };
            let Ok((stream, _)) = mirrored.socket.accept() else {
                return Ok(());
            };
            // Beyond the cap the client is closed at once, as by a full backlog.
            if self.conns.len() >= self.caps.conns as usize || stream.set_nonblocking(true).is_err()
            {
                continue;
            }
            let conn = self.new_conn_number();
            (self.send)(&Message::Connect { conn, port })?;
            self.conns.insert(conn, Conn::new(stream));
        }
    }

    fn new_conn_number(&mut self) -> u32 {
        loop {
            self.next_conn = (self.next_conn + 1) & !HOST_CONN_BIT;
            let conn = match self.side {
                Side::Host => self.next_conn | HOST_CONN_BIT,
                Side::Guest => self.next_conn,
            };
            if !self.conns.contains_key(&conn) {
                return conn;
            }
        }
    }

    fn read(&mut self, id: u32) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let want = (conn.credit as usize).min(DATA_CHUNK);
        let mut buf = vec![0u8; want];
        match conn.stream.read(&mut buf) {
            Ok(0) => {
                conn.read_done = true;
                (self.send)(&Message::ConnEof { conn: id })?;
                self.settle(id);
            }
            Ok(n) => {
                buf.truncate(n);
                conn.credit -= n as u32;
                (self.send)(&Message::ConnData {
                    conn: id,
                    bytes: buf,
                })?;
            }
            Err(e) if is_transient(&e) => {}
            Err(_) => self.reset(id)?,
        }
        Ok(())
    }

    fn write(&mut self, id: u32) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        if let Some(connecting) = conn.connecting {
            match conn.stream.take_error() {
                Ok(None) => conn.connecting = None,
                // Refused on IPv4's loopback: IPv6's, once.
                _ => match connecting.next() {
                    Some(Ok((stream, next))) => {
                        conn.stream = stream;
                        conn.connecting = Some(next);
                        return Ok(());
                    }
                    _ => return self.reset(id),
                },
            }
            self.settle(id);
            return Ok(());
        }
        // MSG_NOSIGNAL: a peer that went away must not raise SIGPIPE, which the proxy would
        // take for a signal to forward.
        match send(
            std::os::fd::AsRawFd::as_raw_fd(&conn.stream),
            &conn.outbox,
            MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(n) => {
                conn.outbox.drain(..n);
                (self.send)(&Message::ConnCredit {
                    conn: id,
                    bytes: n as u32,
                })?;
                self.settle(id);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(_) => self.reset(id)?,
        }
        Ok(())
    }

    /// Passes on the other side's end-of-file once everything before it is written, and
    /// forgets a connection finished both ways.
    fn settle(&mut self, id: u32) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.peer_done && conn.outbox.is_empty() && !conn.write_shut && conn.connecting.is_none()
        {
            let _ = conn.stream.shutdown(Shutdown::Write);
            conn.write_shut = true;
        }
        if conn.read_done && conn.write_shut {
            self.conns.remove(&id);
        }
    }

    fn reset(&mut self, id: u32) -> io::Result<()> {
        self.conns.remove(&id);
        (self.send)(&Message::ConnClose { conn: id })
    }
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        let _ = stream.set_nonblocking(true);
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            connecting: None,
            credit: STREAM_WINDOW,
            outbox: Vec::new(),
            read_done: false,
            peer_done: false,
            write_shut: false,
        }
    }
}

/// A wildcard port listens on both IP versions where the namespace has IPv6 (`[::]` takes
/// IPv4 too), else on IPv4's wildcard; a loopback port on 127.0.0.1.
fn listen(port: u16, any: bool) -> io::Result<TcpListener> {
    if any {
        TcpListener::bind((Ipv6Addr::UNSPECIFIED, port))
            .or_else(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
    } else {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
    }
}

/// A connect to the listener the other side's client means: IPv4 loopback first, then
/// IPv6's. Started without waiting: a listener whose backlog is full drops the SYN, and a
/// blocking connect would hold the mirror's thread (and whoever waits on its inbox) for as
/// long as the kernel retries.
#[derive(Debug, Clone, Copy)]
struct Connecting {
    port: u16,
    ipv6: bool,
}

impl Connecting {
    fn start(port: u16) -> io::Result<(TcpStream, Connecting)> {
        let v4 = Connecting { port, ipv6: false };
        match v4.connect() {
            Ok(stream) => Ok((stream, v4)),
            Err(_) => match v4.next() {
                Some(next) => next,
                None => Err(io::Error::other("no loopback listener")),
            },
        }
    }

    /// The IPv6 attempt after a failed IPv4 one; none after IPv6's.
    fn next(self) -> Option<io::Result<(TcpStream, Connecting)>> {
        if self.ipv6 {
            return None;
        }
        let v6 = Connecting {
            port: self.port,
            ipv6: true,
        };
        Some(v6.connect().map(|stream| (stream, v6)))
    }

    fn connect(&self) -> io::Result<TcpStream> {
        use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType};
        use nix::sys::socket::{SockaddrIn, SockaddrIn6};
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let family = match self.ipv6 {
            false => AddressFamily::Inet,
            true => AddressFamily::Inet6,
        };
        let socket = socket(family, SockType::Stream, flags, None)?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let connected = match self.ipv6 {
            false => connect(
                fd,
                &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port)),
            ),
            true => connect(
                fd,
                &SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::LOCALHOST, self.port, 0, 0)),
            ),
        };
        match connected {
            Ok(()) | Err(Errno::EINPROGRESS) => Ok(TcpStream::from(socket)),
            Err(e) => Err(e.into()),
        }
    }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

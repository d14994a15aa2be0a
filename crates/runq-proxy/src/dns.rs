//! The host end of the embedded-DNS relay (see runq-init's dns_relay): queries from the guest
//! go to 127.0.0.11:53 here, in the container's network namespace, where Docker answers them.
//!
//! A fixed pool of workers, each with one socket, takes queries from a short queue; what does
//! not fit is dropped, as a loaded resolver drops it, and the guest's resolver asks again. So
//! a guest that floods queries costs the host these threads and this queue, nothing more.

use std::net::{SocketAddrV4, UdpSocket};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runq_session::Link;
use runq_shared::protocol::Message;

const WORKERS: usize = 4;
/// Queries waiting for a worker.
const QUEUE: usize = 64;
/// Larger than any question a resolver asks.
const MAX_QUERY: usize = 4096;
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

type Query = (u32, Vec<u8>);

pub struct DnsRelay {
    queries: SyncSender<Query>,
}

impl DnsRelay {
    pub fn start(channel: Link) -> std::io::Result<DnsRelay> {
        let (queries, queue) = sync_channel(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..WORKERS {
            let socket = UdpSocket::bind(("127.0.0.1", 0))?;
            socket.connect(SocketAddrV4::new(runq_shared::dns::EMBEDDED_DNS, 53))?;
            let (queue, channel) = (Arc::clone(&queue), channel.clone());
            std::thread::Builder::new()
                .name("dns".into())
                .spawn(move || serve(&socket, &queue, &channel))?;
        }
        Ok(DnsRelay { queries })
    }

    /// Hands the query to a worker, or drops it when all are busy and the queue is full.
    pub fn resolve(&self, id: u32, packet: Vec<u8>) {
        if packet.len() <= MAX_QUERY {
            let _ = self.queries.try_send((id, packet));
        }
    }
}

fn serve(socket: &UdpSocket, queue: &Mutex<Receiver<Query>>, channel: &Link) {
    let mut buf = vec![0u8; 65536];
    loop {
        let query = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok((id, packet)) = query else { return };
        if let Some(answer) = ask(socket, &packet, &mut buf) {
            let _ = channel.send(&Message::DnsAnswer { id, packet: answer });
        }
    }
}

/// The server's answer to `query`: the datagram with the query's DNS id, so that a late answer
/// to an earlier query is never taken for this one's.
fn ask(socket: &UdpSocket, query: &[u8], buf: &mut [u8]) -> Option<Vec<u8>> {
    let dns_id = query.get(..2)?;
    socket.send(query).ok()?;
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let n = socket.recv(buf).ok()?;
        if buf.get(..2) == Some(dns_id) {
            return Some(buf[..n].to_vec());
        }
    }
}

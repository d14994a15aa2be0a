//! The host end of the embedded-DNS relay (see runq-init's dns_relay): queries from the guest
//! go to 127.0.0.11:53 here, in the container's network namespace, where Docker answers them.

use std::net::{SocketAddrV4, UdpSocket};
use std::time::Duration;

use runq_shared::protocol::Message;

use runq_session::FrameWriter;

const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the embedded server on a thread of its own; an unanswered query gets no reply, and
/// the resolver in the guest retries as it would with any lost packet.
pub fn resolve_in_background(id: u32, query: Vec<u8>, channel: FrameWriter) {
    let _ = std::thread::Builder::new()
        .name("dns".into())
        .spawn(move || {
            if let Some(packet) = ask(&query) {
                let _ = channel.send(&Message::DnsAnswer { id, packet });
            }
        });
}

fn ask(query: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind(("127.0.0.1", 0)).ok()?;
    socket.set_read_timeout(Some(ANSWER_TIMEOUT)).ok()?;
    socket
        .connect(SocketAddrV4::new(runq_shared::dns::EMBEDDED_DNS, 53))
        .ok()?;
    socket.send(query).ok()?;
    let mut buf = vec![0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

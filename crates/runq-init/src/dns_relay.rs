//! Docker's embedded DNS server (127.0.0.11 on user-defined networks) answers only inside the
//! container's network namespace on the host. When the container's resolv.conf points there,
//! runq-init listens on 127.0.0.11:53 in the guest and passes each query to the proxy over
//! the control channel; the proxy asks the real server and sends the answer back.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};

use runq_shared::dns::EMBEDDED_DNS;

use crate::console;

/// Queries waiting for their answer, by id; bounded so a flood cannot grow it without end.
const MAX_PENDING: usize = 1024;

pub struct DnsRelay {
    pub socket: UdpSocket,
    next_id: u32,
    pending: HashMap<u32, SocketAddr>,
}

/// Listens when the application's resolv.conf names Docker's embedded server, as the proxy
/// found (`HostFindings::embedded_dns`). The address, not a host name string: binding to a
/// string would link glibc's resolver and its NSS machinery into this static binary.
pub fn listen_if_needed(embedded_dns: bool) -> Option<DnsRelay> {
    if !embedded_dns {
        return None;
    }
    match UdpSocket::bind((EMBEDDED_DNS, 53)) {
        Ok(socket) => {
            let _ = socket.set_nonblocking(true);
            Some(DnsRelay {
                socket,
                next_id: 0,
                pending: HashMap::new(),
            })
        }
        Err(e) => {
            console::log(&format!("embedded DNS relay: bind {EMBEDDED_DNS}:53: {e}"));
            None
        }
    }
}

impl DnsRelay {
    /// A query from the application, with the id to send it under.
    pub fn receive_query(&mut self) -> Option<(u32, Vec<u8>)> {
        let mut buf = vec![0u8; 4096];
        let (n, from) = self.socket.recv_from(&mut buf).ok()?;
        if self.pending.len() >= MAX_PENDING {
            self.pending.clear();
        }
        self.next_id = self.next_id.wrapping_add(1);
        self.pending.insert(self.next_id, from);
        buf.truncate(n);
        Some((self.next_id, buf))
    }

    pub fn answer(&mut self, id: u32, packet: &[u8]) {
        if let Some(client) = self.pending.remove(&id) {
            let _ = self.socket.send_to(packet, client);
        }
    }
}

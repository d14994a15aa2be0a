//! The localhost mirror's engine driven by arbitrary frames from the other side, with real
//! loopback sockets: listeners it mirrors, connections it makes (to its own listeners among
//! others), data for them that nobody on this side reads. It must never panic, and whatever
//! the frames, it holds no more than its caps: listeners, connections, a window of unwritten
//! data a connection.

#![no_main]

use libfuzzer_sys::fuzz_target;
use runq_mirror::{MirrorCaps, Side, Stepped};
use runq_shared::protocol::Message;

/// The ports the fuzzed frames name are folded into this private range, so that the mirror
/// never listens on or connects to a real service of this machine.
const FIRST_PORT: u16 = 47100;
const PORTS: u16 = 16;

fn private(port: u16) -> u16 {
    FIRST_PORT + port % PORTS
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let side = if flags & 1 == 0 { Side::Host } else { Side::Guest };
    // Small caps, so that the inputs reach them.
    let caps = MirrorCaps {
        listeners: u32::from(flags >> 1 & 0x7),
        conns: u32::from(flags >> 4),
    };
    // The other side never reads: what the mirror sends is dropped.
    let Ok(mut mirror) = Stepped::new(side, caps, Box::new(|_: &Message| Ok(()))) else {
        return;
    };
    // Each step: a length byte, then that many bytes of a frame body.
    while let [len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (body, next) = tail.split_at(len);
        rest = next;
        let Ok(message) = Message::decode(body) else {
            continue;
        };
        let message = match message {
            Message::Listening { mut ports } => {
                ports.iter_mut().for_each(|listen| listen.port = private(listen.port));
                Message::Listening { ports }
            }
            Message::Connect { conn, port } => Message::Connect {
                conn,
                port: private(port),
            },
            other => other,
        };
        if mirror.handle(message).is_err() || mirror.serve_ready().is_err() {
            break;
        }
        let held = mirror.held();
        assert!(held.within(caps), "the mirror holds {held:?}, its caps {caps:?}");
    }
});

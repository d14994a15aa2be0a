//! Test-only (feature `hostile`): a guest that breaks the protocol on purpose, so that
//! tests/hostile_guest.rs can check what a real proxy makes of it. The attack is named by
//! `RUNQ_TEST_ATTACK` in the container's environment.

use std::fs::File;
use std::io::Read;

use runq_shared::config::GuestConfig;
use runq_shared::protocol::{
    Message, StreamKind, DATA_CHUNK, MAIN_SESSION, PROTOCOL_VERSION, STREAM_WINDOW,
};

use crate::error::InitError;

/// A DNS query for `localhost`, type A, class IN.
fn localhost_query(id: u16) -> Vec<u8> {
    let mut packet = id.to_be_bytes().to_vec();
    packet.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    packet.push(9);
    packet.extend(b"localhost");
    packet.extend([0, 0, 1, 0, 1]);
    packet
}

pub fn wanted(config: &GuestConfig) -> Option<String> {
    config
        .process
        .env
        .iter()
        .find_map(|entry| entry.strip_prefix("RUNQ_TEST_ATTACK="))
        .map(str::to_string)
}

/// Sends the attack's frames, then reads the channel until the proxy ends the VM.
pub fn attack(name: &str, port: &mut File) -> Result<(), InitError> {
    let started = Message::Started {
        session: MAIN_SESSION,
    };
    let frames: Vec<Message> = match name {
        "hello-twice" => vec![Message::Hello {
            version: PROTOCOL_VERSION,
        }],
        "started-twice" => vec![started.clone(), started],
        // More stdout in one frame than the window the host granted.
        "flood" => vec![
            started,
            Message::Data {
                session: MAIN_SESSION,
                stream: StreamKind::Stdout,
                bytes: vec![b'x'; STREAM_WINDOW as usize + DATA_CHUNK],
            },
        ],
        "phantom-session" => vec![
            started,
            Message::Data {
                session: 77,
                stream: StreamKind::Stdout,
                bytes: b"who?".to_vec(),
            },
        ],
        "host-message" => vec![
            started,
            Message::Signal {
                session: MAIN_SESSION,
                signal: libc::SIGKILL,
            },
        ],
        // All the stdin there is, then nothing read: the host's writes must time out.
        "stop-reading" => vec![
            started,
            Message::Credit {
                session: MAIN_SESSION,
                stream: StreamKind::Stdin,
                bytes: 1 << 30,
            },
        ],
        // Valid queries (localhost, A) as fast as the port takes them, where the host has the
        // embedded DNS server: the host side must hold them to its pool and queue.
        "dns-flood-embedded" => std::iter::once(started)
            .chain((0..200_000).map(|id| Message::DnsQuery {
                id,
                packet: localhost_query(id as u16),
            }))
            .collect(),
        "dns-flood" => std::iter::once(started)
            .chain((0..100_000).map(|id| Message::DnsQuery {
                id,
                packet: vec![0; 32],
            }))
            .collect(),
        other => vec![Message::Error {
            session: MAIN_SESSION,
            message: format!("unknown attack {other}"),
        }],
    };
    for frame in frames {
        // The proxy may end the VM in the middle; the rest is then moot.
        if frame.write_to(port).is_err() {
            break;
        }
    }
    if name == "stop-reading" {
        loop {
            std::thread::park();
        }
    }
    let mut sink = [0u8; 4096];
    while matches!(port.read(&mut sink), Ok(n) if n > 0) {}
    Err(InitError::ChannelClosed)
}

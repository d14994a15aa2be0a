//! Test-only (feature `hostile`): a guest that breaks the protocol on purpose, so that
//! tests/hostile_guest.rs can check what a real proxy makes of it. The attack is named by
//! `RUNQ_TEST_ATTACK` in the container's environment.

use std::fs::File;
use std::io::Read;

use runq_shared::config::GuestConfig;
use runq_shared::protocol::{
    ListenPort, Message, StreamKind, MAIN_SESSION, PROTOCOL_VERSION, STREAM_WINDOW,
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
    let frames: Box<dyn Iterator<Item = Message>> =
        match name {
            "hello-twice" => Box::new(std::iter::once(Message::Hello {
                version: PROTOCOL_VERSION,
            })),
            "started-twice" => Box::new([started.clone(), started].into_iter()),
            // One frame beyond the window the host granted, and within the frame limit: the host
            // must refuse what was never granted, not queue it.
            "flood" => Box::new([started, stdout(STREAM_WINDOW as usize + 32)].into_iter()),
            "phantom-session" => Box::new(
                [
                    started,
                    Message::Data {
                        session: 77,
                        stream: StreamKind::Stdout,
                        bytes: b"who?".to_vec(),
                    },
                ]
                .into_iter(),
            ),
            "host-message" => Box::new(
                [
                    started,
                    Message::Signal {
                        session: MAIN_SESSION,
                        signal: libc::SIGKILL,
                    },
                ]
                .into_iter(),
            ),
            // All the stdin there is, then nothing read: the host's writes must time out.
            "stop-reading" => Box::new(
                [
                    started,
                    Message::Credit {
                        session: MAIN_SESSION,
                        stream: StreamKind::Stdin,
                        bytes: 1 << 30,
                    },
                ]
                .into_iter(),
            ),
            // Valid queries (localhost, A) as fast as the port takes them, where the host has the
            // embedded DNS server: the host side must hold them to its pool and queue.
            "dns-flood-embedded" => Box::new(std::iter::once(started).chain((0..200_000).map(
                |id| Message::DnsQuery {
                    id,
                    packet: localhost_query(id as u16),
                },
            ))),
            "dns-flood" => {
                Box::new(
                    std::iter::once(started).chain((0..100_000).map(|id| Message::DnsQuery {
                        id,
                        packet: vec![0; 32],
                    })),
                )
            }
            // In a pod: 60k listening ports announced over and over, each time others, wildcard
            // and loopback in turn; the host mirrors a capped number of them.
            "listen-flood" => Box::new(std::iter::once(started).chain((0u32..).map(|round| {
                Message::Listening {
                    ports: (0..60_000u32)
                        .map(|n| ListenPort {
                            port: (1024 + (n + round * 7) % 64_000) as u16,
                            any: round % 2 == 0,
                        })
                        .collect(),
                }
            }))),
            // In a pod: one port announced, then 10k connections asked for it, which the host's
            // mirror makes to its own mirrored listener, and none of them ever served here.
            "connect-flood" => Box::new(
                [
                    started,
                    Message::Listening {
                        ports: vec![ListenPort {
                            port: POD_PORT,
                            any: false,
                        }],
                    },
                ]
                .into_iter()
                .chain((0..10_000).map(|conn| Message::Connect {
                    conn,
                    port: POD_PORT,
                })),
            ),
            other => Box::new(std::iter::once(Message::Error {
                session: MAIN_SESSION,
                message: format!("unknown attack {other}"),
            })),
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

/// The port the connect flood asks for.
const POD_PORT: u16 = 5000;

fn stdout(len: usize) -> Message {
    Message::Data {
        session: MAIN_SESSION,
        stream: StreamKind::Stdout,
        bytes: vec![b'x'; len],
    }
}

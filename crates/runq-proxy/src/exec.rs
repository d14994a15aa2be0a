//! The exec socket: each connection is one exec session. A client (the relay `runq exec`
//! starts in the container, or `runq-exec` on the host) sends [`Message::Exec`] first, then
//! speaks the control channel's protocol for that one session; the proxy numbers the sessions
//! and routes their frames to and from the guest.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc::Sender;

use runq_shared::protocol::{read_message, Message, MAIN_SESSION};

use crate::event::Event;
use runq_stdio::FrameWriter;

/// The exec socket, bound before the proxy confines itself and served after.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

pub fn spawn_listener(listener: UnixListener, events: Sender<Event>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("exec".into())
        .spawn(move || {
            // Session 0 is the application; exec sessions count from 1.
            let mut next_session = MAIN_SESSION + 1;
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let session = next_session;
                next_session = next_session.wrapping_add(1).max(MAIN_SESSION + 1);
                let events = events.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("exec-{session}"))
                    .spawn(move || serve(session, stream, events));
            }
        })
        .map(drop)
}

fn serve(session: u32, mut stream: std::os::unix::net::UnixStream, events: Sender<Event>) {
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let writer = FrameWriter::new(writer);
    let json = match read_message(&mut stream) {
        Ok(Some(Message::Exec { json, .. })) => json,
        Ok(Some(other)) => {
            let _ = writer.send(&Message::Error {
                session,
                message: format!("an exec client must start with an exec request, not {other:?}"),
            });
            return;
        }
        _ => return,
    };
    if events
        .send(Event::ExecRequest {
            session,
            json,
            client: writer,
        })
        .is_err()
    {
        return;
    }
    loop {
        match read_message(&mut stream) {
            Ok(Some(message)) => {
                if events.send(Event::ExecClient { session, message }).is_err() {
                    return;
                }
            }
            _ => {
                let _ = events.send(Event::ExecClientGone { session });
                return;
            }
        }
    }
}

/// The message with its session number replaced; `None` for what a client may not send.
pub fn for_session(message: Message, session: u32) -> Option<Message> {
    Some(match message {
        Message::Data { stream, bytes, .. } => Message::Data {
            session,
            stream,
            bytes,
        },
        Message::Eof { stream, .. } => Message::Eof { session, stream },
        Message::Credit { stream, bytes, .. } => Message::Credit {
            session,
            stream,
            bytes,
        },
        Message::Signal { signal, .. } => Message::Signal { session, signal },
        Message::Resize { rows, cols, .. } => Message::Resize {
            session,
            rows,
            cols,
        },
        _ => return None,
    })
}

/// The session a message from the guest belongs to, if it is one of a session's.
pub fn session_of(message: &Message) -> Option<u32> {
    match message {
        Message::Started { session }
        | Message::Data { session, .. }
        | Message::Eof { session, .. }
        | Message::Credit { session, .. }
        | Message::Exit { session, .. }
        | Message::Error { session, .. } => Some(*session),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runq_shared::protocol::StreamKind;

    #[test]
    fn client_frames_are_renumbered_and_requests_filtered() {
        let data = Message::Data {
            session: 0,
            stream: StreamKind::Stdin,
            bytes: b"x".to_vec(),
        };
        assert_eq!(
            for_session(data, 7),
            Some(Message::Data {
                session: 7,
                stream: StreamKind::Stdin,
                bytes: b"x".to_vec(),
            })
        );
        assert_eq!(
            for_session(
                Message::Signal {
                    session: 0,
                    signal: 2
                },
                3
            ),
            Some(Message::Signal {
                session: 3,
                signal: 2
            })
        );
        // A client cannot end sessions, start others or speak for the guest.
        assert_eq!(
            for_session(
                Message::Exit {
                    session: 0,
                    code: 0
                },
                3
            ),
            None
        );
        assert_eq!(
            for_session(
                Message::Exec {
                    session: 0,
                    json: vec![]
                },
                3
            ),
            None
        );
        assert_eq!(session_of(&Message::Started { session: 4 }), Some(4));
        assert_eq!(session_of(&Message::Hello { version: 1 }), None);
    }
}

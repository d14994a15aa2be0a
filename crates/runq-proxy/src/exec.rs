//! The exec socket: each connection is one exec session. A client (the relay `runq exec`
//! starts in the container, or `runq-exec` on the host) sends [`Message::Exec`] first, then
//! speaks the control channel's protocol for that one session; the proxy numbers the sessions
//! and routes their frames to and from the guest.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc::{channel, Sender};
use std::thread::JoinHandle;

use runq_shared::protocol::{read_message, Message, MAIN_SESSION};

use crate::event::{Event, Events};
use crate::supervisor::Input;
use runq_session::FrameWriter;

/// The exec socket, bound before the proxy confines itself and served after.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

pub fn spawn_listener(listener: UnixListener, events: Events) -> std::io::Result<()> {
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

/// The proxy's end of an exec client's connection. Frames go out from a thread of the
/// session's own, so that a client that stops reading (a stopped `docker exec`) holds up
/// nothing but its own session. What waits for it is bounded: its output by the window the
/// client granted, the rest by the few frames a session has.
#[derive(Clone)]
pub struct Client(Sender<Message>);

impl Client {
    fn spawn(
        session: u32,
        writer: FrameWriter,
        events: Events,
    ) -> std::io::Result<(Client, JoinHandle<()>)> {
        let (frames, queue) = channel::<Message>();
        let thread = std::thread::Builder::new()
            .name(format!("exec-{session}-out"))
            .spawn(move || {
                for message in queue {
                    if writer.send(&message).is_err() {
                        let gone = Input::ExecClientGone {
                            session,
                            undelivered: Some(message),
                        };
                        let _ = events.send(Event::Input(gone));
                        return;
                    }
                }
            })?;
        Ok((Client(frames), thread))
    }

    /// Queues the frame; hands it back when the client's writer is gone (its connection
    /// broke).
    pub fn send(&self, message: Message) -> Result<(), Message> {
        self.0.send(message).map_err(|unsent| unsent.0)
    }
}

fn serve(session: u32, mut stream: std::os::unix::net::UnixStream, events: Events) {
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
    let Ok((client, writer)) = Client::spawn(session, writer, events.clone()) else {
        return;
    };
    let connected = Event::ExecClientConnected {
        session,
        client,
        writer,
    };
    let mut input = Input::ExecRequest { session, json };
    if events.send(connected).is_err() {
        return;
    }
    loop {
        let gone = matches!(input, Input::ExecClientGone { .. });
        if events.send(Event::Input(input)).is_err() || gone {
            return;
        }
        input = match read_message(&mut stream) {
            Ok(Some(message)) => Input::ExecClient { session, message },
            _ => Input::ExecClientGone {
                session,
                undelivered: None,
            },
        };
    }
}

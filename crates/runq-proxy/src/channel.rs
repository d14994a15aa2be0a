//! The control channel's host end: QEMU connects to our listening socket at start-up; one
//! thread reads frames into the event queue; senders share a [`FrameWriter`].

use std::os::unix::net::UnixListener;
use std::time::Duration;

use runq_session::FrameWriter;
use runq_shared::protocol::{read_message_within, GUEST_FRAME_LIMIT};

use crate::event::{Event, Events};
use crate::supervisor::Input;

/// A guest that reads nothing from its port for this long has stopped reading: the host
/// never sends more than the windows the guest granted, which a working guest drains.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// With `restored`, the guest said its Hello to the template's builder, which checked its
/// version: the reader stands in for it as soon as QEMU connects.
pub fn spawn_reader(listener: UnixListener, events: Events, restored: bool) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("channel".into())
        .spawn(move || {
            let connection = listener.accept().and_then(|(stream, _)| {
                let writer = stream.try_clone()?;
                writer.set_write_timeout(Some(WRITE_TIMEOUT))?;
                Ok((stream.try_clone()?, stream, writer))
            });
            let (socket, mut stream, writer) = match connection {
                Ok(pair) => pair,
                Err(e) => {
                    let _ = events.send(Event::Input(Input::ChannelClosed(Some(e.to_string()))));
                    return;
                }
            };
            drop(listener);
            if events
                .send(Event::Connected {
                    writer: FrameWriter::new(writer),
                    socket,
                })
                .is_err()
            {
                return;
            }
            let hello = Input::Guest(runq_shared::protocol::Message::Hello {
                version: runq_shared::protocol::PROTOCOL_VERSION,
            });
            if restored && events.send(Event::Input(hello)).is_err() {
                return;
            }
            loop {
                let input = match read_message_within(&mut stream, GUEST_FRAME_LIMIT) {
                    Ok(Some(mut message)) => {
                        runq_mirror::trim(&mut message);
                        Input::Guest(message)
                    }
                    Ok(None) => Input::ChannelClosed(None),
                    Err(e) => Input::ChannelClosed(Some(e.to_string())),
                };
                let closed = matches!(input, Input::ChannelClosed(_));
                if events.send(Event::Input(input)).is_err() || closed {
                    return;
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use runq_shared::protocol::Message;

    use super::*;

    /// What the channel thread reports for what a broken or hostile guest writes.
    fn events_for(garbage: &[u8]) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!(
            "runq-channel-test-{}-{}",
            std::process::id(),
            garbage.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (events, queue) = crate::event::queue();
        spawn_reader(listener, events, false).unwrap();
        let mut guest = UnixStream::connect(&path).unwrap();
        Message::Hello { version: 1 }.write_to(&mut guest).unwrap();
        guest.write_all(garbage).unwrap();
        drop(guest);
        let mut seen = Vec::new();
        while let Ok(event) = queue.recv_timeout(Duration::from_secs(10)) {
            let (text, end) = match event {
                Event::Connected { .. } => ("connected".to_string(), false),
                Event::Input(Input::Guest(message)) => (format!("{message:?}"), false),
                Event::Input(Input::ChannelClosed(error)) => (format!("closed: {error:?}"), true),
                _ => ("other".to_string(), false),
            };
            seen.push(text);
            if end {
                break;
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
        seen
    }

    #[test]
    fn garbage_from_the_guest_closes_the_channel_with_the_reason() {
        let cases: [(&[u8], &str); 4] = [
            // An unknown tag.
            (&[0, 0, 0, 1, 99], "unknown message tag 99"),
            // A length far beyond the limit.
            (&[0xff, 0xff, 0xff, 0xff, 1], "exceeds the limit"),
            // An exit frame without its code.
            (&[0, 0, 0, 5, 9, 0, 0, 0, 0], "tag 9"),
            // Half a frame, then the end.
            (&[0, 0, 0, 9, 4, 0], "closed"),
        ];
        for (garbage, reason) in cases {
            let seen = events_for(garbage);
            assert_eq!(seen.first().map(String::as_str), Some("connected"));
            assert!(seen[1].starts_with("Hello"), "{seen:?}");
            let last = seen.last().unwrap();
            assert!(
                last.starts_with("closed") && last.contains(reason),
                "{seen:?}"
            );
        }
    }
}

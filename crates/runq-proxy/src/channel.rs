//! The control channel's host end: QEMU connects to our listening socket at start-up; one
//! thread reads frames into the event queue; senders share a [`FrameWriter`].

use std::os::unix::net::UnixListener;
use std::sync::mpsc::Sender;

use runq_shared::protocol::read_message;
use runq_stdio::FrameWriter;

use crate::Event;

pub fn spawn_reader(listener: UnixListener, events: Sender<Event>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("channel".into())
        .spawn(move || {
            let connection = listener.accept().and_then(|(stream, _)| {
                let writer = stream.try_clone()?;
                Ok((stream, writer))
            });
            let (mut stream, writer) = match connection {
                Ok(pair) => pair,
                Err(e) => {
                    let _ = events.send(Event::ChannelClosed(Some(e.to_string())));
                    return;
                }
            };
            drop(listener);
            if events
                .send(Event::Connected(FrameWriter::new(writer)))
                .is_err()
            {
                return;
            }
            loop {
                let event = match read_message(&mut stream) {
                    Ok(Some(message)) => Event::Guest(message),
                    Ok(None) => Event::ChannelClosed(None),
                    Err(e) => Event::ChannelClosed(Some(e.to_string())),
                };
                let closed = matches!(event, Event::ChannelClosed(_));
                if events.send(event).is_err() || closed {
                    return;
                }
            }
        })
        .map(drop)
}

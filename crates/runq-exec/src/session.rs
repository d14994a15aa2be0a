//! One exec session from the client's side: connect to the proxy's exec socket, ask for the
//! process, then carry this process's stdio, signals and terminal size until the exit code
//! comes back.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;

use anyhow::{Context, Result};
use runq_session::signals::{self, Received};
use runq_session::{terminal, Endpoints, FrameWriter, HostSession};
use runq_shared::config::ProcessConfig;
use runq_shared::protocol::{read_message, Message, EXIT_KILLED_WITH_CONTAINER};

/// The exit code when the session could not be started, as a shell reports a command it
/// cannot run.
pub const CANNOT_START: i32 = 126;

enum Event {
    Frame(Message),
    Closed,
    Signal(Received),
}

/// Runs the session; returns the process's exit code.
pub fn run(socket: &Path, mut process: ProcessConfig) -> Result<i32> {
    if process.terminal {
        process.terminal_onlcr = terminal::terminal_onlcr();
        terminal::make_raw();
    }
    signals::block_all().context("block signals")?;
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connect to the container's exec socket {}",
            socket.display()
        )
    })?;
    let writer = FrameWriter::new(stream.try_clone().context("clone the exec socket")?);
    let json = serde_json::to_vec(&process).context("encode the process")?;
    writer
        .send(&Message::Exec { session: 0, json })
        .context("send the exec request")?;

    let (events, queue) = mpsc::channel();
    let frames = events.clone();
    std::thread::Builder::new()
        .name("frames".into())
        .spawn(move || loop {
            let event = match read_message(&mut stream) {
                Ok(Some(message)) => Event::Frame(message),
                _ => Event::Closed,
            };
            let closed = matches!(event, Event::Closed);
            if frames.send(event).is_err() || closed {
                return;
            }
        })
        .context("start the frame reader")?;
    // Children and their ends are the client's own business.
    signals::spawn_signal_thread(move |received| {
        received == Received::ChildEnded || events.send(Event::Signal(received)).is_ok()
    })
    .context("start the signal thread")?;

    let mut session = HostSession::new(Endpoints::of_this_process(), process.terminal);
    let code = loop {
        let Ok(event) = queue.recv() else {
            break EXIT_KILLED_WITH_CONTAINER;
        };
        match event {
            Event::Frame(message) => match session.take_stdio(message)? {
                Some(Message::Started { session: number }) => {
                    session.start(number, writer.clone())?
                }
                Some(Message::Exit { code, .. }) => break code,
                Some(Message::Error { message, .. }) => {
                    eprintln!("runq-exec: {message}");
                    break CANNOT_START;
                }
                _ => {}
            },
            // The container ended under the session: it was killed with it.
            Event::Closed => break EXIT_KILLED_WITH_CONTAINER,
            Event::Signal(Received::WindowChanged) => session.window_changed(),
            Event::Signal(Received::ForProcess(signal)) => session.signal(signal),
            Event::Signal(Received::ChildEnded) => {}
        }
    };
    session.finish();
    Ok(code)
}

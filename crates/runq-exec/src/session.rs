//! One exec session from the client's side: connect to the proxy's exec socket, ask for the
//! process, then carry this process's stdio, signals and terminal size until the exit code
//! comes back.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;

use anyhow::{Context, Result};
use nix::sys::signal::SigSet;
use runq_shared::config::ProcessConfig;
use runq_shared::protocol::{read_message, Message, StreamKind, STREAM_WINDOW};
use runq_stdio::{Credit, FrameWriter, Output};

/// The exit code when the session could not be started, as a shell reports a command it
/// cannot run.
pub const CANNOT_START: i32 = 126;
/// The exit code when the container ended under the session: it was killed with it.
const CONTAINER_ENDED: i32 = runq_shared::protocol::EXIT_KILLED_WITH_CONTAINER;

enum Event {
    Frame(Message),
    Closed,
    Signal(i32),
    WindowChanged,
}

/// Runs the session; returns the process's exit code.
pub fn run(socket: &Path, mut process: ProcessConfig) -> Result<i32> {
    if process.terminal {
        process.terminal_onlcr = runq_stdio::terminal_onlcr();
        runq_stdio::make_raw();
    }
    // Only the signal thread takes signals; every other thread inherits this mask.
    SigSet::all().thread_block().context("block signals")?;
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
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || forward_signals(events))
        .context("start the signal thread")?;

    let mut client = Client {
        writer,
        terminal: process.terminal,
        session: 0,
        stdin_credit: Credit::new(STREAM_WINDOW),
        stdout: None,
        stderr: None,
        pending_signals: Vec::new(),
    };
    for event in queue {
        if let Some(code) = client.handle(event)? {
            client.finish_output();
            return Ok(code);
        }
    }
    Ok(CONTAINER_ENDED)
}

struct Client {
    writer: FrameWriter,
    terminal: bool,
    /// The proxy's number for the session, known once it started.
    session: u32,
    stdin_credit: Credit,
    stdout: Option<Output>,
    stderr: Option<Output>,
    /// Signals that came before the process existed.
    pending_signals: Vec<i32>,
}

impl Client {
    fn handle(&mut self, event: Event) -> Result<Option<i32>> {
        match event {
            Event::Frame(Message::Started { session }) => self.started(session)?,
            Event::Frame(Message::Data { stream, bytes, .. }) => {
                let output = match stream {
                    StreamKind::Stdout => self.stdout.as_ref(),
                    StreamKind::Stderr => self.stderr.as_ref(),
                    StreamKind::Stdin => None,
                };
                if let Some(output) = output {
                    output.push(bytes);
                }
            }
            Event::Frame(Message::Eof { stream, .. }) => match stream {
                StreamKind::Stdout => finish(&mut self.stdout),
                StreamKind::Stderr => finish(&mut self.stderr),
                StreamKind::Stdin => {}
            },
            Event::Frame(Message::Credit {
                stream: StreamKind::Stdin,
                bytes,
                ..
            }) => self.stdin_credit.add(bytes),
            Event::Frame(Message::Exit { code, .. }) => return Ok(Some(code)),
            Event::Frame(Message::Error { message, .. }) => {
                eprintln!("runq-exec: {message}");
                return Ok(Some(CANNOT_START));
            }
            Event::Frame(_) => {}
            Event::Closed => return Ok(Some(CONTAINER_ENDED)),
            Event::Signal(signal) => {
                if self.stdout.is_some() {
                    self.send(&Message::Signal {
                        session: self.session,
                        signal,
                    });
                } else {
                    self.pending_signals.push(signal);
                }
            }
            Event::WindowChanged => self.send_window_size(),
        }
        Ok(None)
    }

    fn started(&mut self, session: u32) -> Result<()> {
        self.session = session;
        self.stdout = Some(Output::spawn(
            session,
            StreamKind::Stdout,
            self.writer.clone(),
        )?);
        self.stderr = Some(Output::spawn(
            session,
            StreamKind::Stderr,
            self.writer.clone(),
        )?);
        runq_stdio::spawn_stdin_pump(session, self.writer.clone(), self.stdin_credit.clone())?;
        self.send_window_size();
        for signal in std::mem::take(&mut self.pending_signals) {
            self.send(&Message::Signal { session, signal });
        }
        Ok(())
    }

    fn send_window_size(&self) {
        if let (true, Some((rows, cols))) = (self.terminal, runq_stdio::window_size()) {
            self.send(&Message::Resize {
                session: self.session,
                rows,
                cols,
            });
        }
    }

    /// A lost connection shows as Closed on the reader's side; nothing to do here.
    fn send(&self, message: &Message) {
        let _ = self.writer.send(message);
    }

    fn finish_output(&mut self) {
        finish(&mut self.stdout);
        finish(&mut self.stderr);
    }
}

fn finish(output: &mut Option<Output>) {
    if let Some(mut output) = output.take() {
        output.finish();
    }
}

/// Every signal this process gets belongs to the session's process, except the terminal
/// resizing (sent as a size) and children and pipes, which are the client's own business.
fn forward_signals(events: mpsc::Sender<Event>) {
    let set = SigSet::all();
    loop {
        let Some(signal) = runq_stdio::wait_for_signal(&set) else {
            continue;
        };
        let event = match signal {
            libc::SIGCHLD | libc::SIGPIPE => continue,
            libc::SIGWINCH => Event::WindowChanged,
            other => Event::Signal(other),
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

//! One session's host end: the same type serves the application (in runq-proxy, toward the
//! guest) and every exec session (in runq-exec, toward the proxy).

use std::io::Write;

use runq_shared::protocol::{Message, StreamKind, STREAM_WINDOW};

use crate::stdio::{self, Credit, Link, OnStall, Output, Overrun, Sink, Source};
use crate::{terminal, FrameWriter};

/// Where the session's stdio is on this side.
pub struct Endpoints {
    pub stdin: Source,
    pub stdout: Sink,
    pub stderr: Sink,
}

impl Endpoints {
    /// This process's descriptors 0, 1 and 2.
    pub fn of_this_process() -> Endpoints {
        Endpoints {
            stdin: Box::new(std::io::stdin()),
            stdout: Box::new(std::io::stdout()),
            stderr: Box::new(std::io::stderr()),
        }
    }
}

/// An output stream: its sink is written directly until the process runs and after the
/// stream ended, and by the stream's thread in between.
enum OutputStream {
    Idle(Sink),
    Running(Output),
    Gone,
}

impl OutputStream {
    fn finish(&mut self) {
        if let OutputStream::Running(output) = std::mem::replace(self, OutputStream::Gone) {
            if let Some(sink) = output.finish() {
                *self = OutputStream::Idle(sink);
            }
        }
    }
}

pub struct HostSession {
    /// The session's number and the connection for its frames, once its process runs.
    running: Option<(u32, Link)>,
    on_stall: Option<OnStall>,
    terminal: bool,
    stdin: Option<Source>,
    stdin_credit: Credit,
    stdout: OutputStream,
    stderr: OutputStream,
    /// Signals that came before the process existed.
    pending_signals: Vec<i32>,
}

impl HostSession {
    /// With `terminal` the terminal's size is sent.
    pub fn new(endpoints: Endpoints, terminal: bool) -> HostSession {
        HostSession {
            running: None,
            on_stall: None,
            terminal,
            stdin: Some(endpoints.stdin),
            stdin_credit: Credit::new(STREAM_WINDOW),
            stdout: OutputStream::Idle(endpoints.stdout),
            stderr: OutputStream::Idle(endpoints.stderr),
            pending_signals: Vec::new(),
        }
    }

    /// Who hears when a write to the peer timed out, from whichever of the session's threads.
    pub fn on_stall(mut self, on_stall: OnStall) -> HostSession {
        self.on_stall = Some(on_stall);
        self
    }

    /// The session's process runs as `number`, its frames go to `writer`: carry its stdio,
    /// send the terminal's size and the signals held back. A second start changes nothing.
    pub fn start(&mut self, number: u32, writer: FrameWriter) -> std::io::Result<()> {
        if self.running.is_some() {
            return Ok(());
        }
        let link = Link {
            writer,
            on_stall: self.on_stall.clone(),
        };
        self.running = Some((number, link.clone()));
        for (stream, kind) in [
            (&mut self.stdout, StreamKind::Stdout),
            (&mut self.stderr, StreamKind::Stderr),
        ] {
            if let OutputStream::Idle(sink) = std::mem::replace(stream, OutputStream::Gone) {
                *stream = OutputStream::Running(Output::spawn(number, kind, sink, link.clone())?);
            }
        }
        self.window_changed();
        for signal in std::mem::take(&mut self.pending_signals) {
            self.send(&Message::Signal {
                session: number,
                signal,
            });
        }
        if let Some(stdin) = self.stdin.take() {
            stdio::spawn_stdin_pump(number, stdin, link, self.stdin_credit.clone())?;
        }
        Ok(())
    }

    /// Takes the frames of the session's stdio (output, end of output, stdin credit) and
    /// hands back any other; refuses output beyond the window the peer was granted.
    pub fn take_stdio(&mut self, message: Message) -> Result<Option<Message>, Overrun> {
        let credit = message.credit_for();
        match message {
            Message::Data { stream, bytes, .. } if stream != StreamKind::Stdin => {
                let output = match stream {
                    StreamKind::Stdout => &mut self.stdout,
                    _ => &mut self.stderr,
                };
                match output {
                    OutputStream::Running(output) => output.push(bytes)?,
                    // What the guest init says after the application's stderr ended (why it
                    // ended, say) still belongs on the session's stderr.
                    OutputStream::Idle(sink) => {
                        let _ = sink.write_all(&bytes).and_then(|()| sink.flush());
                        credit.iter().for_each(|credit| self.send(credit));
                    }
                    OutputStream::Gone => credit.iter().for_each(|credit| self.send(credit)),
                }
            }
            Message::Eof { stream, .. } => match stream {
                StreamKind::Stdout => self.stdout.finish(),
                StreamKind::Stderr => self.stderr.finish(),
                StreamKind::Stdin => {}
            },
            Message::Credit {
                stream: StreamKind::Stdin,
                bytes,
                ..
            } => self.stdin_credit.add(bytes),
            other => return Ok(Some(other)),
        }
        Ok(None)
    }

    /// A signal for the session's process; held until the process runs.
    pub fn signal(&mut self, signal: i32) {
        match self.running {
            Some((session, _)) => self.send(&Message::Signal { session, signal }),
            None => self.pending_signals.push(signal),
        }
    }

    /// Sends this process's terminal size, if the session has a terminal and runs.
    pub fn window_changed(&self) {
        if let (true, Some((session, _)), Some((rows, cols))) =
            (self.terminal, &self.running, terminal::window_size())
        {
            self.send(&Message::Resize {
                session: *session,
                rows,
                cols,
            });
        }
    }

    /// Writes out the output received so far.
    pub fn finish(&mut self) {
        self.stdout.finish();
        self.stderr.finish();
    }

    /// A lost connection shows on its reading side, a peer that stopped reading through
    /// [`HostSession::on_stall`]. Before the process runs there is nowhere to send to.
    fn send(&self, message: &Message) {
        if let Some((_, link)) = &self.running {
            let _ = link.send(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use runq_shared::protocol::read_message;

    use super::*;

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    struct Peer(UnixStream);

    impl Peer {
        fn next(&mut self) -> Message {
            read_message(&mut self.0).unwrap().unwrap()
        }

        /// The next message other than the end of an empty stdin, which comes at any time.
        fn next_but_stdin_end(&mut self) -> Message {
            loop {
                match self.next() {
                    Message::Eof {
                        stream: StreamKind::Stdin,
                        ..
                    } => {}
                    other => return other,
                }
            }
        }
    }

    fn session(stdin: &[u8]) -> (HostSession, FrameWriter, Peer, Shared, Shared) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        theirs
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (stdout, stderr) = (Shared::default(), Shared::default());
        let endpoints = Endpoints {
            stdin: Box::new(std::io::Cursor::new(stdin.to_vec())),
            stdout: Box::new(stdout.clone()),
            stderr: Box::new(stderr.clone()),
        };
        let session = HostSession::new(endpoints, false);
        (
            session,
            FrameWriter::new(ours),
            Peer(theirs),
            stdout,
            stderr,
        )
    }

    #[test]
    fn signals_wait_for_the_process_and_stdin_flows_once_it_runs() {
        let (mut session, writer, mut peer, _, _) = session(b"typed");
        session.signal(libc::SIGTERM);
        session.start(7, writer.clone()).unwrap();
        assert_eq!(
            peer.next(),
            Message::Signal {
                session: 7,
                signal: libc::SIGTERM
            }
        );
        let mut stdin = Vec::new();
        loop {
            match peer.next() {
                Message::Data { session, bytes, .. } => {
                    assert_eq!(session, 7);
                    stdin.extend(bytes);
                }
                Message::Eof { session: 7, stream } => {
                    assert_eq!(stream, StreamKind::Stdin);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(stdin, b"typed");
        session.signal(libc::SIGINT);
        assert_eq!(
            peer.next(),
            Message::Signal {
                session: 7,
                signal: libc::SIGINT
            }
        );
        // A second start (a guest repeating itself) starts nothing more.
        session.start(8, writer).unwrap();
        session.signal(libc::SIGHUP);
        assert_eq!(
            peer.next(),
            Message::Signal {
                session: 7,
                signal: libc::SIGHUP
            }
        );
    }

    #[test]
    fn output_is_written_and_credited_and_late_stderr_still_shows() {
        let (mut session, writer, mut peer, stdout, stderr) = session(b"");
        session.start(3, writer).unwrap();
        let data = |stream, text: &str| Message::Data {
            session: 3,
            stream,
            bytes: text.as_bytes().to_vec(),
        };
        assert_eq!(
            session.take_stdio(data(StreamKind::Stdout, "out")),
            Ok(None)
        );
        assert_eq!(
            session.take_stdio(data(StreamKind::Stderr, "err")),
            Ok(None)
        );
        let exit = Message::Exit {
            session: 3,
            code: 0,
        };
        assert_eq!(session.take_stdio(exit.clone()), Ok(Some(exit)));
        let mut credited = Vec::new();
        while credited.len() < 2 {
            match peer.next_but_stdin_end() {
                Message::Credit { stream, bytes, .. } => credited.push((stream, bytes)),
                other => panic!("unexpected {other:?}"),
            }
        }
        credited.sort_by_key(|(stream, _)| *stream as u8);
        assert_eq!(credited, [(StreamKind::Stdout, 3), (StreamKind::Stderr, 3)]);
        let eof = Message::Eof {
            session: 3,
            stream: StreamKind::Stderr,
        };
        assert_eq!(session.take_stdio(eof), Ok(None));
        assert_eq!(
            session.take_stdio(data(StreamKind::Stderr, ", late")),
            Ok(None)
        );
        assert!(matches!(
            peer.next_but_stdin_end(),
            Message::Credit {
                stream: StreamKind::Stderr,
                bytes: 6,
                ..
            }
        ));
        session.finish();
        assert_eq!(stdout.text(), "out");
        assert_eq!(stderr.text(), "err, late");
        let mut rest = Vec::new();
        peer.0.set_nonblocking(true).unwrap();
        let _ = peer.0.read_to_end(&mut rest);
        let stdin_end = Message::Eof {
            session: 3,
            stream: StreamKind::Stdin,
        }
        .encode();
        assert!(
            rest.is_empty() || rest == stdin_end,
            "nothing more was sent: {rest:?}"
        );
    }

    /// A sink whose first write waits until the test lets it go.
    struct Stalled(std::sync::mpsc::Receiver<()>);

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_beyond_the_window_is_refused() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let (release, stalled) = std::sync::mpsc::channel();
        let endpoints = Endpoints {
            stdin: Box::new(std::io::empty()),
            stdout: Box::new(Stalled(stalled)),
            stderr: Box::new(Shared::default()),
        };
        let mut session = HostSession::new(endpoints, false);
        session.start(1, FrameWriter::new(ours)).unwrap();
        let chunk = |len| Message::Data {
            session: 1,
            stream: StreamKind::Stdout,
            bytes: vec![b'x'; len],
        };
        assert_eq!(session.take_stdio(chunk(STREAM_WINDOW as usize)), Ok(None));
        assert_eq!(
            session.take_stdio(chunk(1)),
            Err(Overrun(StreamKind::Stdout))
        );
        drop(release);
        session.finish();
    }

    #[test]
    fn output_in_one_byte_frames_is_written_whole_and_credited_in_full() {
        let (mut session, writer, mut peer, stdout, _) = session(b"");
        session.start(3, writer).unwrap();
        let text: Vec<u8> = (0..5000u32).map(|n| b'a' + (n % 26) as u8).collect();
        for byte in &text {
            let frame = Message::Data {
                session: 3,
                stream: StreamKind::Stdout,
                bytes: vec![*byte],
            };
            assert_eq!(session.take_stdio(frame), Ok(None));
            // Empty frames spend nothing and are no output.
            let empty = Message::Data {
                session: 3,
                stream: StreamKind::Stdout,
                bytes: Vec::new(),
            };
            assert_eq!(session.take_stdio(empty), Ok(None));
        }
        let mut credited = 0;
        while credited < text.len() {
            match peer.next_but_stdin_end() {
                Message::Credit {
                    session: 3,
                    stream: StreamKind::Stdout,
                    bytes,
                } => credited += bytes as usize,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(credited, text.len());
        session.finish();
        assert_eq!(stdout.0.lock().unwrap().as_slice(), text.as_slice());
    }

    #[test]
    fn a_peer_that_stops_reading_is_reported() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        ours.set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let writer = FrameWriter::new(ours);
        // Fill the socket: nobody reads the other end.
        let filler = Message::Data {
            session: 9,
            stream: StreamKind::Stdout,
            bytes: vec![0; 64 << 10],
        };
        while writer.send(&filler).is_ok() {}
        let (session, _, _, _, _) = session(b"");
        let (told, stalled) = std::sync::mpsc::channel();
        let told = Mutex::new(told);
        let mut session = session.on_stall(Arc::new(move || {
            let _ = told.lock().unwrap().send(());
        }));
        session.start(1, writer).unwrap();
        session.signal(libc::SIGTERM);
        stalled
            .recv_timeout(Duration::from_secs(10))
            .expect("the stall is reported");
    }
}

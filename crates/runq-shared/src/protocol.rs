//! The control channel between runq-proxy (host) and runq-init (guest).
//!
//! A byte stream (a virtio-serial port) carries frames:
//!
//! ```text
//! u32 big-endian length of what follows | u8 tag | body
//! ```
//!
//! Stdio travels as [`Message::Data`] chunks of one stream of one session (session 0 is the
//! main process). A sender may have at most [`STREAM_WINDOW`] bytes of a stream unacknowledged;
//! the receiver returns [`Message::Credit`] as it consumes them, so a fast writer can neither
//! exhaust memory nor stall the other streams.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use thiserror::Error;

/// Bumped on any incompatible change; the guest announces it in [`Message::Hello`].
pub const PROTOCOL_VERSION: u16 = 1;

/// Session id of the container's main process.
pub const MAIN_SESSION: u32 = 0;

/// An exec session's exit code when the container ends under it: killed, as the end of the
/// PID namespace kills it under runc.
pub const EXIT_KILLED_WITH_CONTAINER: i32 = 128 + libc::SIGKILL;

/// A process's exit status for an exit code: a code outside 0..=255 (none should be) is 255,
/// as a shell would not show it either. One rule for runq, the proxy and runq-exec.
pub fn exit_status(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(255)
}

/// Largest frame accepted (the config with a big environment is the largest message).
pub const MAX_FRAME_LEN: usize = 16 << 20;

/// Largest frame the host accepts from the guest: a full window of data, or the listening
/// ports of a whole port range, fit. It bounds what every queued guest frame can hold.
pub const GUEST_FRAME_LIMIT: usize = STREAM_WINDOW as usize + 64;

/// Largest data chunk a sender puts in one frame.
pub const DATA_CHUNK: usize = 32 << 10;

/// Bytes of one stream a sender may have in flight before it waits for credit.
pub const STREAM_WINDOW: u32 = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
}

impl StreamKind {
    fn from_byte(byte: u8) -> Result<Self, ProtocolError> {
        match byte {
            0 => Ok(StreamKind::Stdin),
            1 => Ok(StreamKind::Stdout),
            2 => Ok(StreamKind::Stderr),
            other => Err(ProtocolError::BadStream(other)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Guest to host, first message: the guest init is up and speaks `version`.
    Hello { version: u16 },
    /// Host to guest: the [`crate::config::GuestConfig`] as JSON.
    Config { json: Vec<u8> },
    /// Guest to host: the session's process was started.
    Started { session: u32 },
    Data {
        session: u32,
        stream: StreamKind,
        bytes: Vec<u8>,
    },
    /// No more data on this stream.
    Eof { session: u32, stream: StreamKind },
    /// The receiver consumed `bytes` of the stream; the sender may send that much more.
    Credit {
        session: u32,
        stream: StreamKind,
        bytes: u32,
    },
    /// Host to guest: deliver signal number `signal` to the session's process.
    Signal { session: u32, signal: i32 },
    /// Host to guest: the session's terminal has a new size.
    Resize { session: u32, rows: u16, cols: u16 },
    /// Guest to host: the session's process ended; `code` is its exit code or 128+signal.
    Exit { session: u32, code: i32 },
    /// Guest to host: the session could not be set up; the guest gives up on it.
    Error { session: u32, message: String },
    /// Guest to host: a DNS query the application sent to Docker's embedded server
    /// (127.0.0.11), which only answers inside the container's network namespace.
    DnsQuery { id: u32, packet: Vec<u8> },
    /// Host to guest: the answer to the query with this id.
    DnsAnswer { id: u32, packet: Vec<u8> },
    /// Start an exec session: a [`crate::config::ProcessConfig`] as JSON, to run inside the
    /// application's namespaces. From an exec client to the proxy the session is ignored; the
    /// proxy numbers sessions and forwards the request to the guest.
    Exec { session: u32, json: Vec<u8> },
    /// Guest to host: boot timeline marks, a [`crate::timeline::GuestMarks`] as JSON.
    Timeline { json: Vec<u8> },
    /// Either way, when the network namespace is shared (a Kubernetes pod): the TCP ports
    /// listening on this side's loopback or wildcard address, which the other side mirrors.
    /// The whole set each time; an empty set withdraws them all.
    Listening { ports: Vec<ListenPort> },
    /// Either way: a client connected to a mirrored port; connect to `port` on this side's
    /// loopback and carry the connection as `conn`. The sender chose the number.
    Connect { conn: u32, port: u16 },
    /// Either way: bytes of a mirrored connection, within the receiver's credit.
    ConnData { conn: u32, bytes: Vec<u8> },
    /// Either way: the sender's end read end-of-file; shut down writing on this side.
    ConnEof { conn: u32 },
    /// Either way: the receiver wrote out `bytes` of the connection; send that much more.
    ConnCredit { conn: u32, bytes: u32 },
    /// Either way: the connection failed or was reset; drop it.
    ConnClose { conn: u32 },
}

/// A listening TCP port; `any` when it listens on the wildcard address, not only loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenPort {
    pub port: u16,
    pub any: bool,
}

#[derive(Debug, Error)]
pub enum ProtocolError {
    #[error("control channel: frame of {len} bytes exceeds the limit of {limit}")]
    FrameTooLarge { len: usize, limit: usize },
    #[error("control channel: unknown message tag {0}")]
    UnknownTag(u8),
    #[error("control channel: unknown stream {0}")]
    BadStream(u8),
    #[error("control channel: message with tag {tag} is {len} bytes, expected {expected}")]
    BadLength {
        tag: u8,
        len: usize,
        expected: &'static str,
    },
    #[error("control channel: error text is not UTF-8")]
    BadText,
    #[error("control channel: connection closed in the middle of a frame")]
    Truncated,
    #[error("control channel: {0}")]
    Io(#[from] io::Error),
}

const TAG_HELLO: u8 = 1;
const TAG_CONFIG: u8 = 2;
const TAG_STARTED: u8 = 3;
const TAG_DATA: u8 = 4;
const TAG_EOF: u8 = 5;
const TAG_CREDIT: u8 = 6;
const TAG_SIGNAL: u8 = 7;
const TAG_RESIZE: u8 = 8;
const TAG_EXIT: u8 = 9;
const TAG_ERROR: u8 = 10;
const TAG_DNS_QUERY: u8 = 11;
const TAG_DNS_ANSWER: u8 = 12;
const TAG_EXEC: u8 = 13;
const TAG_TIMELINE: u8 = 14;
const TAG_LISTENING: u8 = 15;
const TAG_CONNECT: u8 = 16;
const TAG_CONN_DATA: u8 = 17;
const TAG_CONN_EOF: u8 = 18;
const TAG_CONN_CREDIT: u8 = 19;
const TAG_CONN_CLOSE: u8 = 20;

impl Message {
    /// The frame for this message, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Hello { version } => frame(TAG_HELLO, &[version]),
            Message::Config { json } => frame(TAG_CONFIG, &[json]),
            Message::Started { session } => frame(TAG_STARTED, &[session]),
            Message::Data {
                session,
                stream,
                bytes,
            } => frame(TAG_DATA, &[session, stream, bytes]),
            Message::Eof { session, stream } => frame(TAG_EOF, &[session, stream]),
            Message::Credit {
                session,
                stream,
                bytes,
            } => frame(TAG_CREDIT, &[session, stream, bytes]),
            Message::Signal { session, signal } => frame(TAG_SIGNAL, &[session, signal]),
            Message::Resize {
                session,
                rows,
                cols,
            } => frame(TAG_RESIZE, &[session, rows, cols]),
            Message::Exit { session, code } => frame(TAG_EXIT, &[session, code]),
            Message::Error { session, message } => frame(TAG_ERROR, &[session, message]),
            Message::DnsQuery { id, packet } => frame(TAG_DNS_QUERY, &[id, packet]),
            Message::DnsAnswer { id, packet } => frame(TAG_DNS_ANSWER, &[id, packet]),
            Message::Exec { session, json } => frame(TAG_EXEC, &[session, json]),
            Message::Timeline { json } => frame(TAG_TIMELINE, &[json]),
            Message::Listening { ports } => {
                let entries: Vec<u8> = ports
                    .iter()
                    .flat_map(|listen| {
                        let [high, low] = listen.port.to_be_bytes();
                        [high, low, u8::from(listen.any)]
                    })
                    .collect();
                frame(TAG_LISTENING, &[&entries])
            }
            Message::Connect { conn, port } => frame(TAG_CONNECT, &[conn, port]),
            Message::ConnData { conn, bytes } => frame(TAG_CONN_DATA, &[conn, bytes]),
            Message::ConnEof { conn } => frame(TAG_CONN_EOF, &[conn]),
            Message::ConnCredit { conn, bytes } => frame(TAG_CONN_CREDIT, &[conn, bytes]),
            Message::ConnClose { conn } => frame(TAG_CONN_CLOSE, &[conn]),
        }
    }

    /// Decodes one frame body (tag and what follows, without the length prefix).
    pub fn decode(frame: &[u8]) -> Result<Message, ProtocolError> {
        let (&tag, body) = frame.split_first().ok_or(ProtocolError::BadLength {
            tag: 0,
            len: 0,
            expected: "at least a tag",
        })?;
        let mut f = Fields {
            tag,
            body,
            expected: expected_len(tag),
        };
        let message = match tag {
            TAG_HELLO => Message::Hello { version: f.u16()? },
            TAG_CONFIG => Message::Config { json: f.rest() },
            TAG_STARTED => Message::Started { session: f.u32()? },
            TAG_DATA => Message::Data {
                session: f.u32()?,
                stream: f.stream()?,
                bytes: f.rest(),
            },
            TAG_EOF => Message::Eof {
                session: f.u32()?,
                stream: f.stream()?,
            },
            TAG_CREDIT => Message::Credit {
                session: f.u32()?,
                stream: f.stream()?,
                bytes: f.u32()?,
            },
            TAG_SIGNAL => Message::Signal {
                session: f.u32()?,
                signal: f.i32()?,
            },
            TAG_RESIZE => Message::Resize {
                session: f.u32()?,
                rows: f.u16()?,
                cols: f.u16()?,
            },
            TAG_EXIT => Message::Exit {
                session: f.u32()?,
                code: f.i32()?,
            },
            TAG_ERROR => Message::Error {
                session: f.u32()?,
                message: String::from_utf8(f.rest()).map_err(|_| ProtocolError::BadText)?,
            },
            TAG_DNS_QUERY => Message::DnsQuery {
                id: f.u32()?,
                packet: f.rest(),
            },
            TAG_DNS_ANSWER => Message::DnsAnswer {
                id: f.u32()?,
                packet: f.rest(),
            },
            TAG_EXEC => Message::Exec {
                session: f.u32()?,
                json: f.rest(),
            },
            TAG_TIMELINE => Message::Timeline { json: f.rest() },
            TAG_LISTENING => {
                if body.len() % 3 != 0 {
                    return Err(f.bad_length());
                }
                let ports = f
                    .rest()
                    .chunks_exact(3)
                    .map(|entry| ListenPort {
                        port: u16::from_be_bytes([entry[0], entry[1]]),
                        any: entry[2] != 0,
                    })
                    .collect();
                Message::Listening { ports }
            }
            TAG_CONNECT => Message::Connect {
                conn: f.u32()?,
                port: f.u16()?,
            },
            TAG_CONN_DATA => Message::ConnData {
                conn: f.u32()?,
                bytes: f.rest(),
            },
            TAG_CONN_EOF => Message::ConnEof { conn: f.u32()? },
            TAG_CONN_CREDIT => Message::ConnCredit {
                conn: f.u32()?,
                bytes: f.u32()?,
            },
            TAG_CONN_CLOSE => Message::ConnClose { conn: f.u32()? },
            other => return Err(ProtocolError::UnknownTag(other)),
        };
        if !f.body.is_empty() {
            return Err(f.bad_length());
        }
        Ok(message)
    }

    /// Writes the frame in one call so that frames from several threads never interleave
    /// when the writer is shared behind a lock.
    pub fn write_to(&self, writer: &mut impl Write) -> io::Result<()> {
        writer.write_all(&self.encode())
    }

    /// The session a message belongs to, for the messages of a session.
    pub fn session(&self) -> Option<u32> {
        match self {
            Message::Started { session }
            | Message::Data { session, .. }
            | Message::Eof { session, .. }
            | Message::Credit { session, .. }
            | Message::Signal { session, .. }
            | Message::Resize { session, .. }
            | Message::Exit { session, .. }
            | Message::Error { session, .. }
            | Message::Exec { session, .. } => Some(*session),
            _ => None,
        }
    }

    /// For a chunk of data that nobody will consume, the credit that returns it to its
    /// sender's window.
    pub fn credit_for(&self) -> Option<Message> {
        match self {
            Message::Data {
                session,
                stream,
                bytes,
            } => Some(Message::Credit {
                session: *session,
                stream: *stream,
                bytes: bytes.len() as u32,
            }),
            _ => None,
        }
    }

    /// Whether the guest says no more of this message's session after it.
    pub fn ends_session(&self) -> bool {
        matches!(self, Message::Exit { .. } | Message::Error { .. })
    }
}

/// The sending end of a framed connection, shared by threads: every sender writes whole
/// frames under one lock, so frames never interleave. The only frame writer, on both sides.
///
/// A write that failed (a peer that stopped reading, past the socket's write timeout) may
/// have left half a frame: every later send then fails at once with the same kind of error,
/// instead of appending to a cut frame or waiting out the timeout again.
pub struct FrameWriter<W>(Arc<Mutex<Sending<W>>>);

struct Sending<W> {
    writer: W,
    failed: Option<io::ErrorKind>,
}

impl<W> Clone for FrameWriter<W> {
    fn clone(&self) -> Self {
        FrameWriter(Arc::clone(&self.0))
    }
}

impl<W: Write> FrameWriter<W> {
    pub fn new(writer: W) -> FrameWriter<W> {
        FrameWriter(Arc::new(Mutex::new(Sending {
            writer,
            failed: None,
        })))
    }

    pub fn send(&self, message: &Message) -> io::Result<()> {
        let mut sending = self
            .0
            .lock()
            .map_err(|_| io::Error::other("frame writer lock poisoned"))?;
        if let Some(kind) = sending.failed {
            return Err(io::Error::new(kind, "an earlier write to this peer failed"));
        }
        let result = message.write_to(&mut sending.writer);
        if let Err(error) = &result {
            sending.failed = Some(error.kind());
        }
        result
    }
}

/// The body length a tag's frame must have, for error messages.
fn expected_len(tag: u8) -> &'static str {
    match tag {
        TAG_HELLO => "2",
        TAG_STARTED | TAG_CONN_EOF | TAG_CONN_CLOSE => "4",
        TAG_EOF => "5",
        TAG_CONNECT => "6",
        TAG_SIGNAL | TAG_RESIZE | TAG_EXIT | TAG_CONN_CREDIT => "8",
        TAG_CREDIT => "9",
        TAG_DATA => "at least 5",
        TAG_LISTENING => "a multiple of 3",
        _ => "at least 4",
    }
}

/// A field as frames carry it: numbers big-endian, the rest as their bytes.
trait Field {
    fn put(&self, body: &mut Vec<u8>);
}

macro_rules! big_endian_fields {
    ($($number:ty),*) => {$(
        impl Field for $number {
            fn put(&self, body: &mut Vec<u8>) {
                body.extend_from_slice(&self.to_be_bytes());
            }
        }
    )*};
}

big_endian_fields!(u16, u32, i32);

impl Field for StreamKind {
    fn put(&self, body: &mut Vec<u8>) {
        body.push(*self as u8);
    }
}

impl Field for Vec<u8> {
    fn put(&self, body: &mut Vec<u8>) {
        body.extend_from_slice(self);
    }
}

impl Field for String {
    fn put(&self, body: &mut Vec<u8>) {
        body.extend_from_slice(self.as_bytes());
    }
}

/// The frame of `tag` with these fields, length prefix included.
fn frame(tag: u8, fields: &[&dyn Field]) -> Vec<u8> {
    let mut frame = vec![0, 0, 0, 0, tag];
    for field in fields {
        field.put(&mut frame);
    }
    let len = u32::try_from(frame.len() - 4).unwrap_or(u32::MAX);
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// Cursor over a frame body that names the message when a field is missing.
struct Fields<'a> {
    tag: u8,
    body: &'a [u8],
    expected: &'static str,
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let Some((head, rest)) = self.body.split_first_chunk::<N>() else {
            return Err(self.bad_length());
        };
        self.body = rest;
        Ok(*head)
    }

    fn u16(&mut self) -> Result<u16, ProtocolError> {
        self.take().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, ProtocolError> {
        self.take().map(u32::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, ProtocolError> {
        self.take().map(i32::from_be_bytes)
    }

    fn stream(&mut self) -> Result<StreamKind, ProtocolError> {
        let [byte] = self.take()?;
        StreamKind::from_byte(byte)
    }

    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body).to_vec()
    }

    fn bad_length(&self) -> ProtocolError {
        ProtocolError::BadLength {
            tag: self.tag,
            len: self.body.len(),
            expected: self.expected,
        }
    }
}

/// Reads one message from a blocking reader; `Ok(None)` on a clean end of stream.
pub fn read_message(reader: &mut impl Read) -> Result<Option<Message>, ProtocolError> {
    read_message_within(reader, MAX_FRAME_LEN)
}

/// [`read_message`] for a peer whose frames are smaller: a longer one is refused before
/// anything is allocated for it.
pub fn read_message_within(
    reader: &mut impl Read,
    limit: usize,
) -> Result<Option<Message>, ProtocolError> {
    let mut len = [0u8; 4];
    match read_full(reader, &mut len)? {
        0 => return Ok(None),
        4 => {}
        _ => return Err(ProtocolError::Truncated),
    }
    let len = frame_len(len, limit)?;
    let mut frame = vec![0u8; len];
    if read_full(reader, &mut frame)? != len {
        return Err(ProtocolError::Truncated);
    }
    Message::decode(&frame).map(Some)
}

fn frame_len(prefix: [u8; 4], limit: usize) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > limit.min(MAX_FRAME_LEN) {
        return Err(ProtocolError::FrameTooLarge { len, limit });
    }
    Ok(len)
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Incremental decoder for non-blocking readers: feed bytes as they come, take whole messages.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        let Some(prefix) = self.buf.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = frame_len(*prefix, MAX_FRAME_LEN)?;
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let message = Message::decode(&self.buf[4..4 + len]);
        self.buf.drain(..4 + len);
        message.map(Some)
    }

    /// Bytes received that do not yet form a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_from_many_threads_never_interleave() {
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let writer = FrameWriter::new(ours);
        let senders: Vec<_> = (0..4u8)
            .map(|n| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for _ in 0..16 {
                        let bytes = vec![n; DATA_CHUNK];
                        let message = Message::Data {
                            session: u32::from(n),
                            stream: StreamKind::Stdout,
                            bytes,
                        };
                        writer.send(&message).unwrap();
                    }
                })
            })
            .collect();
        let reader = std::thread::spawn(move || {
            let mut count = 0;
            while count < 64 {
                match read_message(&mut theirs).unwrap() {
                    Some(Message::Data { session, bytes, .. }) => {
                        assert!(bytes.iter().all(|&b| u32::from(b) == session));
                        count += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        for sender in senders {
            sender.join().unwrap();
        }
        reader.join().unwrap();
    }

    #[test]
    fn session_messages_name_their_session_and_only_exit_and_error_end_it() {
        assert_eq!(Message::Started { session: 4 }.session(), Some(4));
        assert_eq!(Message::Hello { version: 1 }.session(), None);
        assert_eq!(Message::ConnEof { conn: 3 }.session(), None);
        assert!(Message::Exit {
            session: 1,
            code: 0
        }
        .ends_session());
        let error = Message::Error {
            session: 1,
            message: String::new(),
        };
        assert!(error.ends_session());
        assert!(!Message::Started { session: 1 }.ends_session());
    }

    #[test]
    fn exit_codes_outside_a_byte_are_255_everywhere() {
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(137), 137);
        assert_eq!(exit_status(255), 255);
        assert_eq!(exit_status(256), 255);
        assert_eq!(exit_status(-1), 255);
        assert_eq!(EXIT_KILLED_WITH_CONTAINER, 137);
    }

    fn samples() -> Vec<Message> {
        vec![
            Message::Hello {
                version: PROTOCOL_VERSION,
            },
            Message::Config {
                json: br#"{"a":1}"#.to_vec(),
            },
            Message::Started { session: 3 },
            Message::Data {
                session: 0,
                stream: StreamKind::Stdout,
                bytes: (0..=255).collect(),
            },
            Message::Data {
                session: 1,
                stream: StreamKind::Stdin,
                bytes: vec![],
            },
            Message::Eof {
                session: 7,
                stream: StreamKind::Stderr,
            },
            Message::Credit {
                session: 0,
                stream: StreamKind::Stdout,
                bytes: STREAM_WINDOW,
            },
            Message::Signal {
                session: 0,
                signal: 15,
            },
            Message::Listening {
                ports: vec![
                    ListenPort {
                        port: 8080,
                        any: true,
                    },
                    ListenPort {
                        port: 65535,
                        any: false,
                    },
                ],
            },
            Message::Listening { ports: vec![] },
            Message::Connect {
                conn: 0x8000_0001,
                port: 80,
            },
            Message::ConnData {
                conn: 1,
                bytes: b"GET /".to_vec(),
            },
            Message::ConnEof { conn: 2 },
            Message::ConnCredit {
                conn: 3,
                bytes: 4096,
            },
            Message::ConnClose { conn: 4 },
            Message::Resize {
                session: 0,
                rows: 24,
                cols: 80,
            },
            Message::Exit {
                session: 0,
                code: 137,
            },
            Message::Error {
                session: 0,
                message: "mount failed: ünïcode".into(),
            },
            Message::DnsQuery {
                id: 9,
                packet: vec![1, 2, 3],
            },
            Message::DnsAnswer {
                id: 9,
                packet: vec![],
            },
            Message::Exec {
                session: 21,
                json: br#"{"args":["true"]}"#.to_vec(),
            },
            Message::Timeline {
                json: br#"{"sent_ns":5,"marks":[]}"#.to_vec(),
            },
        ]
    }

    #[test]
    fn every_message_round_trips_through_a_reader() {
        let mut stream = Vec::new();
        for message in samples() {
            message.write_to(&mut stream).unwrap();
        }
        let mut reader = stream.as_slice();
        for expected in samples() {
            assert_eq!(read_message(&mut reader).unwrap(), Some(expected));
        }
        assert_eq!(read_message(&mut reader).unwrap(), None);
    }

    #[test]
    fn decoder_reassembles_frames_fed_one_byte_at_a_time() {
        let stream: Vec<u8> = samples().iter().flat_map(Message::encode).collect();
        let mut decoder = Decoder::default();
        let mut got = Vec::new();
        for byte in stream {
            decoder.push(&[byte]);
            while let Some(message) = decoder.next_message().unwrap() {
                got.push(message);
            }
        }
        assert_eq!(got, samples());
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn truncated_frame_is_an_error_not_a_clean_end() {
        let frame = Message::Exit {
            session: 0,
            code: 1,
        }
        .encode();
        let mut reader = &frame[..frame.len() - 1];
        assert!(matches!(
            read_message(&mut reader),
            Err(ProtocolError::Truncated)
        ));
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut reader: &[u8] = &[0xff, 0xff, 0xff, 0xff, TAG_DATA];
        assert!(matches!(
            read_message(&mut reader),
            Err(ProtocolError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn after_a_failed_write_every_send_fails_at_once() {
        /// Takes 3 bytes, then fails as a write past its timeout does.
        struct Stalls(usize);
        impl Write for Stalls {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                match self.0 {
                    0 => Err(io::ErrorKind::TimedOut.into()),
                    room => {
                        let n = buf.len().min(room);
                        self.0 -= n;
                        Ok(n)
                    }
                }
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let writer = FrameWriter::new(Stalls(3));
        let exit = Message::Exit {
            session: 0,
            code: 0,
        };
        let first = writer.send(&exit).unwrap_err();
        assert_eq!(first.kind(), io::ErrorKind::TimedOut);
        let again = writer.send(&exit).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::TimedOut);
        assert!(again.to_string().contains("earlier write"), "{again}");
    }

    #[test]
    fn a_guest_frame_past_its_limit_is_refused_and_a_full_window_is_not() {
        let data = |len: usize| Message::Data {
            session: 0,
            stream: StreamKind::Stdout,
            bytes: vec![0; len],
        };
        let window = data(STREAM_WINDOW as usize).encode();
        assert!(read_message_within(&mut &window[..], GUEST_FRAME_LIMIT).is_ok());
        let ports = Message::Listening {
            ports: (0..=u16::MAX)
                .map(|port| ListenPort { port, any: true })
                .collect(),
        }
        .encode();
        assert!(read_message_within(&mut &ports[..], GUEST_FRAME_LIMIT).is_ok());
        let over = data(GUEST_FRAME_LIMIT).encode();
        let error = read_message_within(&mut &over[..], GUEST_FRAME_LIMIT).unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("limit of {GUEST_FRAME_LIMIT}")),
            "{error}"
        );
    }

    #[test]
    fn malformed_bodies_are_named_errors() {
        assert!(matches!(
            Message::decode(&[99]),
            Err(ProtocolError::UnknownTag(99))
        ));
        assert!(matches!(
            Message::decode(&[TAG_EXIT, 0, 0]),
            Err(ProtocolError::BadLength { tag: TAG_EXIT, .. })
        ));
        assert!(matches!(
            Message::decode(&[TAG_DATA, 0, 0, 0, 0, 9]),
            Err(ProtocolError::BadStream(9))
        ));
        assert!(matches!(
            Message::decode(&[TAG_ERROR, 0, 0, 0, 0, 0xff]),
            Err(ProtocolError::BadText)
        ));
        assert!(Message::decode(&[]).is_err());
    }
}

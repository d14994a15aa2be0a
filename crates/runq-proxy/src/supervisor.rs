//! The proxy's state machine: the VM's lifecycle and the routing of every message, without
//! I/O. It takes one [`Input`] at a time and answers with the [`Action`]s the proxy's loop
//! (`serve`) carries out, so each phase can be tested on its own.
//!
//! The guest is hostile: a frame its state does not allow (a second Hello or Started, an exit
//! after the end, a host's message, output beyond its window, a session that never existed, a
//! DNS query where the container has no embedded server) ends the container with
//! [`Failure::Violation`] naming it.

use std::collections::BTreeMap;

use runq_mirror::Mirror;
use runq_shared::protocol::{
    Message, StreamKind, EXIT_KILLED_WITH_CONTAINER, MAIN_SESSION, PROTOCOL_VERSION, STREAM_WINDOW,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// QEMU is starting, the guest is booting: the boot deadline applies.
    Booting,
    Running,
    /// The guest reported this exit code; QEMU is ending.
    Exited(i32),
    /// The guest gave up (its message was reported); waiting for it to power off.
    Failed,
    /// The channel closed before an exit was reported; QEMU's own end will tell why.
    ChannelLost,
}

/// How a child's end with exit status 0 is put in [`Input::QemuEnded`] and
/// [`Input::VirtiofsdEnded`].
pub const CLEAN_EXIT: &str = "exit status 0";

/// What happened, as the proxy's threads and deadlines report it.
#[derive(Debug, PartialEq)]
pub enum Input {
    Guest(Message),
    /// QEMU connected to the control channel.
    ChannelConnected,
    ChannelClosed(Option<String>),
    QemuEnded(String),
    VirtiofsdEnded(String),
    /// A signal for the application.
    Signal(i32),
    WindowChanged,
    /// A client on the exec socket asks for a session running this process.
    ExecRequest {
        session: u32,
        json: Vec<u8>,
    },
    /// A frame from an exec client for its session.
    ExecClient {
        session: u32,
        message: Message,
    },
    /// The exec client hung up, or this message could not be delivered to it.
    ExecClientGone {
        session: u32,
        undelivered: Option<Message>,
    },
    /// The deadline of [`Supervisor::deadline`] passed.
    DeadlinePassed,
    /// The guest broke the protocol where the proxy's loop saw it (the application's output
    /// beyond its window).
    Violation(String),
}

/// What the proxy's loop is to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    ToGuest(Message),
    /// The guest's config ([`runq_shared::config::GuestBoot`]), with the host's clock read as
    /// it leaves.
    SendConfig,
    /// To an exec session's client; one that ends the session is the client's last.
    ToClient(u32, Message),
    /// A frame of the application's stdio.
    ToMainSession(Message),
    /// The application runs: carry its stdio, share localhost, page out the boot images.
    StartMainSession,
    SignalMain(i32),
    ResizeMain,
    /// Write out the application's output received so far.
    FinishOutput,
    ToMirror(Message),
    ResolveDns {
        id: u32,
        packet: Vec<u8>,
    },
    Timeline(Vec<u8>),
    /// The guest synced its file systems before it reported the exit, and what it does
    /// afterwards reaches nobody: QEMU can go at once.
    KillQemu,
    /// One line on the container's stderr.
    Report(String),
    End(Result<i32, Failure>),
}

/// Why the container ends without an exit code from the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    ProtocolMismatch {
        guest: u16,
    },
    VirtiofsdEnded(String),
    QemuEnded(String),
    BootTimeout,
    ChannelLost,
    /// The guest sent what its state does not allow.
    Violation(String),
}

/// Which deadline applies now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    Boot,
    PowerOff,
    /// The machine is gone and the channel is read to its end, which comes at once after
    /// QEMU's; a child that went for another reason leaves the channel open.
    Drain,
}

struct PendingExec {
    session: u32,
    json: Vec<u8>,
    /// What its client sent before the session could start: stdin, a resize, a signal.
    early: Vec<Message>,
}

pub struct Supervisor {
    phase: Phase,
    configured: bool,
    /// Without disks nothing is lost when QEMU is killed right after the exit; with them,
    /// its own orderly exit flushes what a format like qcow2 may still hold.
    has_disks: bool,
    /// Exec sessions asked for while the guest boots, started once it runs, as `runc exec`
    /// works as soon as `runc start` returned.
    pending_execs: Vec<PendingExec>,
    /// Exec sessions that run and have a client, with the output of each stream (stdout,
    /// stderr) on its way to the client: the guest may have at most a window of it in flight.
    exec_sessions: BTreeMap<u32, [u32; 2]>,
    /// The highest exec session number given out; the guest cannot know a higher one.
    last_session: u32,
    /// The container's resolv.conf names Docker's embedded DNS server, as the proxy found it.
    embedded_dns: bool,
    /// QEMU connected to the channel and it has not closed: what the guest sent may still
    /// be on its way.
    channel_open: bool,
    /// QEMU ended, or virtiofsd lost its client, before the application's end was read. The
    /// guest's last words (its exit, or its error) are in the channel before it powers off,
    /// but a child's end can be seen first: the channel is read to its end, and only a guest
    /// that said nothing ends the container with this failure.
    machine_gone: Option<Failure>,
}

impl Supervisor {
    pub fn new(has_disks: bool, embedded_dns: bool) -> Supervisor {
        Supervisor {
            phase: Phase::Booting,
            configured: false,
            has_disks,
            pending_execs: Vec::new(),
            exec_sessions: BTreeMap::new(),
            last_session: MAIN_SESSION,
            embedded_dns,
            channel_open: false,
            machine_gone: None,
        }
    }

    pub fn deadline(&self) -> Option<Deadline> {
        match self.phase {
            Phase::Booting | Phase::Running if self.machine_gone.is_some() => Some(Deadline::Drain),
            Phase::Booting => Some(Deadline::Boot),
            Phase::Running => None,
            Phase::Exited(_) | Phase::Failed | Phase::ChannelLost => Some(Deadline::PowerOff),
        }
    }

    fn alive(&self) -> bool {
        matches!(self.phase, Phase::Booting | Phase::Running)
    }

    /// Whether the guest can still take a signal, a resize or an exec session.
    fn reachable(&self) -> bool {
        self.alive() && self.machine_gone.is_none()
    }

    /// QEMU ended while the application's end is unknown: with the channel open, its end is
    /// read first. QEMU's end explains a virtiofsd that lost its client.
    fn qemu_ended_early(&mut self, status: String, actions: &mut Vec<Action>) {
        let failure = Failure::QemuEnded(status);
        if self.channel_open {
            self.machine_gone = Some(failure);
        } else {
            actions.push(Action::End(Err(failure)));
        }
    }

    /// virtiofsd ended while the application's end is unknown. It exits 0 when QEMU went,
    /// so a clean end waits for QEMU's and for the channel's; any other end is its own.
    fn virtiofsd_ended_early(&mut self, status: String, actions: &mut Vec<Action>) {
        if self.machine_gone.is_some() {
            return;
        }
        let clean = lost_its_client(&status);
        let failure = Failure::VirtiofsdEnded(status);
        if clean {
            self.machine_gone = Some(failure);
        } else {
            actions.push(Action::End(Err(failure)));
        }
    }

    /// QEMU was reaped while the application ran: nothing more can reach the channel, and
    /// there is nothing to kill.
    fn qemu_gone(&self) -> bool {
        matches!(self.machine_gone, Some(Failure::QemuEnded(_)))
    }

    /// virtiofsd lost its client, and QEMU's end, which will name the failure better, is
    /// still to come (QEMU's end replaces it).
    fn waits_for_qemu(&self) -> bool {
        matches!(self.machine_gone, Some(Failure::VirtiofsdEnded(_)))
    }

    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Guest(message) => {
                self.guest_message(message, &mut actions);
                // Nothing more can come: what the guest said last decides.
                if self.qemu_gone() && !actions.iter().any(|a| matches!(a, Action::End(_))) {
                    actions.extend(self.known_end().map(Action::End));
                }
            }
            Input::ChannelConnected => self.channel_open = true,
            Input::ChannelClosed(error) => {
                self.channel_open = false;
                if self.alive() && !self.waits_for_qemu() {
                    // A read error after the machine went is its consequence, not its cause.
                    match self.machine_gone.take() {
                        Some(failure) => actions.push(Action::End(Err(failure))),
                        None => {
                            actions.extend(error.map(Action::Report));
                            self.phase = Phase::ChannelLost;
                        }
                    }
                }
            }
            Input::QemuEnded(status) => {
                if self.alive() {
                    self.qemu_ended_early(status, &mut actions);
                } else {
                    let failure = Failure::QemuEnded(status);
                    actions.push(Action::End(self.known_end().unwrap_or(Err(failure))));
                }
            }
            Input::VirtiofsdEnded(status) => {
                if self.alive() {
                    self.virtiofsd_ended_early(status, &mut actions);
                }
            }
            Input::Signal(signal) => {
                if self.reachable() {
                    actions.push(Action::SignalMain(signal));
                }
            }
            Input::WindowChanged => {
                if self.reachable() {
                    actions.push(Action::ResizeMain);
                }
            }
            Input::ExecRequest { session, json } => {
                self.last_session = self.last_session.max(session);
                self.exec_request(session, json, &mut actions)
            }
            Input::ExecClient { session, message } => {
                if let Some(pending) = self.pending_execs.iter_mut().find(|p| p.session == session)
                {
                    // Bounded: the client sends no more stdin than the stream window.
                    pending.early.push(message);
                } else if let Some(in_flight) = self.exec_sessions.get_mut(&session) {
                    if let Message::Credit { stream, bytes, .. } = &message {
                        if let Some(slot) = output_slot(*stream) {
                            in_flight[slot] = in_flight[slot].saturating_sub(*bytes);
                        }
                    }
                    actions.extend(from_client(message, session).map(Action::ToGuest));
                }
            }
            Input::ExecClientGone {
                session,
                undelivered,
            } => {
                self.pending_execs.retain(|p| p.session != session);
                // Nobody is left to see its output or its exit: as with a killed `runc exec`
                // relay, the process goes too.
                if self.exec_sessions.remove(&session).is_some() {
                    actions.push(Action::ToGuest(Message::Signal {
                        session,
                        signal: libc::SIGKILL,
                    }));
                }
                actions.extend(
                    undelivered
                        .and_then(|m| m.credit_for())
                        .map(Action::ToGuest),
                );
            }
            Input::DeadlinePassed => {
                actions.push(Action::End(match (self.phase, self.machine_gone.take()) {
                    // The guest said nothing before its machine went.
                    (Phase::Booting | Phase::Running, Some(failure)) => Err(failure),
                    (Phase::Booting, None) => Err(Failure::BootTimeout),
                    // The application's result is known; a guest slow to power off changes
                    // nothing.
                    (Phase::Exited(code), _) => Ok(code),
                    (Phase::ChannelLost, _) => Err(Failure::ChannelLost),
                    (Phase::Failed | Phase::Running, _) => Ok(1),
                }))
            }
            Input::Violation(what) => actions.push(violation(what)),
        }
        actions
    }

    /// The container's end once the guest told it.
    fn known_end(&self) -> Option<Result<i32, Failure>> {
        match self.phase {
            Phase::Exited(code) => Some(Ok(code)),
            Phase::Failed => Some(Ok(1)),
            Phase::Booting | Phase::Running | Phase::ChannelLost => None,
        }
    }

    /// A booting container's exec waits for the application; a running one's starts.
    fn exec_request(&mut self, session: u32, json: Vec<u8>, actions: &mut Vec<Action>) {
        match self.phase {
            _ if !self.reachable() => actions.push(Action::ToClient(
                session,
                Message::Error {
                    session,
                    message: "the container is not running".into(),
                },
            )),
            Phase::Booting => self.pending_execs.push(PendingExec {
                session,
                json,
                early: Vec::new(),
            }),
            Phase::Running => {
                self.exec_sessions.insert(session, [0; 2]);
                actions.push(Action::ToGuest(Message::Exec { session, json }));
            }
            _ => actions.push(Action::ToClient(
                session,
                Message::Error {
                    session,
                    message: "the container is not running".into(),
                },
            )),
        }
    }

    fn guest_message(&mut self, message: Message, actions: &mut Vec<Action>) {
        if Mirror::handles(&message) {
            actions.push(Action::ToMirror(message));
            return;
        }
        match message {
            Message::Hello { .. } if self.configured => {
                actions.push(violation("a second Hello".into()))
            }
            Message::Hello { version } => {
                self.configured = true;
                actions.push(if version == PROTOCOL_VERSION {
                    Action::SendConfig
                } else {
                    Action::End(Err(Failure::ProtocolMismatch { guest: version }))
                });
            }
            Message::DnsQuery { .. } if !self.embedded_dns => actions.push(violation(
                "a DNS query, though the container has no embedded DNS server".into(),
            )),
            Message::DnsQuery { id, packet } => actions.push(Action::ResolveDns { id, packet }),
            Message::Timeline { json } => actions.push(Action::Timeline(json)),
            message => match guest_session(&message) {
                Some(MAIN_SESSION) => self.main_session(message, actions),
                Some(session) if session > self.last_session => actions.push(violation(format!(
                    "a message for exec session {session}, which was never started"
                ))),
                Some(session) => self.route_to_client(session, message, actions),
                None => actions.push(unexpected(&message)),
            },
        }
    }

    fn main_session(&mut self, message: Message, actions: &mut Vec<Action>) {
        match message {
            Message::Started { .. } if self.phase == Phase::Booting => {
                self.phase = Phase::Running;
                actions.push(Action::StartMainSession);
                for pending in std::mem::take(&mut self.pending_execs) {
                    self.exec_sessions.insert(pending.session, [0; 2]);
                    actions.push(Action::ToGuest(Message::Exec {
                        session: pending.session,
                        json: pending.json,
                    }));
                    actions.extend(
                        pending
                            .early
                            .into_iter()
                            .filter_map(|message| from_client(message, pending.session))
                            .map(Action::ToGuest),
                    );
                }
            }
            Message::Exit { code, .. } if self.alive() => {
                self.phase = Phase::Exited(code);
                if !self.has_disks && !self.qemu_gone() {
                    actions.push(Action::KillQemu);
                }
            }
            Message::Error { message, .. } if self.alive() => {
                actions.push(Action::FinishOutput);
                actions.push(Action::Report(format!("guest: {message}")));
                self.phase = Phase::Failed;
            }
            message @ (Message::Data { .. } | Message::Eof { .. } | Message::Credit { .. }) => {
                actions.push(Action::ToMainSession(message))
            }
            Message::Started { .. } => actions.push(violation("a second Started".into())),
            Message::Exit { .. } | Message::Error { .. } => actions.push(violation(
                "an exit or error after the application's end".into(),
            )),
            other => actions.push(unexpected(&other)),
        }
    }

    /// Passes a guest message of an exec session to its client; a session whose client is
    /// gone keeps its window open until its kill lands.
    fn route_to_client(&mut self, session: u32, message: Message, actions: &mut Vec<Action>) {
        let Some(in_flight) = self.exec_sessions.get_mut(&session) else {
            actions.extend(message.credit_for().map(Action::ToGuest));
            return;
        };
        if let Message::Data { stream, bytes, .. } = &message {
            let Some(slot) = output_slot(*stream) else {
                return actions.push(unexpected(&message));
            };
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            if in_flight[slot].saturating_add(len) > STREAM_WINDOW {
                return actions.push(violation(format!(
                    "exec session {session} sent {stream:?} beyond its window of \
                     {STREAM_WINDOW} bytes"
                )));
            }
            in_flight[slot] += len;
        }
        if message.ends_session() {
            self.exec_sessions.remove(&session);
        }
        actions.push(Action::ToClient(session, message));
    }

    /// How many things the supervisor holds (exec sessions, waiting requests and what their
    /// clients sent early): only clients add to it, never the guest.
    pub fn held(&self) -> usize {
        let early: usize = self.pending_execs.iter().map(|p| p.early.len()).sum();
        self.exec_sessions.len() + self.pending_execs.len() + early
    }

    /// What exec clients hear when the container is over.
    pub fn finish(&mut self) -> Vec<Action> {
        let pending = self.pending_execs.drain(..).map(|pending| {
            let message = Message::Error {
                session: pending.session,
                message: "the container ended before the exec session could start".into(),
            };
            Action::ToClient(pending.session, message)
        });
        let running = std::mem::take(&mut self.exec_sessions)
            .into_keys()
            .map(|session| {
                let code = EXIT_KILLED_WITH_CONTAINER;
                Action::ToClient(session, Message::Exit { session, code })
            });
        pending.chain(running).collect()
    }
}

/// virtiofsd exits 0 when its client, QEMU, went: QEMU's end, which follows, says why.
fn lost_its_client(virtiofsd_status: &str) -> bool {
    virtiofsd_status == CLEAN_EXIT
}

/// The session of a message the guest may send for a session.
fn guest_session(message: &Message) -> Option<u32> {
    use Message::*;
    let of_session = matches!(
        message,
        Started { .. } | Data { .. } | Eof { .. } | Credit { .. } | Exit { .. } | Error { .. }
    );
    message.session().filter(|_| of_session)
}

fn unexpected(message: &Message) -> Action {
    let mut text = format!("{message:?}");
    text.truncate(200);
    violation(format!("a message the guest may not send: {text}"))
}

fn violation(what: String) -> Action {
    Action::End(Err(Failure::Violation(what)))
}

/// Which of a session's output streams a stream is.
fn output_slot(stream: StreamKind) -> Option<usize> {
    match stream {
        StreamKind::Stdout => Some(0),
        StreamKind::Stderr => Some(1),
        StreamKind::Stdin => None,
    }
}

/// An exec client's frame, renumbered to its session; `None` for what a client may not send.
pub fn from_client(mut message: Message, session: u32) -> Option<Message> {
    match &mut message {
        Message::Data {
            session: number, ..
        }
        | Message::Eof {
            session: number, ..
        }
        | Message::Credit {
            session: number, ..
        }
        | Message::Signal {
            session: number, ..
        }
        | Message::Resize {
            session: number, ..
        } => *number = session,
        _ => return None,
    }
    Some(message)
}

#[cfg(test)]
mod tests;

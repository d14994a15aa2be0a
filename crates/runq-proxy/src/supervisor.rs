//! The proxy's main loop: one state machine fed by the channel, signal and child events.

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use runq_mirror::{Mirror, Side};
use runq_shared::config::VmConfig;
use runq_shared::protocol::{Message, StreamKind, MAIN_SESSION, PROTOCOL_VERSION, STREAM_WINDOW};
use runq_shared::timeline::{self, GuestMarks, Timeline};

use crate::boot_images;
use crate::children::tail;
use crate::event::Event;
use crate::qemu::Paths;
use runq_stdio::FrameWriter;
use runq_stdio::{self as stdio, Credit, Output};

/// How long a guest that reported the exit may take to power off before QEMU is killed.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// QEMU is starting, the guest is booting: the deadline applies.
    Booting,
    Running,
    /// The guest reported this exit code; QEMU is ending (see `end_vm`).
    Exited(i32),
    /// The guest gave up (its message was printed); waiting for it to power off.
    Failed,
    /// The channel closed before an exit was reported; QEMU's own end will tell why.
    ChannelLost,
}

/// The processes besides QEMU that serve the VM.
pub struct Helpers {
    /// The root file system's server.
    pub virtiofsd: Option<Child>,
    /// The NIC's backend in a shared network namespace.
    pub passt: Option<Child>,
}

struct PendingExec {
    session: u32,
    json: Vec<u8>,
    client: FrameWriter,
    /// What its client sent before the session could start: stdin, a resize, a signal.
    early: Vec<Message>,
}

pub struct Supervisor {
    config: VmConfig,
    qemu: Child,
    virtiofsd: Option<Child>,
    passt: Option<Child>,
    /// Localhost shared with the pod's other VMs, once the guest runs.
    mirror: Option<Mirror>,
    paths: Paths,
    phase: Phase,
    channel: Option<FrameWriter>,
    stdin_credit: Credit,
    stdout: Option<Output>,
    stderr: Option<Output>,
    pending_signals: Vec<i32>,
    /// Exec sessions asked for while the guest boots, started once it runs, as `runc exec`
    /// works as soon as `runc start` returned.
    pending_execs: Vec<PendingExec>,
    /// Exec sessions by number, each with the connection of its client.
    exec_clients: HashMap<u32, FrameWriter>,
    /// The boot timeline, when `RUNQ_TIMELINE` asked for it.
    timeline: Option<Timeline>,
}

impl Supervisor {
    pub fn new(
        config: VmConfig,
        qemu: Child,
        helpers: Helpers,
        paths: Paths,
        timeline: Option<Timeline>,
    ) -> Supervisor {
        Supervisor {
            config,
            qemu,
            virtiofsd: helpers.virtiofsd,
            passt: helpers.passt,
            mirror: None,
            paths,
            phase: Phase::Booting,
            channel: None,
            stdin_credit: Credit::new(STREAM_WINDOW),
            stdout: None,
            stderr: None,
            pending_signals: Vec::new(),
            pending_execs: Vec::new(),
            exec_clients: HashMap::new(),
            timeline,
        }
    }

    /// Runs until the container is over; returns the exit code for the container.
    pub fn run(mut self, queue: Receiver<Event>) -> Result<i32> {
        let boot_deadline =
            Instant::now() + Duration::from_secs(self.config.vm.boot_timeout_secs.into());
        let mut power_off_deadline = None;
        let result = loop {
            let deadline = match self.phase {
                Phase::Booting => Some(boot_deadline),
                Phase::Exited(_) | Phase::Failed | Phase::ChannelLost => {
                    Some(*power_off_deadline.get_or_insert(Instant::now() + POWER_OFF_GRACE))
                }
                Phase::Running => None,
            };
            let event = match deadline {
                None => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => queue.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match event {
                Ok(event) => match self.handle(event) {
                    Ok(Some(code)) => break Ok(code),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                },
                Err(RecvTimeoutError::Timeout) => break self.deadline_passed(),
                Err(RecvTimeoutError::Disconnected) => {
                    break Err(anyhow!("internal error: every event source ended"))
                }
            }
        };
        if let Some(timeline) = self.timeline.as_mut() {
            timeline.mark("vm_exit");
        }
        self.finish_output();
        if let Some(timeline) = &self.timeline {
            eprintln!("{}", timeline.line());
        }
        for pending in self.pending_execs.drain(..) {
            let _ = pending.client.send(&Message::Error {
                session: pending.session,
                message: "the container ended before the exec session could start".into(),
            });
        }
        for (session, client) in self.exec_clients.drain() {
            let _ = client.send(&Message::Exit {
                session,
                code: runq_shared::protocol::EXIT_KILLED_WITH_CONTAINER,
            });
        }
        self.stop_children();
        result
    }

    /// Handles one event; `Some(code)` when the container is over.
    fn handle(&mut self, event: Event) -> Result<Option<i32>> {
        match event {
            Event::Connected(channel) => self.channel = Some(channel),
            Event::Guest(message) => self.handle_guest(message)?,
            Event::ChannelClosed(error) => {
                if matches!(self.phase, Phase::Booting | Phase::Running) {
                    if let Some(error) = error {
                        eprintln!("runq: {error}");
                    }
                    self.phase = Phase::ChannelLost;
                }
            }
            Event::ChildExited { pid, status } => {
                if pid == self.qemu.id() as i32 {
                    return self.qemu_exited(&status).map(Some);
                }
                if Some(pid) == self.virtiofsd.as_ref().map(|c| c.id() as i32)
                    && matches!(self.phase, Phase::Booting | Phase::Running)
                {
                    bail!(
                        "virtiofsd (the root file system server) ended with {status} while the \
                         VM was running{}",
                        self.log_excerpt(&self.paths.virtiofsd_log, "virtiofsd")
                    );
                }
            }
            Event::Signal(signal) => match self.phase {
                Phase::Running => self.send(&Message::Signal {
                    session: MAIN_SESSION,
                    signal,
                })?,
                Phase::Booting => self.pending_signals.push(signal),
                Phase::Exited(_) | Phase::Failed | Phase::ChannelLost => {}
            },
            Event::WindowChanged => self.send_window_size()?,
            Event::ExecRequest {
                session,
                json,
                client,
            } => self.start_exec(session, json, client)?,
            Event::ExecClient { session, message } => {
                if let Some(pending) = self.pending_execs.iter_mut().find(|p| p.session == session)
                {
                    // Bounded: the client sends no more stdin than the stream window.
                    pending.early.push(message);
                } else if self.exec_clients.contains_key(&session) {
                    if let Some(message) = crate::exec::for_session(message, session) {
                        self.send(&message)?;
                    }
                }
            }
            Event::ExecClientGone { session } => {
                self.pending_execs.retain(|p| p.session != session);
                // Nobody is left to see its output or its exit: as with a killed `runc exec`
                // relay, the process goes too.
                if self.exec_clients.remove(&session).is_some() {
                    self.send(&Message::Signal {
                        session,
                        signal: libc::SIGKILL,
                    })?;
                }
            }
        }
        Ok(None)
    }

    /// noexec is not checked here: `runq exec` refuses it with its message, and the proxy of a
    /// noexec container has no exec socket, so no request can arrive.
    fn start_exec(&mut self, session: u32, json: Vec<u8>, client: FrameWriter) -> Result<()> {
        let refusal = if self.phase == Phase::Booting {
            self.pending_execs.push(PendingExec {
                session,
                json,
                client,
                early: Vec::new(),
            });
            return Ok(());
        } else if self.phase != Phase::Running {
            Some("the container is not running")
        } else {
            None
        };
        if let Some(message) = refusal {
            let _ = client.send(&Message::Error {
                session,
                message: message.into(),
            });
            return Ok(());
        }
        self.exec_clients.insert(session, client);
        self.send(&Message::Exec { session, json })
    }

    /// Passes a guest message of an exec session to its client.
    fn route_to_client(&mut self, session: u32, message: Message) -> Result<()> {
        let ends = matches!(message, Message::Exit { .. } | Message::Error { .. });
        let delivered = match self.exec_clients.get(&session) {
            Some(client) => client.send(&message).is_ok(),
            None => false,
        };
        if ends {
            self.exec_clients.remove(&session);
        } else if !delivered {
            // The client is gone; keep the session's window open until its kill lands.
            if let Message::Data { stream, bytes, .. } = message {
                self.send(&Message::Credit {
                    session,
                    stream,
                    bytes: bytes.len() as u32,
                })?;
            }
        }
        Ok(())
    }

    fn handle_guest(&mut self, message: Message) -> Result<()> {
        if Mirror::handles(&message) {
            if let Some(mirror) = self.mirror() {
                mirror.deliver(message);
            }
            return Ok(());
        }
        if let Some(session) =
            crate::exec::session_of(&message).filter(|&session| session != MAIN_SESSION)
        {
            return self.route_to_client(session, message);
        }
        match message {
            Message::Hello { version } => {
                if version != PROTOCOL_VERSION {
                    bail!(
                        "the guest init speaks protocol {version}, this proxy {PROTOCOL_VERSION}: \
                         reinstall runq so that initrd and proxy match"
                    );
                }
                let json = serde_json::to_vec(&self.config.guest)?;
                self.send(&Message::Config { json })?;
            }
            Message::Started { .. } => self.started()?,
            Message::Data { stream, bytes, .. } => {
                let output = match stream {
                    StreamKind::Stdout => self.stdout.as_ref(),
                    StreamKind::Stderr => self.stderr.as_ref(),
                    StreamKind::Stdin => None,
                };
                match output {
                    Some(output) => output.push(bytes),
                    None => {
                        // What the guest init itself says after the application's stderr
                        // ended (why it ended, say) still belongs on the container's stderr.
                        if stream == StreamKind::Stderr {
                            use std::io::Write;
                            let _ = std::io::stderr().write_all(&bytes);
                        }
                        self.send(&Message::Credit {
                            session: MAIN_SESSION,
                            stream,
                            bytes: bytes.len() as u32,
                        })?
                    }
                }
            }
            Message::Eof { stream, .. } => match stream {
                StreamKind::Stdout => finish(&mut self.stdout),
                StreamKind::Stderr => finish(&mut self.stderr),
                StreamKind::Stdin => {}
            },
            Message::Credit {
                stream: StreamKind::Stdin,
                bytes,
                ..
            } => self.stdin_credit.add(bytes),
            Message::Exit { code, .. } => {
                self.phase = Phase::Exited(code);
                self.end_vm();
            }
            Message::Error { message, .. } => {
                self.finish_output();
                eprintln!("runq: guest: {message}");
                self.phase = Phase::Failed;
            }
            Message::DnsQuery { id, packet } => {
                if let Some(channel) = self.channel.clone() {
                    crate::dns::resolve_in_background(id, packet, channel);
                }
            }
            Message::Timeline { json } => {
                let received = timeline::wall_clock_ns();
                if let Some(timeline) = self.timeline.as_mut() {
                    match serde_json::from_slice::<GuestMarks>(&json) {
                        Ok(marks) => timeline.add_guest(&marks, received),
                        Err(error) => {
                            eprintln!("runq: unreadable timeline from the guest: {error}")
                        }
                    }
                }
            }
            other => eprintln!("runq: unexpected message from the guest: {other:?}"),
        }
        Ok(())
    }

    /// The mirror, started the first time it is needed: when the guest runs, or when its
    /// mirror reports first.
    fn mirror(&mut self) -> Option<&Mirror> {
        if self.mirror.is_none() && self.config.guest.network.mirror_localhost {
            let channel = self.channel.clone()?;
            let send = Box::new(move |message: &Message| channel.send(message));
            match Mirror::spawn(Side::Host, send) {
                Ok(mirror) => self.mirror = Some(mirror),
                Err(error) => eprintln!("runq: localhost is not shared with the pod: {error}"),
            }
        }
        self.mirror.as_ref()
    }

    fn started(&mut self) -> Result<()> {
        let _ = self.mirror();
        let channel = self
            .channel
            .clone()
            .ok_or_else(|| anyhow!("guest started before the channel connected"))?;
        self.phase = Phase::Running;
        self.stdout = Some(Output::spawn(
            MAIN_SESSION,
            StreamKind::Stdout,
            channel.clone(),
        )?);
        self.stderr = Some(Output::spawn(
            MAIN_SESSION,
            StreamKind::Stderr,
            channel.clone(),
        )?);
        stdio::spawn_stdin_pump(MAIN_SESSION, channel, self.stdin_credit.clone())?;
        if self.config.guest.process.terminal {
            self.send_window_size()?;
        }
        for signal in std::mem::take(&mut self.pending_signals) {
            self.send(&Message::Signal {
                session: MAIN_SESSION,
                signal,
            })?;
        }
        for pending in std::mem::take(&mut self.pending_execs) {
            self.exec_clients.insert(pending.session, pending.client);
            self.send(&Message::Exec {
                session: pending.session,
                json: pending.json,
            })?;
            for message in pending.early {
                if let Some(message) = crate::exec::for_session(message, pending.session) {
                    self.send(&message)?;
                }
            }
        }
        // The kernel and initrd have done their work; refused without CAP_SYS_NICE, which
        // only costs memory.
        let images = [self.paths.kernel.as_path(), self.paths.initrd.as_path()];
        if let Err(error) = boot_images::page_out(self.qemu.id(), &images) {
            if self.config.vm.debug {
                eprintln!("runq: could not page the boot images out of QEMU: {error}");
            }
        }
        Ok(())
    }

    fn qemu_exited(&mut self, status: &str) -> Result<i32> {
        match self.phase {
            Phase::Exited(code) => Ok(code),
            Phase::Failed => Ok(1),
            Phase::Booting | Phase::Running | Phase::ChannelLost => bail!(
                "QEMU ended with {status} before the application did{}{}{}",
                panic_line(&self.paths.console_log)
                    .map(|line| format!(": the guest kernel panicked ({line})"))
                    .unwrap_or_default(),
                self.log_excerpt(&self.paths.qemu_log, "QEMU"),
                self.log_excerpt(&self.paths.console_log, "guest console")
            ),
        }
    }

    fn deadline_passed(&mut self) -> Result<i32> {
        match self.phase {
            Phase::Booting => bail!(
                "the guest did not start the application within {} s (boot timeout){}",
                self.config.vm.boot_timeout_secs,
                self.log_excerpt(&self.paths.console_log, "guest console")
            ),
            // The application's result is known; a guest slow to power off changes nothing.
            Phase::Exited(code) => Ok(code),
            Phase::ChannelLost => bail!(
                "the control channel to the guest closed while QEMU kept running{}",
                self.log_excerpt(&self.paths.console_log, "guest console")
            ),
            Phase::Failed | Phase::Running => Ok(1),
        }
    }

    fn send(&self, message: &Message) -> Result<()> {
        let channel = self
            .channel
            .as_ref()
            .ok_or_else(|| anyhow!("the control channel is not connected"))?;
        channel
            .send(message)
            .map_err(|e| anyhow!("send to the guest: {e}"))
    }

    fn send_window_size(&self) -> Result<()> {
        match (self.phase, stdio::window_size()) {
            (Phase::Running, Some((rows, cols))) => self.send(&Message::Resize {
                session: MAIN_SESSION,
                rows,
                cols,
            }),
            _ => Ok(()),
        }
    }

    fn finish_output(&mut self) {
        finish(&mut self.stdout);
        finish(&mut self.stderr);
    }

    /// The guest synced its file systems before it reported the exit, and what it does
    /// afterwards reaches nobody: without disks QEMU is killed at once. Its own orderly exit
    /// (device teardown, ~55 ms under TCG, SIGTERM no faster than the guest's power-off) is
    /// only kept for disks, where a format like qcow2 with `cache=unsafe` may still hold
    /// metadata that the guest's flush never reached.
    fn end_vm(&self) {
        if self.config.vm.disks.is_empty() {
            let pid = nix::unistd::Pid::from_raw(self.qemu.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }

    fn stop_children(&mut self) {
        for child in [
            Some(&mut self.qemu),
            self.virtiofsd.as_mut(),
            self.passt.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = child.kill();
        }
    }

    fn log_excerpt(&self, path: &Path, name: &str) -> String {
        let text = tail(path, 15);
        if text.is_empty() {
            String::new()
        } else {
            format!("\n--- last lines of the {name} log ---\n{text}")
        }
    }
}

/// The guest kernel's panic message, if the console log has one.
fn panic_line(console_log: &Path) -> Option<String> {
    let log = std::fs::read_to_string(console_log).ok()?;
    log.lines()
        .find_map(|line| line.split_once("Kernel panic - ").map(|(_, rest)| rest))
        .map(|rest| format!("Kernel panic - {}", rest.trim()))
}

fn finish(output: &mut Option<Output>) {
    if let Some(mut output) = output.take() {
        output.finish();
    }
}

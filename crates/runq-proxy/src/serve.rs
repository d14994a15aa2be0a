//! The proxy's main loop: the I/O around the [`Supervisor`]. It turns what the threads report
//! into inputs, carries out the supervisor's actions on the channel, the application's session,
//! the exec clients, the mirror and the children, and explains a failure with the logs.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use runq_mirror::{Mirror, Side};
use runq_session::{Endpoints, FrameWriter, HostSession, Link, OnStall};
use runq_shared::config::{GuestBoot, VmSettings};
use runq_shared::protocol::{Message, MAIN_SESSION, PROTOCOL_VERSION};
use runq_shared::timeline::{self, GuestMarks, Timeline};

use crate::boot_images;
use crate::children::Tracked;
use crate::dns::DnsRelay;
use crate::event::{Event, Events};
use crate::exec::Client;
use crate::supervisor::{Action, Deadline, Failure, Input, Supervisor};
use runq_shared::log_tail::log_tail;
use runq_shared::qemu::Paths;

/// How long the exec clients' writers have for their last frames once the container ended.
const CLIENTS_GRACE: Duration = Duration::from_secs(2);

/// How long a guest that reported the exit may take to power off before QEMU is killed.
const POWER_OFF_GRACE: Duration = Duration::from_secs(10);
/// How long the channel is read after QEMU or virtiofsd ended: once QEMU is gone the rest of
/// the channel is in the socket already.
const DRAIN_GRACE: Duration = Duration::from_secs(3);

/// The processes besides QEMU that serve the VM.
pub struct Helpers {
    /// The root file system's server.
    pub virtiofsd: Option<Tracked>,
    /// The NIC's backend in a shared network namespace.
    pub passt: Option<Tracked>,
}

struct Proxy {
    vm: VmSettings,
    /// Localhost is shared with the pod's other VMs.
    mirror_localhost: bool,
    qemu: Tracked,
    helpers: Helpers,
    paths: Paths,
    channel: Option<FrameWriter>,
    channel_socket: Option<UnixStream>,
    /// Told when a write to the guest timed out, by whichever thread wrote.
    on_stall: OnStall,
    main: HostSession,
    /// The connection of every exec client, by session.
    clients: HashMap<u32, Client>,
    /// The threads writing to exec clients, given a moment at the end for their last frames.
    client_writers: Vec<JoinHandle<()>>,
    /// Localhost shared with the pod's other VMs, once the guest runs.
    mirror: Option<Mirror>,
    /// The embedded-DNS relay, from the first query on.
    dns: Option<DnsRelay>,
    /// The boot timeline, when `RUNQ_TIMELINE` asked for it.
    timeline: Option<Timeline>,
    /// The guest's config until it is sent.
    boot: Option<GuestBoot>,
}

/// Runs until the container is over; returns the exit code for the container.
pub fn serve(
    vm: VmSettings,
    boot: GuestBoot,
    qemu: Tracked,
    helpers: Helpers,
    paths: Paths,
    timeline: Option<Timeline>,
    (events, queue): (Events, Receiver<Event>),
) -> Result<i32> {
    // Told when the guest stopped reading, by the application's session threads or by the
    // session's sends from this loop, which must not wait on its own full queue: the flag
    // holds what a full queue drops.
    let stalled = Arc::new(AtomicBool::new(false));
    let on_stall: OnStall = {
        let stalled = Arc::clone(&stalled);
        Arc::new(move || {
            stalled.store(true, Ordering::Release);
            let _ = events.try_send(Event::Input(stopped_reading()));
        })
    };
    let mut supervisor = Supervisor::new(!vm.disks.is_empty(), boot.host.embedded_dns);
    let mut proxy = Proxy {
        vm,
        mirror_localhost: boot.host.network.mirror_localhost,
        qemu,
        helpers,
        paths,
        channel: None,
        channel_socket: None,
        main: HostSession::new(Endpoints::of_this_process(), boot.config.process.terminal)
            .on_stall(Arc::clone(&on_stall)),
        on_stall,
        clients: HashMap::new(),
        client_writers: Vec::new(),
        mirror: None,
        dns: None,
        timeline,
        boot: Some(boot),
    };
    let boot_deadline = Instant::now() + Duration::from_secs(proxy.vm.boot_timeout_secs.into());
    let mut power_off_deadline = None;
    let mut drain_deadline = None;
    let result = loop {
        let deadline = supervisor.deadline().map(|deadline| match deadline {
            Deadline::Boot => boot_deadline,
            Deadline::PowerOff => {
                *power_off_deadline.get_or_insert_with(|| Instant::now() + POWER_OFF_GRACE)
            }
            Deadline::Drain => *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN_GRACE),
        });
        if stalled.swap(false, Ordering::AcqRel) {
            if let Some(end) = proxy.step(&mut supervisor, stopped_reading()) {
                break end;
            }
        }
        let event = match deadline {
            None => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => queue.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        let input = match event {
            Ok(event) => match proxy.input_for(event) {
                Some(input) => input,
                None => continue,
            },
            Err(RecvTimeoutError::Timeout) => Input::DeadlinePassed,
            Err(RecvTimeoutError::Disconnected) => {
                break Err(anyhow!("internal error: every event source ended"))
            }
        };
        if let Some(end) = proxy.step(&mut supervisor, input) {
            break end;
        }
    };
    // Nobody takes events any more: a thread's send fails now instead of waiting. Nothing
    // more goes to the guest either: a write that waits on a guest that stopped reading (up
    // to its timeout, one writer after the other) ends now.
    drop(queue);
    if let Some(socket) = &proxy.channel_socket {
        let _ = socket.shutdown(std::net::Shutdown::Both);
    }
    if let Some(timeline) = proxy.timeline.as_mut() {
        timeline.mark("vm_exit");
    }
    proxy.main.finish();
    if let Some(timeline) = &proxy.timeline {
        eprintln!("{}", timeline.line());
    }
    for action in supervisor.finish() {
        // Only messages to clients, which end their sessions.
        let _ = proxy.carry_out(action);
    }
    proxy.stop_children();
    proxy.let_clients_have_their_last_frames();
    result
}

impl Proxy {
    /// The supervisor's input for a thread's event; `None` for what only the loop needs.
    fn input_for(&mut self, event: Event) -> Option<Input> {
        match event {
            Event::Input(input) => {
                if let Input::ExecClientGone { session, .. } = &input {
                    self.clients.remove(session);
                }
                Some(input)
            }
            Event::Connected { writer, socket } => {
                self.channel = Some(writer);
                self.channel_socket = Some(socket);
                Some(Input::ChannelConnected)
            }
            Event::ExecClientConnected {
                session,
                client,
                writer,
            } => {
                self.clients.insert(session, client);
                self.client_writers.retain(|writer| !writer.is_finished());
                self.client_writers.push(writer);
                None
            }
            Event::ChildExited { pid, status } => {
                if pid == self.qemu.pid() {
                    Some(Input::QemuEnded(status))
                } else if Some(pid) == self.helpers.virtiofsd.as_ref().map(Tracked::pid) {
                    Some(Input::VirtiofsdEnded(status))
                } else {
                    None
                }
            }
        }
    }

    /// Feeds one input and what carrying out its actions brings back; the container's end,
    /// once known.
    fn step(&mut self, supervisor: &mut Supervisor, input: Input) -> Option<Result<i32>> {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            for action in supervisor.handle(input) {
                let consequence = match action {
                    Action::End(end) => return Some(end.map_err(|f| self.explain(f))),
                    action => self.carry_out(action),
                };
                match consequence {
                    Ok(next) => inputs.extend(next),
                    Err(error) => return Some(Err(error)),
                }
            }
        }
        None
    }

    /// Carries out one action; an input when it had a consequence the supervisor must know.
    fn carry_out(&mut self, action: Action) -> Result<Option<Input>> {
        match action {
            Action::ToGuest(message) => return self.to_guest(&message),
            Action::SendConfig => {
                let mut boot = self.boot.take().context("the config was sent twice")?;
                boot.host.wall_clock_ns = Some(runq_shared::timeline::wall_clock_ns());
                let json = serde_json::to_vec(&boot)?;
                return self.to_guest(&Message::Config { json });
            }
            Action::ToClient(session, message) => {
                let ends = message.ends_session();
                let client = match ends {
                    true => self.clients.remove(&session),
                    false => self.clients.get(&session).cloned(),
                };
                let undelivered = match client {
                    Some(client) => client.send(message).err(),
                    None => Some(message),
                };
                if let (Some(message), false) = (undelivered, ends) {
                    self.clients.remove(&session);
                    return Ok(Some(Input::ExecClientGone {
                        session,
                        undelivered: Some(message),
                    }));
                }
            }
            Action::ToMainSession(message) => {
                if let Err(overrun) = self.main.take_stdio(message) {
                    return Ok(Some(Input::Violation(format!(
                        "the application sent {overrun}"
                    ))));
                }
            }
            Action::StartMainSession => {
                self.start_main_session()?;
                crate::start_report::started();
            }
            Action::SignalMain(signal) => self.main.signal(signal),
            Action::ResizeMain => self.main.window_changed(),
            Action::FinishOutput => self.main.finish(),
            Action::ToMirror(message) => {
                if let Some(mirror) = self.mirror() {
                    mirror.deliver(message);
                }
            }
            Action::ResolveDns { id, packet } => {
                if self.dns.is_none() {
                    if let Some(link) = self.guest_link() {
                        self.dns = Some(DnsRelay::start(link).context("start the DNS relay")?);
                    }
                }
                if let Some(dns) = &self.dns {
                    dns.resolve(id, packet);
                }
            }
            Action::Timeline(json) => self.add_guest_marks(&json),
            Action::KillQemu => self.qemu.kill(),
            Action::Report(line) => {
                crate::start_report::failed(&line);
                eprintln!("runq: {line}");
            }
            // Handled by `step`.
            Action::End(_) => {}
        }
        Ok(None)
    }

    /// A guest that stopped reading its port is a violation, not a stall of the proxy.
    fn to_guest(&self, message: &Message) -> Result<Option<Input>> {
        let channel = self
            .channel
            .as_ref()
            .ok_or_else(|| anyhow!("the control channel is not connected"))?;
        match channel.send(message) {
            Ok(()) => Ok(None),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Ok(Some(stopped_reading()))
            }
            // QEMU is gone: the channel's reader and QEMU's end tell the container's end.
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                Ok(None)
            }
            Err(e) => Err(anyhow!("send to the guest: {e}")),
        }
    }

    fn start_main_session(&mut self) -> Result<()> {
        let _ = self.mirror();
        let channel = self
            .channel
            .clone()
            .ok_or_else(|| anyhow!("guest started before the channel connected"))?;
        self.main.start(MAIN_SESSION, channel)?;
        // The kernel and initrd have done their work; refused without CAP_SYS_NICE, which
        // only costs memory.
        let images = [self.paths.kernel.as_path(), self.paths.initrd.as_path()];
        if let Err(error) = boot_images::page_out(&self.qemu, &images) {
            if self.vm.debug {
                eprintln!("runq: could not page the boot images out of QEMU: {error}");
            }
        }
        Ok(())
    }

    /// The mirror, started the first time it is needed: when the guest runs, or when its
    /// mirror reports first.
    fn mirror(&mut self) -> Option<&Mirror> {
        if self.mirror.is_none() && self.mirror_localhost {
            let link = self.guest_link()?;
            let send = Box::new(move |message: &Message| link.send(message));
            match Mirror::spawn(Side::Host, self.vm.mirror, send) {
                Ok(mirror) => self.mirror = Some(mirror),
                Err(error) => eprintln!("runq: localhost is not shared with the pod: {error}"),
            }
        }
        self.mirror.as_ref()
    }

    /// The channel for a thread that writes to the guest, which reports a stall as the
    /// session's threads do.
    fn guest_link(&self) -> Option<Link> {
        Some(Link {
            writer: self.channel.clone()?,
            on_stall: Some(Arc::clone(&self.on_stall)),
        })
    }

    fn add_guest_marks(&mut self, json: &[u8]) {
        let received = timeline::wall_clock_ns();
        if let Some(timeline) = self.timeline.as_mut() {
            match serde_json::from_slice::<GuestMarks>(json) {
                Ok(marks) => timeline.add_guest(&marks, received),
                Err(error) => eprintln!("runq: unreadable timeline from the guest: {error}"),
            }
        }
    }

    /// The failure's message, with what the logs say about it.
    fn explain(&self, failure: Failure) -> anyhow::Error {
        let paths = &self.paths;
        match failure {
            Failure::ProtocolMismatch { guest } => anyhow!(
                "the guest init speaks protocol {guest}, this proxy {PROTOCOL_VERSION}: \
                 reinstall runq so that initrd and proxy match"
            ),
            Failure::VirtiofsdEnded(status) => anyhow!(
                "virtiofsd (the root file system server) ended with {status} while the VM was \
                 running{}",
                log_excerpt(&paths.virtiofsd_log, "virtiofsd")
            ),
            Failure::QemuEnded(status) => anyhow!(
                "QEMU ended with {status} before the application did{}{}{}",
                panic_line(&paths.console_log)
                    .map(|line| format!(": the guest kernel panicked ({line})"))
                    .unwrap_or_default(),
                log_excerpt(&paths.qemu_log, "QEMU"),
                log_excerpt(&paths.console_log, "guest console")
            ),
            Failure::BootTimeout => anyhow!(
                "the guest did not start the application within {} s (boot timeout){}",
                self.vm.boot_timeout_secs,
                log_excerpt(&paths.console_log, "guest console")
            ),
            Failure::ChannelLost => anyhow!(
                "the control channel to the guest closed while QEMU kept running{}",
                log_excerpt(&paths.console_log, "guest console")
            ),
            Failure::Violation(what) => {
                anyhow!("the guest broke the control protocol ({what}); the VM is stopped")
            }
        }
    }

    /// Waits a moment for the exec clients' writers to write what is queued (each session's
    /// exit), never for a client that stopped reading.
    fn let_clients_have_their_last_frames(&mut self) {
        self.clients.clear();
        let deadline = Instant::now() + CLIENTS_GRACE;
        while self.client_writers.iter().any(|w| !w.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop_children(&self) {
        let helpers = [self.helpers.virtiofsd.as_ref(), self.helpers.passt.as_ref()];
        for child in std::iter::once(&self.qemu).chain(helpers.into_iter().flatten()) {
            child.kill();
        }
    }
}

fn stopped_reading() -> Input {
    Input::Violation(format!(
        "it read nothing from its control channel for {} s",
        crate::channel::WRITE_TIMEOUT.as_secs()
    ))
}

fn log_excerpt(path: &Path, name: &str) -> String {
    let text = log_tail(path, 15);
    if text.is_empty() {
        String::new()
    } else {
        format!("\n--- last lines of the {name} log ---\n{text}")
    }
}

/// The guest kernel's panic message, if the console log has one.
fn panic_line(console_log: &Path) -> Option<String> {
    let log = std::fs::read_to_string(console_log).ok()?;
    log.lines()
        .find_map(|line| line.split_once("Kernel panic - ").map(|(_, rest)| rest))
        .map(|rest| format!("Kernel panic - {}", rest.trim()))
}

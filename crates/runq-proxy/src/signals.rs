//! Signals the proxy receives as container PID 1: children ending, the terminal resizing, and
//! everything else, which belongs to the application in the guest.

use std::sync::mpsc::Sender;

use nix::sys::signal::SigSet;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use crate::event::Event;

/// Blocks every signal in the calling thread; threads started later inherit the mask, so only
/// the signal thread ever sees them. Children get a clean mask from std's spawn.
pub fn block_all() -> nix::Result<()> {
    SigSet::all().thread_block()
}

pub fn spawn_listener(events: Sender<Event>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || listen(events))
        .map(drop)
}

fn listen(events: Sender<Event>) {
    let set = SigSet::all();
    loop {
        let Some(signal) = runq_stdio::wait_for_signal(&set) else {
            continue;
        };
        let event = match signal {
            libc::SIGCHLD => {
                reap(&events);
                continue;
            }
            // The proxy's own writes to a closed pipe; not meant for the application.
            libc::SIGPIPE => continue,
            libc::SIGWINCH => Event::WindowChanged,
            other => Event::Signal(other),
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

fn reap(events: &Sender<Event>) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                let _ = events.send(Event::ChildExited {
                    pid: pid.as_raw(),
                    status: describe(status),
                });
            }
        }
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("killed by {signal}"),
        other => format!("{other:?}"),
    }
}

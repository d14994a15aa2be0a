//! Signals the proxy receives as container PID 1: children ending (reaped here, orphans
//! included), the terminal resizing, and everything else, which belongs to the application in
//! the guest.

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use runq_session::signals::{self, Received};

use crate::event::{Event, Events};
use crate::supervisor::{Input, CLEAN_EXIT};

pub fn spawn_listener(events: Events) -> std::io::Result<()> {
    signals::spawn_signal_thread(move |received| {
        let event = match received {
            Received::ChildEnded => return reap(&events),
            Received::WindowChanged => Event::Input(Input::WindowChanged),
            Received::ForProcess(signal) => Event::Input(Input::Signal(signal)),
        };
        events.send(event).is_ok()
    })
}

/// Reaps every child that ended; false once nobody listens.
fn reap(events: &Events) -> bool {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return true,
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                let event = Event::ChildExited {
                    pid: pid.as_raw(),
                    status: describe(status),
                };
                if events.send(event).is_err() {
                    return false;
                }
            }
        }
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, 0) => CLEAN_EXIT.to_string(),
        WaitStatus::Exited(_, code) => format!("exit status {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("killed by {signal}"),
        other => format!("{other:?}"),
    }
}

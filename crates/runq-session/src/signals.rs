//! The one signal thread of a host-side session process (the proxy, an exec client): every
//! signal is blocked in every other thread and taken here, in one place.

use nix::sys::signal::SigSet;

/// What a signal means to a session process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGCHLD: a child of this process ended.
    ChildEnded,
    /// SIGWINCH: the terminal was resized; sent as a size, not as a signal.
    WindowChanged,
    /// Anything else belongs to the session's process.
    ForProcess(i32),
}

impl Received {
    /// `None` for SIGPIPE: this process's own writes to a closed pipe, no one else's business.
    pub fn of(signal: libc::c_int) -> Option<Received> {
        match signal {
            libc::SIGPIPE => None,
            libc::SIGCHLD => Some(Received::ChildEnded),
            libc::SIGWINCH => Some(Received::WindowChanged),
            other => Some(Received::ForProcess(other)),
        }
    }
}

/// Blocks every signal in the calling thread; threads started later inherit the mask, so only
/// the signal thread ever sees them. Children get a clean mask from std's spawn.
pub fn block_all() -> nix::Result<()> {
    SigSet::all().thread_block()
}

/// Starts the signal thread: `deliver` gets each signal until it returns false.
pub fn spawn_signal_thread(
    mut deliver: impl FnMut(Received) -> bool + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = SigSet::all();
            loop {
                let mut signal: libc::c_int = 0;
                // SAFETY: sigwait reads the set and writes one int we own.
                if unsafe { libc::sigwait(set.as_ref(), &mut signal) } != 0 {
                    continue;
                }
                if let Some(received) = Received::of(signal) {
                    if !deliver(received) {
                        return;
                    }
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_sorted_once_for_every_session_process() {
        assert_eq!(Received::of(libc::SIGPIPE), None);
        assert_eq!(Received::of(libc::SIGCHLD), Some(Received::ChildEnded));
        assert_eq!(Received::of(libc::SIGWINCH), Some(Received::WindowChanged));
        assert_eq!(
            Received::of(libc::SIGTERM),
            Some(Received::ForProcess(libc::SIGTERM))
        );
    }
}

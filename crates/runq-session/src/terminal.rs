//! This process's terminal, when the session has one.

use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::termios::{self, SetArg};

/// With a terminal the guest's pty does the line discipline; ours must pass bytes through.
pub fn make_raw() {
    let stdin = std::io::stdin();
    if let Ok(mut attrs) = termios::tcgetattr(&stdin) {
        termios::cfmakeraw(&mut attrs);
        let _ = termios::tcsetattr(&stdin, SetArg::TCSANOW, &attrs);
    }
}

/// Whether the host pty, as the engine left it, maps "\n" to "\r\n" on output.
pub fn terminal_onlcr() -> bool {
    termios::tcgetattr(std::io::stdin())
        .map(|attrs| {
            attrs.output_flags.contains(termios::OutputFlags::OPOST)
                && attrs.output_flags.contains(termios::OutputFlags::ONLCR)
        })
        .unwrap_or(true)
}

/// The terminal's size, if fd 0 is one.
pub fn window_size() -> Option<(u16, u16)> {
    // SAFETY: fd 0 is open for the life of the process.
    let fd = unsafe { BorrowedFd::borrow_raw(0) };
    let mut size: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

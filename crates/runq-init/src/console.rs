//! Diagnostics on the serial console: the host keeps them for error reports.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn log(message: &str) {
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let uptime = uptime.split_whitespace().next().unwrap_or("?");
    // The kernel console is stderr of PID 1; nothing else useful can be done if it fails.
    let _ = writeln!(std::io::stderr(), "[{uptime}] runq-init: {message}");
}

pub fn debug(message: &str) {
    if DEBUG.load(Ordering::Relaxed) {
        log(message);
    }
}

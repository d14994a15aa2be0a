//! Tells `runq start` that the application runs, or why it never will: one line on the FIFO
//! runq create made in runq's private directory and handed over as a descriptor (see
//! [`runq_shared::start_report`]).

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use runq_shared::start_report::StartReport;

struct Report {
    fifo: File,
    said: bool,
    /// The template that did not load, for `runq start` to discard.
    failed_template: Option<String>,
}

/// Held for the proxy's life: `runq start` tells the proxy's end by its pidfd, and a line
/// written before must stay readable.
static REPORT: Mutex<Option<Report>> = Mutex::new(None);

/// Keeps the FIFO runq create handed over, opened for reading and writing, so that no
/// write waits for a reader: `runq start` may not be there (a caller that ran runc's own
/// start); a line then stays unread in the pipe.
pub fn open(fifo: File) {
    if let Ok(mut report) = REPORT.lock() {
        *report = Some(Report {
            fifo,
            said: false,
            failed_template: None,
        });
    }
}

/// The guest has exec'd the application.
pub fn started() {
    let failed_template = REPORT
        .lock()
        .ok()
        .and_then(|held| held.as_ref().and_then(|held| held.failed_template.clone()));
    say(match failed_template {
        Some(key) => StartReport::StartedWithoutTemplate(key),
        None => StartReport::Started,
    });
}

/// The template `key` did not load: the report that the application started says so.
pub fn template_failed(key: &str) {
    if let Ok(mut held) = REPORT.lock() {
        if let Some(held) = held.as_mut() {
            held.failed_template = Some(key.to_string());
        }
    }
}

/// The application will never run; the first reason given is the one `runq start` shows.
pub fn failed(reason: &str) {
    say(StartReport::Failed(reason.to_string()));
}

fn say(report: StartReport) {
    let Ok(mut held) = REPORT.lock() else {
        return;
    };
    if let Some(held) = held.as_mut().filter(|held| !held.said) {
        held.said = true;
        // One write shorter than PIPE_BUF into an empty pipe: whole, and never waiting.
        let _ = held.fifo.write(&report.encode());
    }
}

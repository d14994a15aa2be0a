//! Tells `runq start` that the application runs, or why it never will: one line on the FIFO
//! runq create left in runq's private directory (see [`runq_shared::start_report`]).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use runq_shared::layout::{own_root, START_REPORT_FIFO};
use runq_shared::start_report::StartReport;

struct Report {
    fifo: File,
    said: bool,
}

/// Held for the proxy's life: `runq start` tells the proxy's end by its pidfd, and a line
/// written before must stay readable.
static REPORT: Mutex<Option<Report>> = Mutex::new(None);

/// Opens the FIFO while runq's private directory is still mounted. Read and write, so that
/// the open never waits for a reader: `runq start` may not be there (a caller that ran runc's
/// own start); a line then stays unread in the pipe.
pub fn open() -> Result<()> {
    let path = Path::new(own_root::CONFIG).join(START_REPORT_FIFO);
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    if !fifo
        .metadata()
        .with_context(|| path.display().to_string())?
        .file_type()
        .is_fifo()
    {
        bail!("{} is not runq's FIFO", path.display());
    }
    if let Ok(mut report) = REPORT.lock() {
        *report = Some(Report { fifo, said: false });
    }
    Ok(())
}

/// The guest has exec'd the application.
pub fn started() {
    say(StartReport::Started);
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

//! A client of QEMU's monitor (QMP), one JSON object a line, for the host side's two uses:
//! the template builder saves a VM through it, and the proxy learns whether a restore
//! loaded. QEMU is the peer: every line read is bounded, and every read has a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use thiserror::Error;

/// The longest line read from QEMU (`query-migrate`'s answer is well under 1 KiB).
pub const LINE_LIMIT: u64 = 64 << 10;

#[derive(Debug, Error)]
pub enum QmpError {
    #[error("QEMU's monitor: {0}")]
    Io(#[from] std::io::Error),
    #[error("QEMU closed its monitor")]
    Closed,
    #[error("QEMU's monitor sent what is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("QEMU refused {command}: {error}")]
    Refused { command: String, error: String },
    #[error("QEMU's monitor did not answer in time")]
    Timeout,
    #[error("{0}")]
    Migration(String),
}

pub struct Qmp {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    deadline: Instant,
}

impl Qmp {
    /// Reads the greeting and leaves negotiation mode; every later read ends by `deadline`.
    pub fn over(stream: UnixStream, deadline: Instant) -> Result<Qmp, QmpError> {
        let reader = BufReader::new(stream.try_clone()?);
        let mut qmp = Qmp {
            stream,
            reader,
            deadline,
        };
        qmp.line()?;
        qmp.execute(r#"{"execute":"qmp_capabilities"}"#, None)?;
        Ok(qmp)
    }

    /// Migrates the VM into `state`, handed over as a descriptor, in the mapped-ram format:
    /// each page at its own offset, so that a restore reads the RAM in a few large reads
    /// straight into the guest's memory instead of page by page from a stream. Not stopped
    /// first: the restored VM keeps the run state it was saved in, and the guest idles in its
    /// read.
    pub fn save(&mut self, state: OwnedFd) -> Result<(), QmpError> {
        self.execute(
            r#"{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"events","state":true},{"capability":"mapped-ram","state":true}]}}"#,
            None,
        )?;
        let added = self.execute(r#"{"execute":"add-fd"}"#, Some(state))?;
        let set = added["fdset-id"].as_u64().ok_or_else(|| {
            QmpError::Migration(format!("QEMU's add-fd answered {added} without a set"))
        })?;
        self.execute(
            &format!(r#"{{"execute":"migrate","arguments":{{"uri":"file:/dev/fdset/{set}"}}}}"#),
            None,
        )?;
        loop {
            let line = self.line()?;
            if line["event"] == "MIGRATION" {
                match line["data"]["status"].as_str() {
                    Some("completed") => break,
                    Some("failed") | Some("cancelled") => {
                        let info = self.execute(r#"{"execute":"query-migrate"}"#, None)?;
                        return Err(QmpError::Migration(format!(
                            "the migration failed: {}",
                            info["error-desc"]
                        )));
                    }
                    _ => {}
                }
            }
        }
        let _ = self.execute(r#"{"execute":"quit"}"#, None);
        Ok(())
    }

    /// Starts loading the template's stream QEMU was given as descriptor set `set` (see
    /// [`crate::qemu::Boot::Restore`]), in the format [`Qmp::save`] wrote.
    pub fn load(&mut self, set: u32) -> Result<(), QmpError> {
        self.execute(
            r#"{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"mapped-ram","state":true}]}}"#,
            None,
        )?;
        self.execute(
            &format!(
                r#"{{"execute":"migrate-incoming","arguments":{{"uri":"file:/dev/fdset/{set}"}}}}"#
            ),
            None,
        )?;
        Ok(())
    }

    /// Waits until a VM started with `-incoming` runs: its stream loaded and the VM resumed.
    /// QEMU ends on a stream it cannot load, which closes the monitor.
    pub fn wait_running(&mut self) -> Result<(), QmpError> {
        // Events before negotiation are not sent: ask first, then wait for the resume.
        let status = self.execute(r#"{"execute":"query-status"}"#, None)?;
        if status["status"] == "running" {
            return Ok(());
        }
        loop {
            if self.line()?["event"] == "RESUME" {
                return Ok(());
            }
        }
    }

    /// Has QEMU close the descriptors of fd set `set` once nothing of it uses them.
    pub fn remove_fdset(&mut self, set: u32) -> Result<(), QmpError> {
        self.execute(
            &format!(r#"{{"execute":"remove-fd","arguments":{{"fdset-id":{set}}}}}"#),
            None,
        )
        .map(drop)
    }

    /// Sends a command, with a descriptor where given, and returns its `return`.
    pub fn execute(
        &mut self,
        command: &str,
        fd: Option<OwnedFd>,
    ) -> Result<serde_json::Value, QmpError> {
        match fd {
            None => self.stream.write_all(command.as_bytes())?,
            Some(fd) => {
                use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
                let fds = [fd.as_raw_fd()];
                let iov = [std::io::IoSlice::new(command.as_bytes())];
                let sent = sendmsg::<()>(
                    self.stream.as_raw_fd(),
                    &iov,
                    &[ControlMessage::ScmRights(&fds)],
                    MsgFlags::empty(),
                    None,
                )
                .map_err(std::io::Error::from)?;
                if sent != command.len() {
                    return Err(QmpError::Io(std::io::Error::other(format!(
                        "took {sent} of {} bytes",
                        command.len()
                    ))));
                }
            }
        }
        loop {
            let line = self.line()?;
            if let Some(error) = line.get("error") {
                return Err(QmpError::Refused {
                    command: command.to_string(),
                    error: error.to_string(),
                });
            }
            if let Some(value) = line.get("return") {
                return Ok(value.clone());
            }
        }
    }

    fn line(&mut self) -> Result<serde_json::Value, QmpError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(QmpError::Timeout);
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut text = String::new();
        let read = (&mut self.reader).take(LINE_LIMIT).read_line(&mut text);
        match read {
            Ok(0) => Err(QmpError::Closed),
            Ok(_) => Ok(serde_json::from_str(&text)?),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(QmpError::Timeout)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A monitor that says its greeting and then `lines`, whatever it is asked: the client
    /// reads one answer per command, in order.
    fn fake_qemu(lines: &'static [&'static str]) -> UnixStream {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let _ = theirs.write_all(b"{\"QMP\":{}}\n");
            for line in lines {
                let _ = theirs.write_all(line.as_bytes());
            }
            // Held open until the client's commands are in, then closed: QEMU ending.
            let mut sink = [0u8; 4096];
            let _ = theirs.set_read_timeout(Some(Duration::from_millis(200)));
            while matches!(theirs.read(&mut sink), Ok(n) if n > 0) {}
        });
        ours
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn a_restore_that_resumes_is_running() {
        let qemu = fake_qemu(&[
            "{\"return\":{}}\n",
            "{\"return\":{\"status\":\"inmigrate\",\"running\":false}}\n",
            "{\"timestamp\":{},\"event\":\"RESUME\"}\n",
        ]);
        Qmp::over(qemu, soon()).unwrap().wait_running().unwrap();
    }

    #[test]
    fn an_fd_set_qemu_will_not_remove_is_an_error() {
        let qemu = fake_qemu(&[
            "{\"return\":{}}\n",
            "{\"error\":{\"class\":\"GenericError\",\"desc\":\"File descriptor named 'fdset-id:1' not found\"}}\n",
        ]);
        let error = Qmp::over(qemu, soon())
            .unwrap()
            .remove_fdset(1)
            .unwrap_err();
        assert!(
            matches!(&error, QmpError::Refused { command, .. } if command.contains("\"fdset-id\":1")),
            "{error}"
        );
    }

    #[test]
    fn a_qemu_that_ends_during_the_restore_is_told_apart() {
        let qemu = fake_qemu(&[
            "{\"return\":{}}\n",
            "{\"return\":{\"status\":\"inmigrate\",\"running\":false}}\n",
        ]);
        let error = Qmp::over(qemu, soon()).unwrap().wait_running().unwrap_err();
        assert!(matches!(error, QmpError::Closed), "{error}");
    }

    #[test]
    fn a_silent_monitor_times_out_and_an_endless_line_is_cut() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let error = Qmp::over(ours, Instant::now() + Duration::from_millis(100))
            .err()
            .unwrap();
        assert!(matches!(error, QmpError::Timeout), "{error}");

        let (ours, mut theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 64 << 10];
            while theirs.write_all(&chunk).is_ok() {}
        });
        let error = Qmp::over(ours, soon()).err().unwrap();
        assert!(matches!(error, QmpError::Json(_)), "{error}");
    }
}

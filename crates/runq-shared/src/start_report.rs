//! How the proxy tells `runq start` that the application runs, or why it never will.
//!
//! runc's `start` returns once the container's process runs; under runq that process is the
//! proxy, and the application only runs once the guest has booted. So `runq create` makes a
//! FIFO in runq's private directory ([`crate::layout::START_REPORT_FIFO`]), the proxy opens it
//! before it unmounts that directory, and writes one line: [`StartReport::Started`] when the
//! guest has exec'd the application, or [`StartReport::Failed`] with the reason. `runq start`
//! holds the read end from before it calls runc, so no line is lost, and waits for it.

/// One line, written at once: shorter than `PIPE_BUF`, so a write is never split.
pub const MAX_LINE: usize = 4000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartReport {
    /// The guest has exec'd the application.
    Started,
    /// The guest has exec'd the application, but booted: the template with this key, handed
    /// by runq create, did not load, and is to be built again.
    StartedWithoutTemplate(String),
    /// The application will never run, and why.
    Failed(String),
}

const STARTED: &str = "started";
const STARTED_WITHOUT_TEMPLATE: &str = "started-without-template ";
const FAILED: &str = "failed ";

impl StartReport {
    /// The line, newline included, the reason cut to fit [`MAX_LINE`] on a character boundary.
    pub fn encode(&self) -> Vec<u8> {
        let mut line = match self {
            StartReport::Started => STARTED.to_string(),
            StartReport::StartedWithoutTemplate(key) => format!("{STARTED_WITHOUT_TEMPLATE}{key}"),
            StartReport::Failed(reason) => {
                let flat: String = reason
                    .chars()
                    .map(|c| if c == '\n' { ' ' } else { c })
                    .collect();
                format!("{FAILED}{flat}")
            }
        };
        if line.len() > MAX_LINE - 1 {
            let mut end = MAX_LINE - 1;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
        }
        line.push('\n');
        line.into_bytes()
    }

    /// The report in the first line of `bytes`; `None` until a whole line is there, or when it
    /// is not a report at all.
    pub fn parse(bytes: &[u8]) -> Option<StartReport> {
        let end = bytes.iter().position(|&b| b == b'\n')?;
        let line = String::from_utf8_lossy(&bytes[..end]);
        if line == STARTED {
            Some(StartReport::Started)
        } else if let Some(key) = line.strip_prefix(STARTED_WITHOUT_TEMPLATE) {
            // A key names a directory: only ever the hex runq makes (see `template::Shape::key`).
            let hex = !key.is_empty()
                && key.len() <= 64
                && key
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            hex.then(|| StartReport::StartedWithoutTemplate(key.to_string()))
        } else {
            line.strip_prefix(FAILED)
                .map(|reason| StartReport::Failed(reason.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_back_as_written() {
        for report in [
            StartReport::Started,
            StartReport::StartedWithoutTemplate("0123456789abcdef".into()),
            StartReport::Failed("guest: mount the root: no such device".into()),
        ] {
            assert_eq!(StartReport::parse(&report.encode()), Some(report));
        }
    }

    #[test]
    fn a_reason_is_one_line_and_fits_one_atomic_write() {
        let long = format!("first\nsecond {}", "é".repeat(5000));
        let line = StartReport::Failed(long).encode();
        assert!(line.len() <= MAX_LINE);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        match StartReport::parse(&line) {
            Some(StartReport::Failed(reason)) => assert!(reason.starts_with("first second é")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn half_a_line_or_anything_else_is_no_report() {
        assert_eq!(StartReport::parse(b"started"), None);
        assert_eq!(StartReport::parse(b"begun\n"), None);
        assert_eq!(StartReport::parse(b""), None);
        // A template's key is hex, never a path.
        assert_eq!(
            StartReport::parse(b"started-without-template ../../etc\n"),
            None
        );
        assert_eq!(StartReport::parse(b"started-without-template \n"), None);
    }
}

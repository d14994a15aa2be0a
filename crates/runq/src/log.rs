//! Errors and warnings as runc writes them, so engines show them to the user: to `--log` (in
//! runc's JSON form with `--log-format json`) and to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(Debug, Clone, Default)]
pub struct Logger {
    pub file: Option<PathBuf>,
    pub json: bool,
}

impl Logger {
    pub fn error(&self, message: &str) {
        eprintln!("runq: {message}");
        self.write("error", message);
    }

    /// Warnings go to the log only: stderr of `create` is the container's business.
    pub fn warning(&self, message: &str) {
        self.write("warning", message);
    }

    fn write(&self, level: &str, message: &str) {
        let Some(path) = &self.file else { return };
        let line = format_line(self.json, level, message, SystemTime::now());
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            // Logging is best effort: the error itself already went to stderr.
            let _ = file.write_all(line.as_bytes());
        }
    }
}

fn format_line(json: bool, level: &str, message: &str, at: SystemTime) -> String {
    let time = humantime::format_rfc3339_seconds(at).to_string();
    if json {
        let entry = serde_json::json!({ "level": level, "msg": message, "time": time });
        format!("{entry}\n")
    } else {
        format!("time={time:?} level={level} msg={message:?}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn json_line_has_runc_fields() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let line = format_line(true, "error", "bad \"thing\"", at);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["level"], "error");
        assert_eq!(value["msg"], "bad \"thing\"");
        assert_eq!(value["time"], "2023-11-14T22:13:20Z");
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn text_line_quotes_the_message() {
        let at = SystemTime::UNIX_EPOCH;
        let line = format_line(false, "warning", "a b", at);
        assert_eq!(
            line,
            "time=\"1970-01-01T00:00:00Z\" level=warning msg=\"a b\"\n"
        );
    }
}

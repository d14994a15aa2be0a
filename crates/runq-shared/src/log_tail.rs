//! The last lines of a helper's log (QEMU's, virtiofsd's, the guest console's) for an error
//! message. The guest writes the console log, so only its end is read, however long it grew.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The most of a log's end that is read.
const READ_AT_MOST: u64 = 16 << 10;

/// Its last `lines` non-empty lines; empty where it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file
        .seek(SeekFrom::Start(len.saturating_sub(READ_AT_MOST)))
        .is_err()
    {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.take(READ_AT_MOST).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_lines_of_the_end_are_read() {
        let path = std::env::temp_dir().join(format!("runq-log-tail-{}", std::process::id()));
        let mut text = "x".repeat(100 << 10);
        text.push_str("\nfirst\n\nsecond\nthird\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(log_tail(&path, 2), "second\nthird");
        assert!(log_tail(&path, 100).len() <= READ_AT_MOST as usize);
        assert_eq!(log_tail(&path.with_extension("missing"), 2), "");
        let _ = std::fs::remove_file(&path);
    }
}

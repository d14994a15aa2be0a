//! Container paths as an engine may write them: parsed without a panic, and what is accepted
//! keeps to the documented rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runq_shared::disks::{parse, parse_all};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(disk)) = parse(text) {
        assert!((1..=36).contains(&disk.id.len()));
        assert!(disk
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        if let Some((_, mount_point)) = &disk.mount {
            assert!(mount_point.starts_with('/') && mount_point.len() > 1);
        }
    }
    let _ = parse_all(text.lines());
});

//! Container paths as an engine may write them: parsed without a panic, and what is accepted
//! keeps to the documented rules. The same bytes as a disk's header, which the guest writes:
//! checked without a panic, and a raw disk is never refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runq_shared::disks::{check_image, parse, parse_all, DiskFormat};

fuzz_target!(|data: &[u8]| {
    assert!(check_image(DiskFormat::Raw, data).is_ok());
    let _ = check_image(DiskFormat::Qcow2, data);
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

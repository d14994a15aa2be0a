//! The container's root reaches the guest with its submounts (volumes), through virtiofs by
//! default or 9p on request; runq's own mounts stay out of the application's sight.

mod common;

use common::TestBundle;
use serde_json::json;

#[test]
fn a_bind_mounted_volume_is_shared_both_ways() {
    let bundle = TestBundle::busybox(&[
        "sh",
        "-c",
        "cat /data/from-host; echo from-guest > /data/from-guest",
    ]);
    let volume = tempfile::tempdir().unwrap();
    std::fs::write(volume.path().join("from-host"), "hello from the host\n").unwrap();
    bundle.edit(|spec| {
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind",
            "source": volume.path(), "options": ["rbind", "rw"]
        }));
    });
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "hello from the host\n");
    assert_eq!(
        std::fs::read_to_string(volume.path().join("from-guest")).unwrap(),
        "from-guest\n"
    );
}

#[test]
fn the_root_is_virtiofs_by_default_and_9p_on_request() {
    let bundle = TestBundle::busybox(&["sh", "-c", "grep ' / ' /proc/mounts | cut -d' ' -f3,4"]);
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert!(
        outcome.stdout_text().starts_with("virtiofs "),
        "{outcome:?}"
    );

    let outcome = bundle.run_with(&["--fs", "9p", "--9pcache", "loose"], b"");
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    let text = outcome.stdout_text();
    assert!(text.starts_with("9p "), "{text}");
    assert!(text.contains(",loose,"), "{text}");
}

#[test]
fn runqs_own_mounts_are_hidden_from_the_application() {
    let bundle = TestBundle::busybox(&["sh", "-c", "ls -A /.runq | wc -l; ls /proc/1/root/.runq"]);
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(
        outcome.stdout_text().lines().next(),
        Some("0"),
        "{outcome:?}"
    );
}

#[test]
fn a_read_only_root_refuses_writes_as_under_runc() {
    let bundle = TestBundle::busybox(&["sh", "-c", "touch /newfile 2>&1; echo status=$?"]);
    bundle.edit(|spec| spec["root"]["readonly"] = true.into());
    let reference = bundle.run_under_runc();
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), reference.stdout_text());
    assert!(
        outcome.stdout_text().contains("Read-only file system"),
        "{outcome:?}"
    );
    assert!(!bundle.rootfs().join("newfile").exists());
}

#[test]
fn runqs_tmpfs_flag_mounts_a_tmpfs_in_every_container() {
    let bundle =
        TestBundle::busybox(&["sh", "-c", "grep ' /scratch ' /proc/mounts | cut -d' ' -f3"]);
    let outcome = bundle.run_with(&["--tmpfs", "/scratch"], b"");
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "tmpfs\n");
}

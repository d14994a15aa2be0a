//! The main process's stdin, stdout and stderr: separate, binary clean, with end of file.

mod common;

use common::{sha256, TestBundle};

#[test]
fn stdin_piped_in_comes_back_out() {
    let bundle = TestBundle::busybox(&["cat"]);
    let outcome = bundle.run_with(&[], b"hello through the VM\n");
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "hello through the VM\n");
}

#[test]
fn stdout_and_stderr_arrive_separately() {
    let bundle = TestBundle::busybox(&["sh", "-c", "echo to-out; echo to-err >&2; echo more-out"]);
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "to-out\nmore-out\n");
    assert_eq!(outcome.stderr_text(), "to-err\n");
}

#[test]
fn megabytes_of_binary_output_keep_their_checksum() {
    let bundle = TestBundle::busybox(&["cat", "/blob"]);
    let blob: Vec<u8> = (0..6 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(bundle.rootfs().join("blob"), &blob).unwrap();
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "exit {}", outcome.code());
    assert_eq!(outcome.stdout.len(), blob.len());
    assert_eq!(sha256(&outcome.stdout), sha256(&blob));
}

#[test]
fn megabytes_of_binary_stdin_pass_through_both_ways() {
    let bundle = TestBundle::busybox(&["cat"]);
    let blob: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
        .collect();
    let outcome = bundle.run_with(&[], &blob);
    assert_eq!(outcome.code(), 0, "exit {}", outcome.code());
    assert_eq!(sha256(&outcome.stdout), sha256(&blob));
}

#[test]
fn the_application_sees_end_of_stdin() {
    let bundle = TestBundle::busybox(&["sh", "-c", "wc -c; echo done"]);
    let outcome = bundle.run_with(&[], b"12345");
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(
        outcome.stdout_text().split_whitespace().collect::<Vec<_>>(),
        ["5", "done"]
    );
}

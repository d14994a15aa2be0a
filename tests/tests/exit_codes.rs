//! Exit codes as runc and a shell give them.

mod common;

use common::TestBundle;

fn exit_code_of(args: &[&str], prepare: impl FnOnce(&TestBundle)) -> (i32, String) {
    let bundle = TestBundle::busybox(args);
    prepare(&bundle);
    let outcome = bundle.run();
    (outcome.code(), outcome.stderr_text())
}

#[test]
fn true_gives_0_and_false_gives_1() {
    assert_eq!(exit_code_of(&["true"], |_| {}).0, 0);
    assert_eq!(exit_code_of(&["false"], |_| {}).0, 1);
}

#[test]
fn the_applications_own_code_passes_through() {
    assert_eq!(exit_code_of(&["sh", "-c", "exit 42"], |_| {}).0, 42);
}

#[test]
fn a_file_that_is_not_executable_gives_126() {
    let (code, stderr) = exit_code_of(&["/etc/passwd"], |_| {});
    assert_eq!(code, 126, "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
}

#[test]
fn a_directory_gives_126() {
    assert_eq!(exit_code_of(&["/tmp"], |_| {}).0, 126);
}

#[test]
fn a_missing_command_gives_127() {
    let (code, stderr) = exit_code_of(&["no-such-command"], |_| {});
    assert_eq!(code, 127, "{stderr}");
    assert!(stderr.contains("no-such-command"), "{stderr}");
    assert_eq!(exit_code_of(&["/bin/missing"], |_| {}).0, 127);
}

//! With `process.terminal`, the application gets a pty with the caller's window size, and
//! output lines end exactly as under runc.

mod common;

use common::{runq_binary, TestBundle};

#[test]
fn the_application_gets_a_terminal_of_the_callers_size() {
    let bundle = TestBundle::busybox(&["sh", "-c", "tty; stty size; echo \"[$TERM]\""]);
    bundle.edit(|spec| spec["process"]["terminal"] = true.into());
    // `script` gives runq a terminal, as `docker run -t` or an interactive shell would.
    let inner = format!(
        "stty rows 31 cols 101; {} --root {} run --bundle {} {}",
        runq_binary().display(),
        bundle.state.display(),
        bundle.path().display(),
        bundle.id
    );
    let outcome = common::under_script(&inner);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    let text = outcome.stdout_text();
    assert!(text.contains("/dev/pts/"), "not a pty: {text:?}");
    assert!(
        text.contains("31 101\r\n"),
        "window size not passed on: {text:?}"
    );
    assert!(text.contains("[xterm]"), "{text:?}");
    assert!(!text.contains("\r\r\n"), "lines translated twice: {text:?}");
}

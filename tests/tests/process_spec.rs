//! What the application is given — user, groups, capabilities, no_new_privs, rlimits,
//! OOM score adjustment, seccomp — comes out the same as under runc, compared line by line in
//! one test each.

mod common;

use common::TestBundle;
use serde_json::json;

const STATUS_LINES: &str =
    "grep -E '^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status";

/// Runs the bundle under runc and under runq; both must succeed with the same stdout.
fn assert_same_as_runc(bundle: &TestBundle) -> String {
    bundle.same_as_runc().stdout_text()
}

#[test]
fn default_spec_identity_and_capabilities_match_runc() {
    let bundle = TestBundle::busybox(&["sh", "-c", STATUS_LINES]);
    let text = assert_same_as_runc(&bundle);
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
}

#[test]
fn a_user_with_groups_and_ambient_capabilities_matches_runc() {
    let bundle = TestBundle::busybox(&["sh", "-c", STATUS_LINES]);
    bundle.edit(|spec| {
        spec["process"]["user"] = json!({"uid": 65534, "gid": 65534, "additionalGids": [10, 20]});
        spec["process"]["noNewPrivileges"] = false.into();
        let caps = json!(["CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_KILL"]);
        spec["process"]["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": ["CAP_NET_BIND_SERVICE"], "ambient": ["CAP_NET_BIND_SERVICE"]
        });
    });
    let text = assert_same_as_runc(&bundle);
    assert!(text.contains("Uid:\t65534"), "{text}");
    assert!(text.contains("Groups:\t10 20"), "{text}");
    assert!(text.contains("CapAmb:\t0000000000000400"), "{text}");
}

#[test]
fn rlimits_match_runc() {
    let bundle = TestBundle::busybox(&[
        "sh",
        "-c",
        "grep -E '^Max (open files|processes|core file size)' /proc/self/limits",
    ]);
    bundle.edit(|spec| {
        spec["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 4096, "hard": 8192},
            {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 1048576}
        ]);
    });
    let text = assert_same_as_runc(&bundle);
    assert!(text.contains("4096"), "{text}");
}

/// The application's OOM score adjustment (issue 21); runc puts it on the proxy too, where
/// QEMU and virtiofsd inherit it. Raised only: this machine refuses runc itself a negative
/// one ("failed to update /proc/self/oom_score_adj: Permission denied").
#[test]
fn oom_score_adj_matches_runc() {
    for adjust in [500, 1000] {
        let bundle = TestBundle::busybox(&["cat", "/proc/self/oom_score_adj"]);
        bundle.edit(|spec| spec["process"]["oomScoreAdj"] = json!(adjust));
        let text = assert_same_as_runc(&bundle);
        assert_eq!(text.trim(), adjust.to_string());
    }
}

#[test]
fn a_seccomp_profile_is_enforced_in_the_guest_as_by_runc() {
    let bundle = TestBundle::busybox(&[
        "sh",
        "-c",
        "mkdir /tmp/denied 2>&1; echo status=$?; grep '^Seccomp:' /proc/self/status",
    ]);
    bundle.edit(|spec| {
        spec["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]
        });
    });
    let text = assert_same_as_runc(&bundle);
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(text.contains("status=1"), "{text}");
    assert!(text.contains("Seccomp:\t2"), "{text}");
}

#[test]
fn a_seccomp_profile_is_enforced_without_no_new_privs_too() {
    let bundle = TestBundle::busybox(&["sh", "-c", "grep '^Seccomp:' /proc/self/status"]);
    bundle.edit(|spec| {
        spec["process"]["noNewPrivileges"] = false.into();
        spec["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
        });
    });
    let text = assert_same_as_runc(&bundle);
    assert!(text.contains("Seccomp:\t2"), "{text}");
}

#[test]
fn the_specs_device_nodes_match_runc_and_driverless_ones_are_named() {
    let bundle = TestBundle::busybox(&[
        "sh",
        "-c",
        "for n in /dev/my-null /dev/my-zero /dev/sub/my-fifo /dev/no-driver; do \
         stat -c '%n %F %t:%T %a %u:%g' $n; done; echo x > /dev/my-null && echo null-writes",
    ]);
    bundle.edit(|spec| {
        spec["linux"]["devices"] = json!([
            {"path": "/dev/my-null", "type": "c", "major": 1, "minor": 3,
             "fileMode": 0o620, "gid": 100},
            {"path": "/dev/my-zero", "type": "c", "major": 1, "minor": 5,
             "fileMode": 0o604, "uid": 1000, "gid": 100},
            {"path": "/dev/sub/my-fifo", "type": "p", "fileMode": 0o600},
            // In the range Linux keeps for local use: no driver has it, on the host or in
            // the guest.
            {"path": "/dev/no-driver", "type": "c", "major": 240, "minor": 7}
        ]);
        spec["linux"]["resources"]["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
        ]);
    });
    let outcome = bundle.same_as_runc();
    let text = outcome.stdout_text();
    assert!(
        text.contains("/dev/my-zero character special file 1:5 604 1000:100"),
        "{text}"
    );
    assert!(text.contains("/dev/sub/my-fifo fifo 0:0 600 0:0"), "{text}");
    assert!(text.contains("null-writes"), "{text}");
    let stderr = outcome.stderr_text();
    assert!(
        stderr.contains("no driver for /dev/no-driver (240:7)"),
        "{stderr}"
    );
    assert!(!stderr.contains("my-null"), "{stderr}");
}

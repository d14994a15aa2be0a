//! A busybox bundle boots as a VM with its own kernel, and boots reliably.

mod common;

use common::TestBundle;

#[test]
fn uname_shows_the_guest_kernel_not_the_hosts() {
    let bundle = TestBundle::busybox(&["uname", "-r"]);
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    let release = outcome.stdout_text().trim().to_string();
    assert_eq!(release, common::guest_release());
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(
        release,
        host.trim(),
        "the application saw the host's kernel"
    );
}

#[test]
fn the_application_is_pid_1_of_its_namespace() {
    let bundle = TestBundle::busybox(&["sh", "-c", "echo $$; cat /proc/1/cmdline | tr '\\0' ' '"]);
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    let text = outcome.stdout_text();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("1"), "{outcome:?}");
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("sh -c echo $$"),
        "{outcome:?}"
    );
}

#[test]
fn env_cwd_and_hostname_come_from_the_spec() {
    let bundle = TestBundle::busybox(&["sh", "-c", "echo $GREETING; pwd; hostname"]);
    bundle.add_env(&["GREETING=hello vm"]);
    bundle.edit(|spec| {
        spec["process"]["cwd"] = "/tmp".into();
        spec["hostname"] = "runq-box".into();
    });
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "hello vm\n/tmp\nrunq-box\n");
}

#[test]
fn runq_timeline_reports_each_stage_once_in_boot_order() {
    // Both end alike, from the config on.
    let from_config = [
        "config_received",
        "root_mounted",
        "network_ready",
        "app_exec",
        "app_exit",
        "vm_exit",
    ];
    let booted = [
        &[
            "proxy_start",
            "virtiofsd_exec",
            "qemu_exec",
            "kernel_start",
            "init_start",
            "transport_loaded",
            "modules_loaded",
        ][..],
        &from_config,
    ]
    .concat();
    // A restored guest's stages start at its config: the earlier ones were the template's.
    let restored = [
        &[
            "proxy_start",
            "virtiofsd_exec",
            "qemu_restore",
            "template_loaded",
        ][..],
        &from_config,
    ]
    .concat();
    for (template, expected) in [("off", &booted[..]), ("on", &restored[..])] {
        let bundle = TestBundle::busybox(&["echo", "hi"]);
        bundle.add_env(&["RUNQ_TIMELINE=1"]);
        if template == "on" && !test_bundles_have_a_template() {
            // Has runq make it.
            let _ = bundle.run_with(&["--template", "on"], b"");
            common::wait_until(
                "a template of the test bundles' shape",
                test_bundles_have_a_template,
            );
        }
        let outcome = bundle.run_with(&["--template", template], b"");
        assert_eq!(outcome.code(), 0, "{outcome:?}");
        assert_eq!(outcome.stdout_text(), "hi\n");
        let stderr = outcome.stderr_text();
        let reports: Vec<_> = stderr
            .lines()
            .filter_map(runq_shared::timeline::Report::parse_line)
            .collect();
        assert_eq!(reports.len(), 1, "{stderr}");
        let stages: Vec<&str> = reports[0]
            .stages_ms
            .iter()
            .map(|(stage, _)| stage.as_str())
            .collect();
        // Host stages, then the guest's (placed by their arrival), then the VM's end.
        assert_eq!(stages, expected, "template {template}: {stderr}");
        let first = reports[0].stages_ms[0].1;
        assert!(
            first > 0.0,
            "the proxy started before runq create: {stderr}"
        );
    }
}

/// Whether the shape of a default test bundle (no NICs) has a template.
fn test_bundles_have_a_template() -> bool {
    common::templates().iter().any(|(_, meta)| {
        meta.shape.nics == 0
            && meta.shape.mem_mib == 256
            && !meta.shape.debug
            && meta.shape.root_device == "virtiofs"
            && meta.shape.initrd.path == common::assets_dir().join("kernel/initrd")
    })
}

#[test]
fn without_runq_timeline_stderr_stays_the_applications() {
    let bundle = TestBundle::busybox(&["sh", "-c", "echo oops >&2"]);
    let outcome = bundle.run();
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stderr_text(), "oops\n");
}

#[test]
fn thirty_boots_in_a_row_do_not_hang() {
    // Two lanes of fifteen: both cores busy, as in real use; each boot has the run deadline.
    let lanes: Vec<_> = (0..2)
        .map(|lane| {
            std::thread::spawn(move || {
                for boot in 0..15 {
                    let bundle = TestBundle::busybox(&["true"]);
                    let outcome = bundle.run();
                    assert_eq!(outcome.code(), 0, "lane {lane} boot {boot}: {outcome:?}");
                }
            })
        })
        .collect();
    for lane in lanes {
        lane.join().expect("a boot failed");
    }
}

#[test]
fn a_kernel_that_is_not_a_kernel_gives_a_clear_error() {
    let bundle = TestBundle::busybox(&["true"]);
    let broken = bundle.path().join("broken-vmlinux");
    std::fs::write(&broken, b"this is not a kernel").unwrap();
    let outcome = bundle.run_with(&["--kernel", broken.to_str().unwrap()], b"");
    assert_ne!(outcome.code(), 0, "{outcome:?}");
    let stderr = outcome.stderr_text();
    assert!(
        stderr.contains("QEMU"),
        "the message must name QEMU: {stderr}"
    );
}

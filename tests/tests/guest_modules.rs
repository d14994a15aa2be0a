//! The guest kernel's modules: its module tree at /lib/modules in the container, modprobe
//! allowed only with CAP_SYS_MODULE, and modules the kernel loads on demand.

mod common;

use common::docker::{run, Runtime};

#[test]
fn modprobe_works_with_cap_sys_module_and_is_denied_without() {
    let outcome = run(
        Runtime::Runq,
        &["--cap-add", "SYS_MODULE"],
        &["sh", "-c", "modprobe brd && lsmod | grep -c '^brd '"],
    );
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "1\n");

    let outcome = run(Runtime::Runq, &[], &["modprobe", "brd"]);
    assert_ne!(outcome.code(), 0, "{outcome:?}");
    assert!(
        outcome.stderr_text().contains("Operation not permitted"),
        "{outcome:?}"
    );
}

#[test]
fn the_module_tree_is_the_guest_kernels_and_read_only() {
    let release = common::guest_release();
    let outcome = run(
        Runtime::Runq,
        &[],
        &[
            "sh",
            "-c",
            "test -f /lib/modules/$(uname -r)/modules.dep && echo tree; touch /lib/modules/x",
        ],
    );
    assert_ne!(outcome.code(), 0, "writable module tree: {outcome:?}");
    assert_eq!(outcome.stdout_text(), "tree\n", "{release}: {outcome:?}");
}

#[test]
fn the_kernel_loads_a_file_system_module_on_demand() {
    let outcome = run(
        Runtime::Runq,
        &["--cap-add", "SYS_ADMIN"],
        &[
            "sh",
            "-c",
            "grep -c xfs /proc/filesystems; mkdir -p /mnt; \
             mount -t xfs /dev/null /mnt 2>/dev/null; grep -c xfs /proc/filesystems",
        ],
    );
    assert_eq!(outcome.stdout_text(), "0\n1\n", "{outcome:?}");
}

#[test]
fn the_balloon_and_entropy_devices_are_bound_once_the_application_runs() {
    // Free page reporting hands the guest's freed pages back to the host; neither driver is
    // needed to start the application, so they load (or, restored from a template that
    // loaded them, bind) while it runs.
    let script = "bound() { ls -d /sys/bus/virtio/drivers/$1/virtio* >/dev/null 2>&1; }; \
                  for i in $(seq 200); do \
                      bound virtio_balloon && bound virtio_rng && echo bound && exit 0; \
                      sleep 0.1; \
                  done; cat /proc/modules; ls -R /sys/bus/virtio/drivers; exit 1";
    let outcome = run(Runtime::Runq, &[], &["sh", "-c", script]);
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "bound\n");
}

//! Templates (see `runq_shared::template`): containers restored from one template are machines
//! of their own; a template is made again when an input changes; a damaged one boots cold with
//! one line. Each test uses a memory size no other test uses, so the shape and its templates
//! are its own, and removes them when it ends.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::pod::PodNamespace;
use common::{Outcome, TestBundle};
use runq_shared::template::{self, Meta};

/// A template build is a boot and a save; several run at once in the suite.
const BUILD_DEADLINE: Duration = Duration::from_secs(180);

/// The templates of the shapes with this memory size, with their metas.
fn templates_of(mem_mib: u32) -> Vec<(PathBuf, Meta)> {
    common::templates()
        .into_iter()
        .filter(|(_, meta)| meta.shape.mem_mib == mem_mib)
        .collect()
}

/// Waits until a template of this memory size for which `wanted` holds exists, and the
/// builder made the other NIC count's as well (so that nothing is left building).
fn wait_for_template(mem_mib: u32, wanted: impl Fn(&Meta) -> bool) -> (PathBuf, Meta) {
    let deadline = Instant::now() + BUILD_DEADLINE;
    loop {
        let templates = templates_of(mem_mib);
        if let Some((dir, meta)) = templates.iter().find(|(_, meta)| wanted(meta)) {
            // A pod's shapes with NICs have passt's backend, its shape without one none.
            let sibling_of = |other: &Meta, nics: usize| {
                let mut shape = other.shape.clone();
                shape.nics = meta.shape.nics;
                shape.nic_stream = meta.shape.nic_stream;
                other.shape.nics == nics && shape == meta.shape
            };
            let all_built = (0..=template::MAX_NICS)
                .all(|nics| templates.iter().any(|(_, other)| sibling_of(other, nics)));
            if all_built {
                return (dir.clone(), meta.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "no template of {mem_mib} MiB within {BUILD_DEADLINE:?}; build log:\n{}",
            std::fs::read_to_string(template::dir().join("build.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Removes the test's templates however it ends.
struct Templates(u32);

impl Drop for Templates {
    fn drop(&mut self) {
        for (dir, _) in templates_of(self.0) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn bundle(mem_mib: u32, args: &[&str]) -> TestBundle {
    let bundle = TestBundle::busybox(args);
    bundle.add_env(&[&format!("RUNQ_MEM={mem_mib}"), "RUNQ_TIMELINE=1"]);
    bundle
}

/// Templates on, even where the suite runs with them off (`RUNQ_TEST_TEMPLATE=off`).
const ON: [&str; 2] = ["--template", "on"];

fn run(bundle: &TestBundle) -> Outcome {
    bundle.run_with(&ON, b"")
}

/// The proxy's timeline names how QEMU started: a restore that did not load is followed by a
/// boot.
fn restored(outcome: &Outcome) -> bool {
    let stderr = outcome.stderr_text();
    assert!(stderr.contains("runq-timeline:"), "no timeline: {stderr}");
    stderr.contains("\"qemu_restore\"") && !stderr.contains("\"qemu_exec\"")
}

/// The one line runq wrote on the container's stderr, besides the timeline.
fn the_one_line(outcome: &Outcome) -> String {
    let stderr = outcome.stderr_text();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.starts_with("runq-timeline:"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    lines[0].to_string()
}

/// Runs a first container of this memory size, whose create starts the builder, and waits
/// for the templates; they are removed when the returned guard drops.
fn made_by_a_first_container(mem_mib: u32) -> Templates {
    let cleanup = Templates(mem_mib);
    let first = run(&bundle(mem_mib, &["true"]));
    assert_eq!(first.code(), 0, "{first:?}");
    wait_for_template(mem_mib, |meta| meta.shape.nics == 0);
    cleanup
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[test]
fn two_restored_containers_are_machines_of_their_own() {
    const MEM: u32 = 232;
    let _cleanup = made_by_a_first_container(MEM);

    let script = "cat /proc/sys/kernel/random/uuid /proc/sys/kernel/random/boot_id; \
                  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; \
                  cat /sys/devices/system/clocksource/clocksource0/current_clocksource";
    let mut machines = Vec::new();
    for _ in 0..2 {
        let before = now_secs();
        let outcome = run(&bundle(MEM, &["sh", "-c", script]));
        let after = now_secs();
        assert_eq!(outcome.code(), 0, "{outcome:?}");
        assert!(
            restored(&outcome),
            "not restored: {}",
            outcome.stderr_text()
        );
        let lines: Vec<String> = outcome.stdout_text().lines().map(String::from).collect();
        assert_eq!(lines.len(), 5, "{lines:?}");
        let clock: u64 = lines[3].parse().expect("date +%s");
        assert!(
            before.saturating_sub(1) <= clock && clock <= after + 1,
            "guest clock {clock} outside the host's {before}..{after}"
        );
        // Not jiffies, which the template's kernel falls back to where it found its TSC
        // skewed against late timer interrupts: a 4 ms clock for every restored container.
        assert!(lines[4].starts_with("tsc"), "clock source {:?}", lines[4]);
        machines.push(lines[..3].to_vec());
    }
    for (what, index) in [("random uuid", 0), ("boot id", 1), ("urandom bytes", 2)] {
        assert_ne!(machines[0][index], machines[1][index], "the same {what}");
    }

    let off = bundle(MEM, &["true"]);
    off.add_env(&["RUNQ_TEMPLATE=0"]);
    let cold = run(&off);
    assert_eq!(cold.code(), 0, "{cold:?}");
    assert!(!restored(&cold), "RUNQ_TEMPLATE=0 restored a template");
}

#[test]
fn a_template_is_made_again_when_the_initrd_changes() {
    const MEM: u32 = 236;
    let _cleanup = Templates(MEM);
    let scratch = tempfile::tempdir().expect("temp dir");
    let initrd = scratch.path().join("initrd");
    let installed = common::assets_dir().join(runq_shared::layout::assets::INITRD);
    std::fs::copy(&installed, &initrd).expect("copy the initrd");
    let flags = [&ON[..], &["--initrd", initrd.to_str().expect("utf-8 path")]].concat();
    let run = || {
        let outcome = bundle(MEM, &["true"]).run_with(&flags, b"");
        assert_eq!(outcome.code(), 0, "{outcome:?}");
        outcome
    };

    assert!(!restored(&run()), "a template before any was made");
    let (_, old) = wait_for_template(MEM, |meta| meta.shape.initrd.path == initrd);
    assert!(restored(&run()), "the template was not used");

    // The same bytes in a new file: another input as far as runq can tell.
    let replacement = scratch.path().join("initrd.new");
    std::fs::copy(&installed, &replacement).expect("copy the initrd");
    std::fs::rename(&replacement, &initrd).expect("replace the initrd");
    assert!(!restored(&run()), "the old initrd's template was used");
    let (_, new) = wait_for_template(MEM, |meta| {
        meta.shape.initrd.path == initrd && meta.shape.initrd.ino != old.shape.initrd.ino
    });
    assert_ne!(new.key, old.key);
    assert!(restored(&run()), "the new template was not used");
}

/// Damages a template's state the way `how` says.
fn damage(how: Damage, state: &std::path::Path, meta: &Meta) {
    match how {
        Damage::Truncated => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(state)
                .expect("open the state");
            file.set_len(meta.size / 2).expect("truncate");
        }
        Damage::Replaced => {
            let other = state.with_extension("other");
            std::fs::write(&other, vec![0x5a; meta.size as usize]).expect("write");
            std::fs::rename(&other, state).expect("replace");
        }
        Damage::Unloadable => {
            // The stream's header overwritten in place, the modification time put back: the
            // file runq create checks against the meta, which only QEMU can refuse.
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(state)
                .expect("open the state");
            file.write_all_at(b"not QEMU", 0).expect("overwrite");
            let mtime = UNIX_EPOCH + Duration::from_nanos(meta.state.mtime_ns as u64);
            file.set_modified(mtime)
                .expect("put the modification time back");
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncated,
    Replaced,
    Unloadable,
}

#[test]
fn a_damaged_template_boots_cold_with_one_line() {
    const MEM: u32 = 240;
    let _cleanup = Templates(MEM);
    let first = run(&bundle(MEM, &["true"]));
    assert_eq!(first.code(), 0, "{first:?}");
    for how in [Damage::Truncated, Damage::Replaced, Damage::Unloadable] {
        let (dir, meta) = wait_for_template(MEM, |meta| meta.shape.nics == 0);
        damage(how, &dir.join(template::STATE), &meta);
        let outcome = run(&bundle(MEM, &["echo", "still runs"]));
        assert_eq!(outcome.code(), 0, "{how:?}: {outcome:?}");
        assert_eq!(outcome.stdout_text(), "still runs\n", "{how:?}");
        assert!(!restored(&outcome), "{how:?}: restored anyway");
        let line = the_one_line(&outcome);
        assert!(
            line.contains(&meta.key) && line.contains("booting without it"),
            "{how:?}: {line}"
        );
        if let Damage::Unloadable = how {
            assert!(line.contains("did not load"), "{line}");
            // runq start removed it; the next container's create builds it again.
            assert!(
                !dir.exists(),
                "the template that did not load is still there"
            );
            let cold = run(&bundle(MEM, &["true"]));
            assert_eq!(cold.code(), 0, "{cold:?}");
            assert!(!restored(&cold), "restored from a removed template");
        }
    }
    // Made again, and used.
    wait_for_template(MEM, |meta| meta.shape.nics == 0);
    let outcome = run(&bundle(MEM, &["true"]));
    assert!(restored(&outcome), "{outcome:?}");
}

#[test]
fn a_template_that_does_not_load_in_a_pod_boots_cold_on_the_pod_s_network() {
    // The fallback starts passt again for the booting QEMU (the first served the QEMU that
    // ended): the booted container must still reach the network through the pod's
    // interface, and leave no process behind in the pod.
    const MEM: u32 = 228;
    let _cleanup = Templates(MEM);
    let pod = PodNamespace::create();
    let outside = TcpListener::bind((pod.host_ip, 0)).expect("listen outside the pod");
    let port = outside.local_addr().expect("address").port();
    // An HTTP server of one page, so that the guest's client tells a whole answer by its
    // exit code (busybox's nc does not; its wget's -T crashes, under runc too). The thread
    // ends with the test.
    std::thread::spawn(move || {
        for mut stream in outside.incoming().map_while(Result::ok) {
            let _ = stream.read(&mut [0; 4096]);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\n\r\nhello-from-outside\n");
        }
    });
    let pod_bundle = |args: &[&str]| {
        let bundle = pod.bundle(args);
        bundle.add_env(&[&format!("RUNQ_MEM={MEM}"), "RUNQ_TIMELINE=1"]);
        bundle
    };
    let first = run(&pod_bundle(&["true"]));
    assert_eq!(first.code(), 0, "{first:?}");
    let (dir, meta) = wait_for_template(MEM, |meta| meta.shape.nics == 1 && meta.shape.nic_stream);

    damage(Damage::Unloadable, &dir.join(template::STATE), &meta);

    let fetch = format!(
        "for i in $(seq 50); do wget -qO- http://{}:{port}/ && exit 0; sleep 0.2; done; exit 1",
        pod.host_ip
    );
    let outcome = run(&pod_bundle(&["sh", "-c", &fetch]));
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert_eq!(outcome.stdout_text(), "hello-from-outside\n", "{outcome:?}");
    assert!(!restored(&outcome), "restored anyway: {outcome:?}");
    let line = the_one_line(&outcome);
    assert!(
        line.contains(&meta.key) && line.contains("did not load"),
        "{line}"
    );
    assert!(
        !dir.exists(),
        "the template that did not load is still there"
    );
    assert_eq!(
        pod.pids(),
        Vec::<String>::new(),
        "processes left in the pod"
    );
}

#[test]
fn restored_and_booted_guests_take_ipv6_as_the_namespace_has_it() {
    // A template's guest is saved with IPv6 off and loopback up, as Docker leaves a
    // container; a pod's namespace may have IPv6 on anywhere. Restored or booted, the guest
    // ends as the namespace is, loopback's `::1` included.
    const MEM: u32 = 224;
    let _cleanup = Templates(MEM);
    let pod = PodNamespace::create();
    let script = "cat /proc/sys/net/ipv6/conf/all/disable_ipv6 \
                      /proc/sys/net/ipv6/conf/default/disable_ipv6 \
                      /proc/sys/net/ipv6/conf/lo/disable_ipv6; \
                  ip -o -6 addr show lo | awk '{print $4}'";
    let pod_bundle = || {
        let bundle = pod.bundle(&["sh", "-c", script]);
        bundle.add_env(&[&format!("RUNQ_MEM={MEM}"), "RUNQ_TIMELINE=1"]);
        bundle
    };
    let first = run(&pod_bundle());
    assert_eq!(first.code(), 0, "{first:?}");
    wait_for_template(MEM, |meta| meta.shape.nics == 1 && meta.shape.nic_stream);
    for (all, default, lo) in [
        (false, false, false),
        (true, false, false),
        (false, true, true),
        (true, true, true),
    ] {
        pod.set_ipv6_off(all, default, lo);
        let bit = |off: bool| if off { "1\n" } else { "0\n" };
        let expected = format!(
            "{}{}{}{}",
            bit(all),
            bit(default),
            bit(lo),
            if lo { "" } else { "::1/128\n" }
        );
        let restored_run = run(&pod_bundle());
        assert!(restored(&restored_run), "{restored_run:?}");
        let booted_run = pod_bundle().run_with(&["--template", "off"], b"");
        assert!(!restored(&booted_run), "{booted_run:?}");
        for outcome in [restored_run, booted_run] {
            assert_eq!(outcome.code(), 0, "{outcome:?}");
            assert_eq!(
                outcome.stdout_text(),
                expected,
                "IPv6 off: all {all}, default {default}, lo {lo}: {outcome:?}"
            );
        }
    }
}

#[test]
fn a_restored_qemu_keeps_no_descriptor_of_its_template() {
    // QEMU, which the guest may take over, needs the template only while it loads.
    const MEM: u32 = 220;
    let _cleanup = made_by_a_first_container(MEM);
    let sleeper = bundle(MEM, &["sh", "-c", "echo up; sleep 3"]);
    let (running, line) = sleeper.start_and_wait_for_line(&ON);
    assert_eq!(line, "up");
    let qemus = common::descendants_running(running.pid(), "qemu-system");
    assert_eq!(qemus.len(), 1, "QEMU processes: {qemus:?}");
    let held = || {
        // Read while the application still sleeps: a QEMU gone holds nothing, and proves
        // nothing.
        std::fs::read_dir(format!("/proc/{}/fd", qemus[0]))
            .expect("QEMU's descriptors, while the container runs")
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|target| target.starts_with(template::dir()))
            .collect::<Vec<_>>()
    };
    common::wait_until("QEMU to close the template", || held().is_empty());
    let outcome = running.finish();
    assert_eq!(outcome.code(), 0, "{outcome:?}");
    assert!(restored(&outcome), "not restored: {outcome:?}");
}

//! runq disks: files and block devices at
//! /dev/runq/<id>[.qcow2]/<cache>[/<fstype>/<mountpoint>] become virtio-blk disks of the VM,
//! mounted where asked and linked by id.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::docker::{run, Runtime};

/// A disk image in a directory removed on drop.
struct Images(tempfile::TempDir);

impl Images {
    fn new() -> Images {
        // Not on tmpfs: cache=none opens the image with O_DIRECT.
        Images(
            tempfile::Builder::new()
                .prefix("runq-disks-")
                .tempdir_in("/var/tmp")
                .unwrap(),
        )
    }

    /// A sparse raw image of `mib` MiB, formatted with `fstype` unless `None`.
    fn raw(&self, name: &str, mib: u64, fstype: Option<&str>) -> PathBuf {
        let path = self.0.path().join(name);
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(mib << 20).unwrap();
        if let Some(fstype) = fstype {
            let quiet = if fstype == "xfs" || fstype == "btrfs" {
                "-q"
            } else {
                "-qF"
            };
            tool(&format!("mkfs.{fstype}"), &[quiet, path.to_str().unwrap()]);
        }
        path
    }

    /// A qcow2 image holding an ext2 file system.
    fn qcow2_ext2(&self, name: &str) -> PathBuf {
        let raw = self.raw(&format!("{name}.raw"), 64, Some("ext2"));
        let path = self.0.path().join(name);
        tool(
            "qemu-img",
            &[
                "convert",
                "-O",
                "qcow2",
                raw.to_str().unwrap(),
                path.to_str().unwrap(),
            ],
        );
        std::fs::remove_file(raw).unwrap();
        path
    }
}

fn tool(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (make install adds it): {e}"));
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn volume(image: &Path, spec: &str) -> String {
    format!("{}:/dev/runq/{spec}", image.display())
}

#[test]
fn three_disks_keep_ten_megabytes_each_for_the_next_container() {
    let images = Images::new();
    let disks = [
        volume(
            &images.qcow2_ext2("a.qcow2"),
            "a.qcow2/writeback/ext2/mnt/a",
        ),
        volume(&images.raw("b.raw", 320, Some("xfs")), "b/none/xfs/mnt/b"),
        volume(
            &images.raw("c.raw", 64, Some("ext4")),
            "c-with-a-long-id-of-thirty-six-chars/writethrough/ext4/mnt/c",
        ),
    ];
    let mut options = Vec::new();
    for disk in &disks {
        options.extend(["-v", disk.as_str()]);
    }
    let write = run(
        Runtime::Runq,
        &options,
        &[
            "sh",
            "-c",
            "set -e; for d in a b c; do \
               dd if=/dev/urandom of=/mnt/$d/data bs=1M count=10 2>/dev/null; done; \
             sync; sha256sum /mnt/a/data /mnt/b/data /mnt/c/data; \
             df -T /mnt/a /mnt/b /mnt/c | awk 'NR > 1 {print $2, $7}'; \
             ls /dev/disk/by-runq-id",
        ],
    );
    assert_eq!(write.code(), 0, "{write:?}");
    let text = write.stdout_text();
    for expected in [
        "ext2 /mnt/a",
        "xfs /mnt/b",
        "ext4 /mnt/c",
        "c-with-a-long-id-of-thirty-six-chars",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    let sums: Vec<&str> = text.lines().take(3).collect();

    let read = run(
        Runtime::Runq,
        &options,
        &["sha256sum", "/mnt/a/data", "/mnt/b/data", "/mnt/c/data"],
    );
    assert_eq!(read.code(), 0, "{read:?}");
    assert_eq!(read.stdout_text().lines().collect::<Vec<_>>(), sums);
}

#[test]
fn ext3_and_btrfs_mount_and_a_bare_disk_is_attached_unmounted() {
    let images = Images::new();
    let d = volume(
        &images.raw("d.raw", 64, Some("ext3")),
        "d/unsafe/ext3/srv/d",
    );
    let e = volume(
        &images.raw("e.raw", 128, Some("btrfs")),
        "e/none/btrfs/srv/e",
    );
    let f = volume(&images.raw("f.raw", 16, None), "bare/none");
    let outcome = run(
        Runtime::Runq,
        &["-v", &d, "-v", &e, "-v", &f],
        &[
            "sh",
            "-c",
            "df -T /srv/d /srv/e | awk 'NR > 1 {print $2, $7}'; \
             bare=$(readlink -f /dev/disk/by-runq-id/bare); echo bare=$bare; \
             test -b $bare && echo block; grep -c \"^$bare \" /proc/mounts",
        ],
    );
    let text = outcome.stdout_text();
    assert!(text.contains("ext3 /srv/d"), "{outcome:?}");
    assert!(text.contains("btrfs /srv/e"), "{outcome:?}");
    assert!(text.contains("bare=/dev/vd"), "{outcome:?}");
    assert!(
        text.contains("block\n0\n"),
        "attached, not mounted: {outcome:?}"
    );
}

#[test]
fn a_host_block_device_is_a_disk_too() {
    let images = Images::new();
    let image = images.raw("loop.raw", 64, Some("ext4"));
    let device = tool("losetup", &["-f", "--show", image.to_str().unwrap()]);
    let device = device.trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(device.clone());
    let mapping = format!("{device}:/dev/runq/loop/none/ext4/data");
    let outcome = run(
        Runtime::Runq,
        &["--device", &mapping],
        &[
            "sh",
            "-c",
            "echo kept > /data/file && df -T /data | awk 'NR > 1 {print $2}'",
        ],
    );
    assert_eq!(outcome.stdout_text(), "ext4\n", "{outcome:?}");
    let debugfs = tool("debugfs", &["-R", "cat /file", &device]);
    assert_eq!(debugfs, "kept\n");
}

#[test]
fn bad_disk_specs_are_refused_at_create_by_name() {
    let images = Images::new();
    let image = images.raw("x.raw", 16, None);
    let cases = [
        (vec!["bad!id/none"], "must match"),
        (vec!["a.vmdk/none"], "image format \"vmdk\""),
        (vec!["a/none", "a/unsafe"], "used twice"),
        (vec!["a/fast"], "cache mode \"fast\""),
        (vec!["a/none/zfs/data"], "file system \"zfs\""),
        (vec!["a/none/ext4"], "mount point"),
    ];
    for (specs, message) in cases {
        let mut options = Vec::new();
        let volumes: Vec<String> = specs.iter().map(|spec| volume(&image, spec)).collect();
        for volume in &volumes {
            options.extend(["-v", volume.as_str()]);
        }
        let outcome = run(Runtime::Runq, &options, &["true"]);
        assert_ne!(outcome.code(), 0, "{specs:?}");
        let text = outcome.stdout_text() + &outcome.stderr_text();
        assert!(text.contains(message), "{specs:?}: {outcome:?}");
    }
}

#[test]
fn a_root_disk_takes_the_image_once_and_keeps_what_the_container_changes() {
    let images = Images::new();
    let disk = volume(&images.raw("root.raw", 128, Some("ext4")), "root/writeback");
    let name = common::docker::Name::new();
    let script = "grep ' / ' /proc/mounts | cut -d' ' -f1,3; test -d /home && echo home || \
                  echo no-home; cat /marker 2>/dev/null || echo no-marker; echo kept > /marker; \
                  hostname";
    let create = common::docker::docker(&[
        "create",
        "--runtime",
        "runq",
        "--name",
        &name.0,
        "--hostname",
        "first",
        "-e",
        "RUNQ_ROOTDISK=root",
        "-e",
        "RUNQ_ROOTDISK_EXCLUDE=/home,/tmp",
        "-v",
        &disk,
        common::docker::IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(create.code(), 0, "{create:?}");
    let first = common::docker::docker(&["start", "-a", &name.0]);
    assert_eq!(
        first.stdout_text(),
        "/dev/vda ext4\nno-home\nno-marker\nfirst\n",
        "{first:?}"
    );
    let again = common::docker::docker(&["start", "-a", &name.0]);
    assert_eq!(
        again.stdout_text(),
        "/dev/vda ext4\nno-home\nkept\nfirst\n",
        "{again:?}"
    );
    let other = run(
        Runtime::Runq,
        &[
            "--hostname",
            "second",
            "-e",
            "RUNQ_ROOTDISK=root",
            "-v",
            &disk,
        ],
        &["sh", "-c", "cat /marker; hostname; cat /etc/hostname"],
    );
    assert_eq!(other.stdout_text(), "kept\nsecond\nsecond\n", "{other:?}");
}

#[test]
fn a_root_disk_that_names_no_disk_is_refused() {
    let outcome = run(Runtime::Runq, &["-e", "RUNQ_ROOTDISK=nothing"], &["true"]);
    assert_ne!(outcome.code(), 0);
    let text = outcome.stdout_text() + &outcome.stderr_text();
    assert!(text.contains("RUNQ_ROOTDISK=nothing"), "{outcome:?}");
}

/// The guest writes its disks, so a disk's header is the guest's: the format is the
/// operator's (`<id>.qcow2`), never told from the content. A qcow2 image that names a backing
/// file or an external data file, where QEMU would open that file on the host side, is
/// refused by name; the same header in a raw disk stays data.
#[test]
fn a_disk_header_never_sends_qemu_to_another_file() {
    let images = Images::new();
    let dir = images.0.path();
    let secret = dir.join("secret");
    std::fs::write(&secret, "host secret".repeat(1000)).unwrap();
    // An empty qcow2 image of `name` whose header sends QEMU to `secret`, as `option` says.
    let qcow2_naming_secret = |name: &str, option: &[&str]| {
        let path = dir.join(name);
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        args.extend(option);
        args.extend([path.to_str().unwrap(), "1M"]);
        tool("qemu-img", &args);
        path
    };
    let backed = qcow2_naming_secret(
        "backed.qcow2",
        &["-b", secret.to_str().unwrap(), "-F", "raw"],
    );
    let data_file = format!("data_file={}", secret.display());
    let external = qcow2_naming_secret("external.qcow2", &["-o", &data_file]);
    let not_qcow2 = images.raw("plain.raw", 1, None);
    for (image, message) in [
        (&backed, "names a backing file is refused"),
        (&external, "external data file is refused"),
        (&not_qcow2, "not a qcow2 image"),
    ] {
        let disk = volume(image, "a.qcow2/none");
        let outcome = run(Runtime::Runq, &["-v", &disk], &["true"]);
        assert_ne!(outcome.code(), 0, "{image:?} started");
        let text = outcome.stdout_text() + &outcome.stderr_text();
        assert!(
            text.contains(message) && text.contains("/dev/runq/a.qcow2/none"),
            "{image:?}: {outcome:?}"
        );
    }

    // Attached as raw, the guest reads the header itself: QEMU never read it as qcow2, so
    // never opened the backing file it names.
    for image in [&backed, &external] {
        let disk = volume(image, "a/none");
        let outcome = run(
            Runtime::Runq,
            &["-v", &disk],
            &["head", "-c", "3", "/dev/disk/by-runq-id/a"],
        );
        assert_eq!(outcome.code(), 0, "{image:?}: {outcome:?}");
        assert_eq!(outcome.stdout_text(), "QFI", "{image:?}: {outcome:?}");
        assert!(
            outcome
                .stderr_text()
                .contains("starts like a qcow2 image but is used as raw"),
            "{image:?}: {outcome:?}"
        );
    }
}

//! A first look at the operator's qcow2 disks at create, so that an image that would send QEMU
//! to another file is refused before anything starts. The proxy checks again at every start:
//! the guest writes its disks, and a device (`--device`) is only reachable there.

use oci_spec::runtime::Spec;
use runq_shared::disks::{check_image, read_header, DiskFormat, ImageError};
use thiserror::Error;

#[derive(Debug, Error)]
#[error("runq disk {destination} ({source_path}): {error}")]
pub struct DiskImageError {
    destination: String,
    source_path: String,
    error: ImageError,
}

/// Checks the header of every bind-mounted disk the operator named `.qcow2`. A source that
/// cannot be opened or is no regular file or block device is left to runc to report.
pub fn check(spec: &Spec) -> Result<(), DiskImageError> {
    for mount in spec.mounts().iter().flatten() {
        let destination = mount.destination().to_string_lossy();
        let Ok(Some(disk)) = runq_shared::disks::parse(&destination) else {
            continue;
        };
        let Some(source) = mount.source() else {
            continue;
        };
        if disk.format != DiskFormat::Qcow2 {
            continue;
        }
        let Ok((header, _)) = read_header(source) else {
            continue;
        };
        check_image(disk.format, &header).map_err(|error| DiskImageError {
            destination: destination.to_string(),
            source_path: source.display().to_string(),
            error,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;
    use runq_shared::disks::HEADER_LEN;

    fn spec_with_disk(source: &std::path::Path, destination: &str) -> Spec {
        let mut spec = Spec::default();
        spec.set_mounts(Some(vec![MountBuilder::default()
            .destination(destination)
            .typ("bind")
            .source(source)
            .options(vec!["rbind".to_string()])
            .build()
            .unwrap()]));
        spec
    }

    #[test]
    fn a_qcow2_disk_that_names_a_backing_file_is_refused_at_create() {
        let dir = std::env::temp_dir().join(format!("runq-disk-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("backed.qcow2");
        let mut header = vec![0u8; HEADER_LEN];
        header[..8].copy_from_slice(b"QFI\xfb\x00\x00\x00\x03");
        header[15] = 0xd0;
        std::fs::write(&image, &header).unwrap();

        let error = check(&spec_with_disk(&image, "/dev/runq/a.qcow2/none"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("/dev/runq/a.qcow2/none") && error.contains("backing file"),
            "{error}"
        );
        // The same bytes in a disk the operator did not name qcow2 are data.
        assert!(check(&spec_with_disk(&image, "/dev/runq/a/none")).is_ok());
        // A missing source is runc's to report.
        let missing = dir.join("missing");
        assert!(check(&spec_with_disk(&missing, "/dev/runq/a.qcow2/none")).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

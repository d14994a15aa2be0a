//! runq disks: a file or block device the engine puts at
//! `/dev/runq/<id>[.qcow2]/<cache>[/<fstype>/<mountpoint>]` in the container becomes a
//! virtio-blk disk of the VM, linked as `/dev/disk/by-runq-id/<id>` in the guest and mounted at
//! `<mountpoint>` when a file system is named.
//!
//! The image format comes from the operator's path, never from the disk's content: the guest
//! writes its disks, so their first bytes are the guest's.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where the engine puts runq disks in the container.
pub const DISK_DIR: &str = "/dev/runq/";

/// Where the guest links each disk by its id.
pub const BY_ID_DIR: &str = "/dev/disk/by-runq-id";

/// QEMU's cache modes, by their QEMU names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskCache {
    None,
    Writeback,
    Writethrough,
    Unsafe,
}

impl DiskCache {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskCache::None => "none",
            DiskCache::Writeback => "writeback",
            DiskCache::Writethrough => "writethrough",
            DiskCache::Unsafe => "unsafe",
        }
    }
}

/// The image format, as the operator named it: raw unless the id ends in `.qcow2`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    #[default]
    Raw,
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
    Btrfs,
}

impl FsType {
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext2 => "ext2",
            FsType::Ext3 => "ext3",
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
        }
    }
}

/// A disk as its container path describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub id: String,
    pub format: DiskFormat,
    pub cache: DiskCache,
    /// The file system and the absolute mount point, when the guest mounts the disk.
    pub mount: Option<(FsType, String)>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DiskError {
    #[error("runq disk {path}: expected /dev/runq/<id>[.qcow2]/<cache>[/<fstype>/<mountpoint>]")]
    Shape { path: String },
    #[error("runq disk {path}: id {id:?} must match ^[a-zA-Z0-9_-]{{1,36}}$")]
    Id { path: String, id: String },
    #[error("runq disk {path}: image format {format:?} is not one of raw, qcow2")]
    Format { path: String, format: String },
    #[error(
        "runq disk {path}: cache mode {cache:?} is not one of none, writeback, writethrough, \
         unsafe"
    )]
    Cache { path: String, cache: String },
    #[error("runq disk {path}: file system {fstype:?} is not one of ext2, ext3, ext4, xfs, btrfs")]
    FsType { path: String, fstype: String },
    #[error("runq disk {path}: a file system needs a mount point after it")]
    NoMountPoint { path: String },
    #[error("runq disk id {id:?} is used twice ({first} and {second})")]
    Duplicate {
        id: String,
        first: String,
        second: String,
    },
}

/// Parses a container path; `Ok(None)` when it is not below /dev/runq/.
pub fn parse(path: &str) -> Result<Option<DiskSpec>, DiskError> {
    let Some(rest) = path.strip_prefix(DISK_DIR) else {
        return Ok(None);
    };
    let shape = || DiskError::Shape {
        path: path.to_string(),
    };
    let mut parts = rest.splitn(4, '/');
    let named = parts.next().filter(|id| !id.is_empty()).ok_or_else(shape)?;
    let (id, format) = match named.split_once('.') {
        None => (named, DiskFormat::Raw),
        Some((id, "raw")) => (id, DiskFormat::Raw),
        Some((id, "qcow2")) => (id, DiskFormat::Qcow2),
        Some((_, format)) => {
            return Err(DiskError::Format {
                path: path.to_string(),
                format: format.to_string(),
            })
        }
    };
    let cache = parts.next().filter(|c| !c.is_empty()).ok_or_else(shape)?;
    let fstype = parts.next().filter(|f| !f.is_empty());
    let mount_point = parts
        .next()
        .map(|m| format!("/{}", m.trim_end_matches('/')));

    let id_ok = (1..=36).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !id_ok {
        return Err(DiskError::Id {
            path: path.to_string(),
            id: id.to_string(),
        });
    }
    let cache = match cache {
        "none" => DiskCache::None,
        "writeback" => DiskCache::Writeback,
        "writethrough" => DiskCache::Writethrough,
        "unsafe" => DiskCache::Unsafe,
        other => {
            return Err(DiskError::Cache {
                path: path.to_string(),
                cache: other.to_string(),
            })
        }
    };
    let mount = match fstype {
        None => None,
        Some(fstype) => {
            let fstype = match fstype {
                "ext2" => FsType::Ext2,
                "ext3" => FsType::Ext3,
                "ext4" => FsType::Ext4,
                "xfs" => FsType::Xfs,
                "btrfs" => FsType::Btrfs,
                other => {
                    return Err(DiskError::FsType {
                        path: path.to_string(),
                        fstype: other.to_string(),
                    })
                }
            };
            let mount_point =
                mount_point
                    .filter(|m| m != "/")
                    .ok_or_else(|| DiskError::NoMountPoint {
                        path: path.to_string(),
                    })?;
            Some((fstype, mount_point))
        }
    };
    Ok(Some(DiskSpec {
        id: id.to_string(),
        format,
        cache,
        mount,
    }))
}

/// Parses every runq disk among container paths, refusing an id used twice.
pub fn parse_all<'a>(
    paths: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<(String, DiskSpec)>, DiskError> {
    let mut disks: Vec<(String, DiskSpec)> = Vec::new();
    for path in paths {
        let Some(disk) = parse(path)? else { continue };
        if let Some((first, _)) = disks.iter().find(|(_, d)| d.id == disk.id) {
            return Err(DiskError::Duplicate {
                id: disk.id,
                first: first.clone(),
                second: path.to_string(),
            });
        }
        disks.push((path.to_string(), disk));
    }
    Ok(disks)
}

/// The virtio-blk serial of the disk at this position: the guest finds each disk by it. Ids
/// themselves may be longer than the 20 bytes a serial holds.
pub fn serial(index: usize) -> String {
    format!("runq{index}")
}

/// What the proxy needs of a disk: where it is in the container, its format and how QEMU
/// caches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmDisk {
    pub path: String,
    pub format: DiskFormat,
    pub cache: DiskCache,
}

/// How many bytes of a disk [`check_image`] reads: a qcow2 version 3 header up to its
/// incompatible features.
pub const HEADER_LEN: usize = 80;

const QCOW2_MAGIC: &[u8] = b"QFI\xfb";

/// Why a disk image is refused: it is not what the operator named, or what its header names
/// would make QEMU, on the host side, open another file than the disk. The guest writes the
/// disk, so the header is its.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("named .qcow2 but not a qcow2 image (no qcow2 magic number)")]
    NotQcow2,
    #[error(
        "a qcow2 image that names a backing file is refused: QEMU would open that file on the host side (flatten it with qemu-img convert)"
    )]
    BackingFile,
    #[error(
        "a qcow2 image with an external data file is refused: QEMU would open that file on the host side"
    )]
    ExternalDataFile,
}

/// Checks a disk's first [`HEADER_LEN`] bytes against the format the operator named. A raw
/// disk is never interpreted, whatever it holds; a qcow2 disk must be one and must not send
/// QEMU to another file (QEMU also gets it with no backing, so this is the clear message).
pub fn check_image(format: DiskFormat, header: &[u8]) -> Result<(), ImageError> {
    if format == DiskFormat::Raw {
        return Ok(());
    }
    if !looks_like_qcow2(header) {
        return Err(ImageError::NotQcow2);
    }
    let be_u64 = |at: usize| {
        header
            .get(at..at + 8)
            .and_then(|bytes| bytes.try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0)
    };
    let version = header
        .get(4..8)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0);
    if be_u64(8) != 0 {
        return Err(ImageError::BackingFile);
    }
    const EXTERNAL_DATA_FILE: u64 = 1 << 2;
    if version >= 3 && be_u64(72) & EXTERNAL_DATA_FILE != 0 {
        return Err(ImageError::ExternalDataFile);
    }
    Ok(())
}

/// The first [`HEADER_LEN`] bytes of a disk, and whether it is a block device. Opened without
/// blocking, so that a FIFO in its place hangs nothing; only a regular file or a block device
/// is read.
pub fn read_header(path: &std::path::Path) -> std::io::Result<(Vec<u8>, bool)> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() && !kind.is_block_device() {
        return Err(std::io::Error::other(
            "neither a regular file nor a block device",
        ));
    }
    let mut header = Vec::with_capacity(HEADER_LEN);
    file.take(HEADER_LEN as u64).read_to_end(&mut header)?;
    Ok((header, kind.is_block_device()))
}

/// Whether a disk starts like a qcow2 image: only a hint for a raw disk the operator may have
/// meant as qcow2 (the guest can write these bytes too).
pub fn looks_like_qcow2(header: &[u8]) -> bool {
    header.starts_with(QCOW2_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_short_specs() {
        assert_eq!(
            parse("/dev/runq/data-1/writeback/ext4/var/lib/data").unwrap(),
            Some(DiskSpec {
                id: "data-1".into(),
                format: DiskFormat::Raw,
                cache: DiskCache::Writeback,
                mount: Some((FsType::Ext4, "/var/lib/data".into())),
            })
        );
        assert_eq!(
            parse("/dev/runq/raw_0/none").unwrap(),
            Some(DiskSpec {
                id: "raw_0".into(),
                format: DiskFormat::Raw,
                cache: DiskCache::None,
                mount: None,
            })
        );
        assert_eq!(
            parse("/dev/runq/data.qcow2/none")
                .unwrap()
                .map(|d| (d.id, d.format)),
            Some(("data".into(), DiskFormat::Qcow2))
        );
        assert_eq!(
            parse("/dev/runq/data.raw/none")
                .unwrap()
                .map(|d| (d.id, d.format)),
            Some(("data".into(), DiskFormat::Raw))
        );
        assert_eq!(parse("/data").unwrap(), None);
        assert_eq!(parse("/dev/runqx/a/none").unwrap(), None);
    }

    #[test]
    fn bad_specs_name_what_is_wrong() {
        let error = |path: &str| parse(path).unwrap_err().to_string();
        assert!(error("/dev/runq/a.b/none").contains("image format \"b\""));
        assert!(error("/dev/runq/a.qcow2.raw/none").contains("image format \"qcow2.raw\""));
        assert!(error("/dev/runq/a!.qcow2/none").contains("id \"a!\""));
        assert!(error(&format!("/dev/runq/{}/none", "x".repeat(37))).contains("must match"));
        assert!(error("/dev/runq/a/fast").contains("cache mode \"fast\""));
        assert!(error("/dev/runq/a/none/zfs/mnt").contains("file system \"zfs\""));
        assert!(error("/dev/runq/a/none/ext4").contains("mount point"));
        assert!(error("/dev/runq/a/none/ext4/").contains("mount point"));
        assert!(error("/dev/runq/a").contains("expected /dev/runq/<id>[.qcow2]/<cache>"));
        assert!(error("/dev/runq//none").contains("expected"));
    }

    #[test]
    fn ids_are_unique() {
        let error = parse_all(["/dev/runq/a/none", "/tmp", "/dev/runq/a/unsafe"]).unwrap_err();
        assert!(error.to_string().contains("\"a\" is used twice"), "{error}");
        let disks = parse_all(["/dev/runq/a/none", "/dev/runq/b/unsafe"]).unwrap();
        assert_eq!(disks.len(), 2);
    }

    #[test]
    fn the_format_is_the_operators_and_a_qcow2_header_is_checked() {
        let mut qcow2 = [0u8; HEADER_LEN];
        qcow2[..8].copy_from_slice(b"QFI\xfb\x00\x00\x00\x03");
        assert_eq!(check_image(DiskFormat::Qcow2, &qcow2), Ok(()));
        assert_eq!(check_image(DiskFormat::Qcow2, &qcow2[..8]), Ok(()));
        assert_eq!(
            check_image(DiskFormat::Qcow2, &[0u8; 512]),
            Err(ImageError::NotQcow2)
        );
        assert_eq!(
            check_image(DiskFormat::Qcow2, b""),
            Err(ImageError::NotQcow2)
        );

        let mut backed = qcow2;
        backed[15] = 0xd0; // backing_file_offset
        assert_eq!(
            check_image(DiskFormat::Qcow2, &backed),
            Err(ImageError::BackingFile)
        );
        let mut external = qcow2;
        external[79] = 1 << 2; // incompatible features: external data file
        assert_eq!(
            check_image(DiskFormat::Qcow2, &external),
            Err(ImageError::ExternalDataFile)
        );
        // A raw disk is never read as anything else, whatever the guest wrote into it.
        assert_eq!(check_image(DiskFormat::Raw, &backed), Ok(()));
        assert_eq!(check_image(DiskFormat::Raw, &external), Ok(()));
        assert!(looks_like_qcow2(&backed));
        // Version 2 has no feature fields: those bytes belong to other fields there.
        external[7] = 2;
        assert_eq!(check_image(DiskFormat::Qcow2, &external), Ok(()));
    }
}

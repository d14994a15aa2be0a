//! Templates: a VM booted up to the point where runq-init waits for its container's config,
//! saved by QEMU's migration, so that a container of the same shape starts QEMU from it
//! instead of booting a kernel.
//!
//! A template belongs to one [`Shape`]: everything that decides the saved machine (QEMU and
//! its assets, the kernel and initrd, memory, vCPUs, accelerator, CPU model, the root's
//! device, the number of NICs, the console's kernel flags). Its key is a hash of the shape,
//! including the identity (device, inode, size, modification time) of every input file: an
//! install swaps in a new assets tree, so a new key, and a template is never used across
//! inputs. Templates live on the host in a root-only directory, `templates/<key>/`, with the
//! migration stream in [`STATE`] and, written last, [`META`]: the key, the stream's size and
//! SHA-256, taken from the file once it was synced, and the file's identity. Each use checks
//! the state is that file, unchanged (device, inode, size, modification time): truncated,
//! rewritten or replaced by another template's, it boots cold and is built again. Hashing the
//! stream again on every start would cost ~180 ms of a restore's ~1 s here.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::config::{Accel, NetMode, RootFs, VmSettings};

/// Bumped whenever what a template holds changes without its inputs changing.
pub const FORMAT: u32 = 4;
/// Templates exist for VMs with 0 to this many NICs (Docker's default is one); a container
/// with more boots cold.
pub const MAX_NICS: usize = 1;
/// Templates kept on the host (one of a 256 MiB VM is ~68 MB); the least recently made
/// beyond this are removed.
pub const KEEP: usize = 32;
pub const STATE: &str = "state";
pub const META: &str = "meta.json";
/// The directory below the install root.
pub const DIR: &str = "templates";
/// A template's own MAC for NIC `n`: the restored guest finds its NICs by these and gives
/// them the container's.
pub fn nic_mac(n: usize) -> String {
    format!("02:72:75:6e:71:{:02x}", n % 256)
}

#[derive(Debug, Error)]
pub enum TemplateError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("template {key}: its state is {actual} bytes, its meta says {expected}")]
    Size {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("template {key}: its state is not the file its meta describes (changed or replaced)")]
    Changed { key: String },
    #[error("template {key}: {what}")]
    Meta { key: String, what: String },
}

/// The identity of an input file: any install or edit changes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl FileId {
    pub fn of(path: &Path) -> Result<FileId, TemplateError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| TemplateError::Io(path.display().to_string(), e))?;
        Ok(FileId::from_metadata(path, &meta))
    }

    fn from_metadata(path: &Path, meta: &std::fs::Metadata) -> FileId {
        FileId {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        }
    }

    /// The same file, unchanged: the path aside (a template's directory is renamed into
    /// place after its state was written).
    fn same_file(&self, other: &FileId) -> bool {
        (self.dev, self.ino, self.size, self.mtime_ns)
            == (other.dev, other.ino, other.size, other.mtime_ns)
    }
}

/// What decides the saved machine, with the host paths the template is built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub format: u32,
    pub cpus: u32,
    pub mem_mib: u32,
    pub accel: Accel,
    pub cpu_model: Option<String>,
    pub nested_vm: bool,
    pub debug: bool,
    /// `virtiofs` or `9p`: the root's device (9p's cache mode is the guest's mount option).
    pub root_device: String,
    pub nics: usize,
    /// The NICs' backend: passt's socket (a pod's shared namespace) or a tap. The guest's
    /// NIC is bound in the template and has negotiated its offloads with one of them (a tap
    /// has virtio-net headers, a socket none), so the other cannot take it over.
    pub nic_stream: bool,
    pub tsc_khz: Option<u64>,
    /// The assets tree (QEMU, its libraries and firmware; swapped whole by an install).
    pub assets: FileId,
    pub kernel: FileId,
    pub initrd: FileId,
}

impl Shape {
    /// The shape of `vm` with `nics` NICs, or `None` where a VM of these settings cannot be
    /// saved and restored: runq disks (their number and formats would be part of it).
    pub fn of(
        vm: &VmSettings,
        nics: usize,
        tsc_khz: Option<u64>,
        assets: FileId,
        kernel: FileId,
        initrd: FileId,
    ) -> Option<Shape> {
        if !vm.disks.is_empty() || nics > MAX_NICS {
            return None;
        }
        Some(Shape {
            format: FORMAT,
            cpus: vm.cpus,
            mem_mib: vm.mem_mib,
            accel: vm.accel,
            cpu_model: vm.cpu_model.clone(),
            nested_vm: vm.nested_vm,
            debug: vm.debug,
            root_device: match vm.root_fs {
                RootFs::Virtiofs => "virtiofs".into(),
                RootFs::NineP { .. } => "9p".into(),
            },
            nics,
            nic_stream: nics > 0 && vm.net == NetMode::Shared,
            tsc_khz,
            assets,
            kernel,
            initrd,
        })
    }

    /// Settings of a VM of this shape, for the template's builder: what the shape does not
    /// decide never reaches the saved machine.
    pub fn vm_settings(&self) -> VmSettings {
        VmSettings {
            cpus: self.cpus,
            mem_mib: self.mem_mib,
            accel: self.accel,
            cpu_model: self.cpu_model.clone(),
            root_fs: match self.root_device.as_str() {
                "9p" => RootFs::NineP {
                    cache: crate::config::NinePCache::Mmap,
                },
                _ => RootFs::Virtiofs,
            },
            net: if self.nic_stream {
                NetMode::Shared
            } else {
                NetMode::Tap
            },
            disks: Vec::new(),
            boot_timeout_secs: 60,
            nested_vm: self.nested_vm,
            debug: self.debug,
            kernel: None,
            initrd: None,
            timeline_origin_ns: None,
            confinement: Default::default(),
            noexec: false,
            dns: Default::default(),
            mirror: Default::default(),
            templates: Vec::new(),
        }
    }

    /// A hash of the whole shape: the template's directory name.
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(&json))[..32].to_string()
    }
}

/// What [`META`] holds, written after the state is complete and synced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    /// The state file as it was written.
    pub state: FileId,
    pub shape: Shape,
}

/// A template runq create found for the container and handed the proxy, at
/// [`crate::layout::FIRST_TEMPLATE_FD`] + `nics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub nics: usize,
    pub key: String,
    pub size: u64,
}

/// The directory of all templates.
pub fn dir() -> PathBuf {
    crate::layout::install_root().join(DIR)
}

/// Checks an opened state is the file the meta describes, unchanged since it was written.
pub fn check_state(state: &File, meta: &Meta) -> Result<(), TemplateError> {
    let io = |e| TemplateError::Io(format!("template {}", meta.key), e);
    let now = FileId::from_metadata(&meta.state.path, &state.metadata().map_err(io)?);
    if now.size != meta.size {
        return Err(TemplateError::Size {
            key: meta.key.clone(),
            expected: meta.size,
            actual: now.size,
        });
    }
    if !now.same_file(&meta.state) {
        return Err(TemplateError::Changed {
            key: meta.key.clone(),
        });
    }
    Ok(())
}

/// The proxy's check of a handed state: its size (runq create checked the rest).
pub fn check(state: &File, offer: &Offer) -> Result<(), TemplateError> {
    let io = |e| TemplateError::Io(format!("template {}", offer.key), e);
    let actual = state.metadata().map_err(io)?.len();
    if actual != offer.size {
        return Err(TemplateError::Size {
            key: offer.key.clone(),
            expected: offer.size,
            actual,
        });
    }
    Ok(())
}

/// The SHA-256 of a file's first `len` bytes, in hex.
pub fn sha256_of(file: &File, len: u64) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    while offset < len {
        let want = buffer.len().min((len - offset) as usize);
        let read = file.read_at(&mut buffer[..want], offset)?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        hasher.update(&buffer[..read]);
        offset += read as u64;
    }
    Ok(hex(&hasher.finalize()))
}

/// Reads a template's meta, bounded, and checks it names `key`.
pub fn read_meta(dir: &Path, key: &str) -> Result<Meta, TemplateError> {
    use std::io::Read;
    let path = dir.join(META);
    let file = File::open(&path).map_err(|e| TemplateError::Io(path.display().to_string(), e))?;
    let mut text = Vec::new();
    file.take(64 << 10)
        .read_to_end(&mut text)
        .map_err(|e| TemplateError::Io(path.display().to_string(), e))?;
    let meta: Meta = serde_json::from_slice(&text).map_err(|e| TemplateError::Meta {
        key: key.into(),
        what: format!("unreadable meta: {e}"),
    })?;
    if meta.key != key || meta.shape.key() != key {
        return Err(TemplateError::Meta {
            key: key.into(),
            what: format!("its meta is of template {}", meta.key),
        });
    }
    Ok(meta)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn id(path: &str, ino: u64) -> FileId {
        FileId {
            path: path.into(),
            dev: 1,
            ino,
            size: 10,
            mtime_ns: 5,
        }
    }

    fn shape_of(vm: &VmSettings, nics: usize) -> Option<Shape> {
        Shape::of(
            vm,
            nics,
            Some(2_000_000),
            id("/a", 1),
            id("/k", 2),
            id("/i", 3),
        )
    }

    #[test]
    fn the_key_changes_with_every_input_and_disks_have_no_template() {
        let vm = crate::qemu::tests::settings();
        let base = shape_of(&vm, 1).unwrap();
        assert_eq!(base.key(), shape_of(&vm, 1).unwrap().key());
        assert_eq!(base.key().len(), 32);
        assert_ne!(base.key(), shape_of(&vm, 0).unwrap().key());
        let mut other = base.clone();
        other.initrd.ino = 4;
        assert_ne!(base.key(), other.key(), "a new initrd");
        let mut more_memory = vm.clone();
        more_memory.mem_mib += 1;
        assert_ne!(base.key(), shape_of(&more_memory, 1).unwrap().key());
        let mut ninep = vm.clone();
        ninep.root_fs = RootFs::NineP {
            cache: crate::config::NinePCache::Mmap,
        };
        assert_ne!(base.key(), shape_of(&ninep, 1).unwrap().key());
        let mut pod = vm.clone();
        pod.net = NetMode::Shared;
        assert_ne!(base.key(), shape_of(&pod, 1).unwrap().key(), "passt's NIC");
        assert_eq!(shape_of(&vm, 0), shape_of(&pod, 0), "no NIC, no backend");
        assert!(shape_of(&vm, MAX_NICS + 1).is_none());
        let mut with_disk = vm.clone();
        with_disk.disks.push(crate::disks::VmDisk {
            path: "/dev/runq/d".into(),
            format: crate::disks::DiskFormat::Raw,
            cache: crate::disks::DiskCache::None,
        });
        assert!(shape_of(&with_disk, 0).is_none());
    }

    #[test]
    fn a_state_is_checked_against_its_meta() {
        let path = std::env::temp_dir().join(format!("runq-template-{}", std::process::id()));
        let mut file = File::create(&path).unwrap();
        file.write_all(b"saved machine").unwrap();
        let state = File::open(&path).unwrap();
        let vm = crate::qemu::tests::settings();
        let meta = Meta {
            key: "k".into(),
            size: 13,
            sha256: sha256_of(&state, 13).unwrap(),
            state: FileId::of(&path).unwrap(),
            shape: shape_of(&vm, 0).unwrap(),
        };
        assert_eq!(meta.sha256.len(), 64);
        assert!(check_state(&state, &meta).is_ok());
        let offer = Offer {
            nics: 0,
            key: "k".into(),
            size: 13,
        };
        assert!(check(&state, &offer).is_ok());
        // Replaced by another file of the same size (another template's, a copy).
        let other = path.with_extension("other");
        std::fs::write(&other, b"other machine").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(matches!(
            check_state(&File::open(&path).unwrap(), &meta),
            Err(TemplateError::Changed { .. })
        ));
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(5).unwrap();
        let state = File::open(&path).unwrap();
        assert!(matches!(
            check_state(&state, &meta),
            Err(TemplateError::Size { .. })
        ));
        assert!(matches!(
            check(&state, &offer),
            Err(TemplateError::Size { .. })
        ));
        let _ = std::fs::remove_file(&path);
    }
}

//! The engine's bundle and runq's private directory for the container.
//!
//! The engine's bundle stays as the engine wrote it. Everything runq makes for the container —
//! the spec runc runs (the proxy's), the engine's spec as create saw it, the VM config with
//! the application's environment, the mount points runc made for runq, exec requests — lives
//! in a root-only directory below runc's state root ([`layout::private_dir`]), which runc gets
//! as the bundle; never in the engine's bundle: one whose `root.path` is `.` is the
//! container's own tree, which the guest can read and write. `delete` removes that directory.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use runq_shared::layout::{self, ORIGINAL_SPEC_FILE, START_REPORT_FIFO, VM_CONFIG_FILE};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::rewrite::Rewritten;

#[derive(Debug, Error)]
pub enum BundleError {
    #[error("bundle {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid OCI config: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "container id {0:?}: runc accepts only letters, digits, '_', '+', '-' and '.', and not \
         \".\" or \"..\""
    )]
    BadId(String),
    #[error(
        "the image has {kind} at {path}: runq mounts its own files there, so that path must be \
         a directory or absent"
    )]
    RunqPathTaken { path: PathBuf, kind: &'static str },
    #[error("{path} is not a regular file of at most {limit} MiB", limit = MAX_SPEC_LEN >> 20)]
    NotASpecFile { path: PathBuf },
}

/// Far above any real spec; a bound for reading a file whose bundle a container may share.
const MAX_SPEC_LEN: u64 = 64 << 20;

pub struct Bundle {
    dir: PathBuf,
    private: PathBuf,
}

impl Bundle {
    /// The bundle `dir` of container `id`, whose runc state lives in `runc_root`.
    pub fn new(dir: &Path, runc_root: &Path, id: &str) -> Result<Bundle, BundleError> {
        let dir = fs::canonicalize(dir).map_err(|source| BundleError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Bundle {
            dir,
            private: private_dir(runc_root, id)?,
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// runq's root-only directory for the container.
    pub fn private_dir(&self) -> &Path {
        &self.private
    }

    fn original_path(&self) -> PathBuf {
        self.private.join(ORIGINAL_SPEC_FILE)
    }

    /// Whether runq made this container a VM, rather than leaving it to runc: told from runq's
    /// own root-only directory, never from the bundle, which a container whose `root.path` is
    /// `.` can write.
    pub fn is_runq(&self) -> bool {
        self.private.join(VM_CONFIG_FILE).is_file()
    }

    /// The engine's spec as `create` saved it in runq's own directory.
    pub fn created_spec(&self) -> Result<Spec, BundleError> {
        read_spec(&self.original_path())
    }

    /// The engine's spec, from its bundle.
    pub fn original_spec(&self) -> Result<Spec, BundleError> {
        read_spec(&self.config_path())
    }

    /// The bundle runc gets: runq's private directory, holding the proxy's spec.
    pub fn runc_bundle(&self) -> &Path {
        &self.private
    }

    /// runq mounts its own tmpfs at /.runq; an image with anything but a directory there (a
    /// link would send runc's mounts elsewhere) is refused, naming the path.
    pub fn check_image(&self, original: &Spec) -> Result<(), BundleError> {
        use nix::sys::stat::SFlag;
        let Some(root) = original.root() else {
            return Ok(());
        };
        let root = self.dir.join(root.path());
        match runq_shared::in_root::entry_identity(&root, layout::RUNQ_DIR) {
            Ok(found) if found.kind != SFlag::S_IFDIR => Err(BundleError::RunqPathTaken {
                path: root.join(layout::RUNQ_DIR.trim_start_matches('/')),
                kind: runq_shared::in_root::kind_name(found.kind),
            }),
            _ => Ok(()),
        }
    }

    /// Writes runq's files for the container (root-only): the engine's spec, the VM config,
    /// the mount points runc will make, the engine's bundle path, and the spec runc runs, its
    /// paths anchored to the engine's bundle since runc resolves them from its own.
    pub fn write(&self, original: &Spec, rewritten: &Rewritten) -> Result<(), BundleError> {
        make_private_dir(&self.private)?;
        write_json(&self.original_path(), original, 0o600)?;
        write_json(&self.private.join(VM_CONFIG_FILE), &rewritten.vm, 0o600)?;
        let made = self.missing_mount_points(original, &rewritten.spec);
        write_json(&self.private.join(MOUNT_POINTS_FILE), &made, 0o600)?;
        let dir = std::path::absolute(&self.dir).map_err(|source| io(&self.dir, source))?;
        write_json(&self.private.join(ENGINE_BUNDLE_FILE), &dir, 0o600)?;
        let mut spec = rewritten.spec.clone();
        crate::rewrite::anchor_paths(&mut spec, &dir);
        write_json(&self.private.join("config.json"), &spec, 0o600)?;
        if let Some(node) = &rewritten.tun_node {
            make_tun_node(node)?;
        }
        make_fifo(&self.start_report_path())
    }

    /// What runq hands the proxy through runc, at the numbers it expects them
    /// ([`layout::VM_CONFIG_FD`], [`layout::START_REPORT_FD`]). The FIFO opened for reading and writing, so that the open waits
    /// for no reader.
    pub fn handed_fds(&self) -> Result<Vec<(std::os::fd::OwnedFd, i32)>, BundleError> {
        let open = |path: &Path, write: bool| {
            OpenOptions::new()
                .read(true)
                .write(write)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .map(std::os::fd::OwnedFd::from)
                .map_err(|source| io(path, source))
        };
        let fds = vec![
            (
                open(&self.private.join(VM_CONFIG_FILE), false)?,
                layout::VM_CONFIG_FD,
            ),
            (
                open(&self.start_report_path(), true)?,
                layout::START_REPORT_FD,
            ),
        ];
        Ok(fds)
    }

    /// The FIFO on which the proxy tells `runq start` that the application runs.
    pub fn start_report_path(&self) -> PathBuf {
        self.private.join(START_REPORT_FIFO)
    }

    /// The VM config `create` wrote.
    pub fn vm_config(&self) -> Result<runq_shared::config::VmConfig, BundleError> {
        read_vm_config(&self.private)
    }

    /// Writes a root-only file into runq's private directory; returns its path.
    pub fn write_private(
        &self,
        name: &str,
        value: &impl serde::Serialize,
    ) -> Result<PathBuf, BundleError> {
        let path = self.private.join(name);
        write_json(&path, value, 0o600)?;
        Ok(path)
    }

    /// Removes what runq and runc added for the container.
    pub fn clean_up(&self) -> Result<(), BundleError> {
        clean_up(&self.private)
    }

    /// Directories runc will have to create in the root for the mounts runq adds, outermost
    /// first, as paths inside the root. Read before the container ever ran, from the image as
    /// the engine prepared it, and resolved inside the root.
    fn missing_mount_points(&self, original: &Spec, rewritten: &Spec) -> MountPoints {
        let Some(root) = original.root() else {
            return MountPoints::default();
        };
        let root = self.dir.join(root.path());
        let before = original.mounts().clone().unwrap_or_default();
        let mut paths: Vec<String> = Vec::new();
        for mount in rewritten.mounts().iter().flatten() {
            if before.contains(mount) {
                continue;
            }
            let mut path = PathBuf::from("/");
            for part in mount.destination().components().skip(1) {
                path.push(part);
                let text = path.to_string_lossy().into_owned();
                if !paths.contains(&text)
                    && runq_shared::in_root::identity(&root, &text).is_err_and(|e| e.is_not_found())
                {
                    paths.push(text);
                }
            }
        }
        MountPoints { root, paths }
    }
}

/// runq's private directory for container `id` under runc's state root, once the id is one
/// runc would accept: it becomes part of a path.
pub fn private_dir(runc_root: &Path, id: &str) -> Result<PathBuf, BundleError> {
    let valid = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b));
    if !valid {
        return Err(BundleError::BadId(id.to_string()));
    }
    Ok(layout::private_dir(runc_root, id))
}

/// The tun node of a user namespace's mapped root (see [`crate::rewrite::TunNode`]), made
/// once and kept: the next container of the same mapping binds it too. One whose type,
/// numbers, owner or mode differ is replaced, through a rename, so that no container ever
/// binds a half-made one.
fn make_tun_node(node: &crate::rewrite::TunNode) -> Result<(), BundleError> {
    use nix::sys::stat::{lstat, makedev, mknod, Mode, SFlag};
    let path = &node.path;
    let wanted = makedev(10, 200);
    if let Ok(found) = lstat(path) {
        let is_char = found.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFCHR.bits();
        if is_char
            && found.st_rdev == wanted
            && (found.st_uid, found.st_gid) == (node.uid, node.gid)
            && found.st_mode & 0o7777 == 0o600
        {
            return Ok(());
        }
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    make_private_dir(dir)?;
    let made = dir.join(format!(".tun-{}", std::process::id()));
    let _ = fs::remove_file(&made);
    mknod(&made, SFlag::S_IFCHR, Mode::S_IRUSR | Mode::S_IWUSR, wanted)
        .map_err(|errno| io(&made, errno.into()))?;
    let finish = || -> Result<(), BundleError> {
        nix::unistd::chown(
            &made,
            Some(nix::unistd::Uid::from_raw(node.uid)),
            Some(nix::unistd::Gid::from_raw(node.gid)),
        )
        .map_err(|errno| io(&made, errno.into()))?;
        fs::set_permissions(&made, fs::Permissions::from_mode(0o600))
            .map_err(|source| io(&made, source))?;
        fs::rename(&made, path).map_err(|source| io(path, source))
    };
    finish().inspect_err(|_| {
        let _ = fs::remove_file(&made);
    })
}

/// A root-only FIFO at `path`, replacing one a failed create may have left.
fn make_fifo(path: &Path) -> Result<(), BundleError> {
    use nix::sys::stat::Mode;
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(path, e)),
        _ => {}
    }
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR)
        .map_err(|errno| io(path, errno.into()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| io(path, source))
}

fn make_private_dir(dir: &Path) -> Result<(), BundleError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| io(dir, source))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| io(dir, source))
}

/// Removes the mount points runc made in the image's root for runq's mounts (each if still an
/// empty directory, deepest first, resolved inside the root: the guest may have turned any of
/// their parents into a link to a host path since), then runq's private directory `private`.
pub fn clean_up(private: &Path) -> Result<(), BundleError> {
    let made: MountPoints = fs::read(private.join(MOUNT_POINTS_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    for path in made.paths.iter().rev() {
        let _ = runq_shared::in_root::remove_empty_dir(&made.root, path);
    }
    remove_private_dir(private)
}

/// The VM config `create` wrote into the private directory `private`.
pub fn read_vm_config(private: &Path) -> Result<runq_shared::config::VmConfig, BundleError> {
    let path = private.join(VM_CONFIG_FILE);
    let bytes = fs::read(&path).map_err(|source| io(&path, source))?;
    serde_json::from_slice(&bytes).map_err(|source| BundleError::Parse { path, source })
}

/// The engine's bundle directory of a container runq created, as `create` recorded it.
pub fn engine_bundle(private: &Path) -> Option<PathBuf> {
    let bytes = fs::read(private.join(ENGINE_BUNDLE_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes the container's private directory. The directory of all of them stays: another
/// container's create may be making its own in it right now.
pub fn remove_private_dir(dir: &Path) -> Result<(), BundleError> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|source| io(dir, source))?;
    }
    Ok(())
}

/// The mount points runc made in the image for runq's mounts: paths inside `root`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct MountPoints {
    root: PathBuf,
    paths: Vec<String>,
}

/// The mount points runc will create for runq, recorded so `delete` can remove them.
const MOUNT_POINTS_FILE: &str = "mount-points.json";

/// The engine's bundle path, for `state` to show.
const ENGINE_BUNDLE_FILE: &str = "engine-bundle.json";

fn io(path: &Path, source: std::io::Error) -> BundleError {
    BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a spec that must be a regular file (not a link, FIFO or device: with `root.path` `.`
/// the bundle is the container's tree), bounded.
fn read_spec(path: &Path) -> Result<Spec, BundleError> {
    use std::io::Read;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => BundleError::NotASpecFile {
                path: path.to_path_buf(),
            },
            _ => io(path, source),
        })?;
    let metadata = file.metadata().map_err(|source| io(path, source))?;
    if !metadata.is_file() || metadata.len() > MAX_SPEC_LEN {
        return Err(BundleError::NotASpecFile {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_LEN)
        .read_to_end(&mut bytes)
        .map_err(|source| io(path, source))?;
    serde_json::from_slice(&bytes).map_err(|source| BundleError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub fn write_json(
    path: &Path,
    value: &impl serde::Serialize,
    mode: u32,
) -> Result<(), BundleError> {
    let text = serde_json::to_vec_pretty(value).map_err(|source| BundleError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let temporary = path.with_extension("runq-tmp");
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(|source| io(&temporary, source))?;
    file.write_all(&text)
        .and_then(|()| file.sync_all())
        .map_err(|source| io(&temporary, source))?;
    fs::rename(&temporary, path).map_err(|source| io(path, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With `root.path` `.` the container can replace config.json: a link (to `/dev/zero`, a
    /// host file) or a FIFO is refused by name, without hanging or reading without bound.
    #[test]
    fn a_spec_that_is_a_link_or_a_fifo_is_refused() {
        let dir = std::env::temp_dir().join(format!("runq-bundle-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let link = dir.join("link.json");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let fifo = dir.join("fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for path in [&link, &fifo] {
            let error = read_spec(path).unwrap_err();
            assert!(
                matches!(error, BundleError::NotASpecFile { .. }),
                "{path:?}: {error}"
            );
            assert!(error.to_string().contains("not a regular file"), "{error}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}

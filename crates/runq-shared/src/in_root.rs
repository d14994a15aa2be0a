//! The host side's access to a container's tree. The tree is the image's and the guest's to
//! shape: any component may be a symbolic link (absolute ones meant for the container's
//! root), a FIFO that blocks an open, or a device. Every path is therefore resolved as the
//! container would resolve it (`openat2` with `RESOLVE_IN_ROOT`), only regular files are read,
//! and never more than a bound.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, SFlag};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum InRootError {
    #[error("{path} (in {root}): {source}")]
    Io {
        root: PathBuf,
        path: String,
        source: std::io::Error,
    },
    #[error("{path} (in {root}) is {kind}, not a regular file")]
    NotRegular {
        root: PathBuf,
        path: String,
        kind: &'static str,
    },
    #[error("{path} (in {root}) is larger than {limit} bytes")]
    TooLarge {
        root: PathBuf,
        path: String,
        limit: u64,
    },
}

impl InRootError {
    /// Whether the path does not exist (as opposed to existing as the wrong thing).
    pub fn is_not_found(&self) -> bool {
        matches!(self, InRootError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A file's identity and kind, as `stat` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub kind: SFlag,
}

/// Opens `path` below `root` as an `O_PATH` descriptor, resolving symbolic links as if `root`
/// were `/` and never through magic links such as /proc/PID/fd/N.
pub fn open_path(root: &Path, path: &str) -> Result<OwnedFd, InRootError> {
    open_path_with(root, path, OFlag::empty())
}

fn open_path_with(root: &Path, path: &str, extra: OFlag) -> Result<OwnedFd, InRootError> {
    let io = |source: std::io::Error| InRootError::Io {
        root: root.to_path_buf(),
        path: path.to_string(),
        source,
    };
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io(e.into()))?;
    // SAFETY: open returned a fresh descriptor that nothing else owns.
    let root_fd = unsafe { OwnedFd::from_raw_fd(root_fd) };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | extra)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(root_fd.as_raw_fd(), relative(path), how).map_err(|e| io(e.into()))?;
    // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What `path` below `root` is.
pub fn identity(root: &Path, path: &str) -> Result<Identity, InRootError> {
    identity_of(root, path, open_path(root, path)?)
}

/// What `path` below `root` is itself: a final symbolic link is not followed.
pub fn entry_identity(root: &Path, path: &str) -> Result<Identity, InRootError> {
    identity_of(root, path, open_path_with(root, path, OFlag::O_NOFOLLOW)?)
}

fn identity_of(root: &Path, path: &str, fd: OwnedFd) -> Result<Identity, InRootError> {
    let stat = fstat(fd.as_raw_fd()).map_err(|e| InRootError::Io {
        root: root.to_path_buf(),
        path: path.to_string(),
        source: e.into(),
    })?;
    Ok(Identity {
        dev: stat.st_dev,
        ino: stat.st_ino,
        kind: SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()),
    })
}

/// The contents of the regular file `path` below `root`, at most `limit` bytes.
pub fn read_file(root: &Path, path: &str, limit: u64) -> Result<Vec<u8>, InRootError> {
    let fd = open_path(root, path)?;
    let io = |source: std::io::Error| InRootError::Io {
        root: root.to_path_buf(),
        path: path.to_string(),
        source,
    };
    let stat = fstat(fd.as_raw_fd()).map_err(|e| io(e.into()))?;
    let kind = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
    if kind != SFlag::S_IFREG {
        return Err(InRootError::NotRegular {
            root: root.to_path_buf(),
            path: path.to_string(),
            kind: kind_name(kind),
        });
    }
    // Reopened through the descriptor: the very file just checked, whatever the path names now.
    let file = std::fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(InRootError::TooLarge {
            root: root.to_path_buf(),
            path: path.to_string(),
            limit,
        });
    }
    Ok(bytes)
}

/// Removes the directory `path` below `root` if it is empty; a path that is gone, not a
/// directory or not empty is left as it is.
pub fn remove_empty_dir(root: &Path, path: &str) -> Result<(), InRootError> {
    let relative = Path::new(relative(path));
    let (Some(parent), Some(name)) = (relative.parent(), relative.file_name()) else {
        return Ok(());
    };
    let parent_text = parent.to_string_lossy();
    let dir = match open_path(
        root,
        if parent_text.is_empty() {
            "."
        } else {
            &parent_text
        },
    ) {
        Ok(dir) => dir,
        Err(error) if error.is_not_found() => return Ok(()),
        Err(error) => return Err(error),
    };
    match nix::unistd::unlinkat(
        Some(dir.as_raw_fd()),
        name,
        nix::unistd::UnlinkatFlags::RemoveDir,
    ) {
        Ok(())
        | Err(nix::errno::Errno::ENOENT)
        | Err(nix::errno::Errno::ENOTDIR)
        | Err(nix::errno::Errno::ENOTEMPTY)
        | Err(nix::errno::Errno::EEXIST)
        | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(InRootError::Io {
            root: root.to_path_buf(),
            path: path.to_string(),
            source: e.into(),
        }),
    }
}

/// `path` without its leading slashes, `.` for the root itself; `..` cannot climb out anyway
/// under `RESOLVE_IN_ROOT`.
fn relative(path: &str) -> &str {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        "."
    } else {
        trimmed
    }
}

pub fn kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symbolic link",
        _ => "not a regular file",
    }
}

/// Whether `path` names only plain components (no `..`), for paths recorded by runq itself.
pub fn is_plain(path: &Path) -> bool {
    path.components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile_dir::Dir {
        tempfile_dir::Dir::new()
    }

    /// A small temporary directory, so that runq-shared needs no test dependency.
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let path = std::env::temp_dir().join(format!(
                    "runq-in-root-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&path).unwrap();
                Dir(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let root = tree();
        let outside = tree();
        std::fs::create_dir_all(root.0.join("etc")).unwrap();
        std::fs::write(root.0.join("etc/real"), "inside\n").unwrap();
        std::fs::write(outside.0.join("secret"), "outside\n").unwrap();
        symlink("/etc/real", root.0.join("etc/passwd")).unwrap();
        symlink(outside.0.join("secret"), root.0.join("etc/group")).unwrap();
        symlink("../../../../../../etc/real", root.0.join("climb")).unwrap();
        assert_eq!(read_file(&root.0, "/etc/passwd", 100).unwrap(), b"inside\n");
        assert_eq!(read_file(&root.0, "climb", 100).unwrap(), b"inside\n");
        // The host path the link names does not exist inside the root.
        assert!(read_file(&root.0, "/etc/group", 100)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn fifos_devices_and_directories_are_refused_and_size_is_bounded() {
        let root = tree();
        nix::unistd::mkfifo(&root.0.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        symlink("/dev/zero", root.0.join("zero")).unwrap();
        std::fs::write(root.0.join("big"), vec![b'x'; 100]).unwrap();
        let error = read_file(&root.0, "fifo", 10).unwrap_err().to_string();
        assert!(error.contains("a FIFO"), "{error}");
        // /dev/zero inside this root does not exist.
        assert!(read_file(&root.0, "zero", 10).unwrap_err().is_not_found());
        let error = read_file(&root.0, "/", 10).unwrap_err().to_string();
        assert!(error.contains("a directory"), "{error}");
        let error = read_file(&root.0, "big", 99).unwrap_err().to_string();
        assert!(error.contains("larger than 99 bytes"), "{error}");
        assert_eq!(read_file(&root.0, "big", 100).unwrap().len(), 100);
    }

    #[test]
    fn only_empty_directories_inside_the_root_are_removed() {
        let root = tree();
        let outside = tree();
        std::fs::create_dir_all(outside.0.join("modules")).unwrap();
        std::fs::create_dir_all(root.0.join("empty")).unwrap();
        std::fs::create_dir_all(root.0.join("full/x")).unwrap();
        symlink(&outside.0, root.0.join("lib")).unwrap();
        remove_empty_dir(&root.0, "/empty").unwrap();
        remove_empty_dir(&root.0, "/full").unwrap();
        remove_empty_dir(&root.0, "/lib/modules").unwrap();
        remove_empty_dir(&root.0, "/gone/deeper").unwrap();
        assert!(!root.0.join("empty").exists());
        assert!(root.0.join("full").exists());
        assert!(outside.0.join("modules").exists(), "followed a link out");
        assert!(is_plain(Path::new("/a/b")));
        assert!(!is_plain(Path::new("/a/../b")));
    }
}

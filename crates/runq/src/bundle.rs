//! The bundle directory: the engine's config.json, rewritten in place, with the original and
//! the VM config kept in a root-only `runq/` beside it; restored when the container is deleted.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use runq_shared::layout::{BUNDLE_RUNQ_DIR, ORIGINAL_SPEC_FILE, VM_CONFIG_FILE};
use thiserror::Error;

use crate::rewrite::{is_rewritten, Rewritten};

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
    #[error("{path} was rewritten by runq but its original ({original}) is gone")]
    LostOriginal { path: PathBuf, original: PathBuf },
}

pub struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    pub fn new(dir: &Path) -> Result<Bundle, BundleError> {
        let dir = fs::canonicalize(dir).map_err(|source| BundleError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Bundle { dir })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    pub fn runq_dir(&self) -> PathBuf {
        self.dir.join(BUNDLE_RUNQ_DIR)
    }

    fn original_path(&self) -> PathBuf {
        self.runq_dir().join(ORIGINAL_SPEC_FILE)
    }

    /// The engine's spec, even when config.json is already runq's output (create twice).
    /// Whether runq rewrote this bundle (a runq container), rather than leaving it to runc.
    pub fn is_runq(&self) -> Result<bool, BundleError> {
        Ok(is_rewritten(&read_spec(&self.config_path())?))
    }

    pub fn original_spec(&self) -> Result<Spec, BundleError> {
        let current = read_spec(&self.config_path())?;
        if !is_rewritten(&current) {
            return Ok(current);
        }
        let original = self.original_path();
        if !original.exists() {
            return Err(BundleError::LostOriginal {
                path: self.config_path(),
                original,
            });
        }
        read_spec(&original)
    }

    /// Saves the original, writes the VM config (root-only) and the rewritten config.json.
    pub fn write(&self, original: &Spec, rewritten: &Rewritten) -> Result<(), BundleError> {
        let dir = self.runq_dir();
        fs::create_dir_all(&dir).map_err(|source| io(&dir, source))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|source| io(&dir, source))?;
        write_json(&self.original_path(), original, 0o600)?;
        write_json(&dir.join(VM_CONFIG_FILE), &rewritten.vm, 0o600)?;
        let missing = self.missing_mount_points(original, &rewritten.spec);
        write_json(&dir.join(MOUNT_POINTS_FILE), &missing, 0o600)?;
        let mode = fs::metadata(self.config_path())
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o600);
        write_json(&self.config_path(), &rewritten.spec, mode)
    }

    /// The VM config `create` wrote.
    pub fn vm_config(&self) -> Result<runq_shared::config::VmConfig, BundleError> {
        let path = self.runq_dir().join(VM_CONFIG_FILE);
        let bytes = fs::read(&path).map_err(|source| io(&path, source))?;
        serde_json::from_slice(&bytes).map_err(|source| BundleError::Parse { path, source })
    }

    /// Writes a root-only file into the bundle's runq directory; returns its path.
    pub fn write_private(
        &self,
        name: &str,
        value: &impl serde::Serialize,
    ) -> Result<PathBuf, BundleError> {
        let path = self.runq_dir().join(name);
        write_json(&path, value, 0o600)?;
        Ok(path)
    }

    /// Puts the engine's config.json back and removes what runq and runc added for it.
    pub fn restore(&self) -> Result<(), BundleError> {
        let dir = self.runq_dir();
        // runc made these mount points in the image's root for runq's mounts; each is
        // removed if still empty, deepest first.
        let made: Vec<PathBuf> = fs::read(dir.join(MOUNT_POINTS_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        for path in made.iter().rev() {
            let _ = fs::remove_dir(path);
        }
        let original = self.original_path();
        if original.exists() {
            fs::rename(&original, self.config_path()).map_err(|source| io(&original, source))?;
        }
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|source| io(&dir, source))?;
        }
        Ok(())
    }

    /// Directories runc will have to create in the root for the mounts runq adds, outermost
    /// first.
    fn missing_mount_points(&self, original: &Spec, rewritten: &Spec) -> Vec<PathBuf> {
        let Some(root) = original.root() else {
            return Vec::new();
        };
        let root = self.dir.join(root.path());
        let before = original.mounts().clone().unwrap_or_default();
        let mut missing = Vec::new();
        for mount in rewritten.mounts().iter().flatten() {
            if before.contains(mount) {
                continue;
            }
            let mut path = root.clone();
            for part in mount.destination().components().skip(1) {
                path.push(part);
                if path.symlink_metadata().is_err() && !missing.contains(&path) {
                    missing.push(path.clone());
                }
            }
        }
        missing
    }
}

/// The mount points runc will create for runq, recorded so `delete` can remove them.
const MOUNT_POINTS_FILE: &str = "mount-points.json";

fn io(path: &Path, source: std::io::Error) -> BundleError {
    BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_spec(path: &Path) -> Result<Spec, BundleError> {
    let bytes = fs::read(path).map_err(|source| io(path, source))?;
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

//! The templates of a container's VM (see `runq_shared::template`), found by runq create on the
//! host and handed to the proxy as descriptors. Where one is missing, a builder is started in
//! the background for it; this container boots cold.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use runq_shared::config::VmSettings;
use runq_shared::layout::assets;
use runq_shared::template::{self, FileId, Offer, Shape, TemplateError, MAX_NICS};

use crate::options::RunqOptions;

/// The builder's messages, appended, in the templates' directory.
pub const BUILD_LOG: &str = "build.log";

/// What runq create hands the proxy: a descriptor for each number of NICs (the template's
/// state, or `/dev/null`), and the offers the VM config names.
pub struct Found {
    pub offers: Vec<Offer>,
    pub descriptors: Vec<OwnedFd>,
}

impl Found {
    /// No template: every descriptor is `/dev/null`.
    pub fn none() -> std::io::Result<Found> {
        Ok(Found {
            offers: Vec::new(),
            descriptors: (0..=MAX_NICS)
                .map(|_| File::open("/dev/null").map(OwnedFd::from))
                .collect::<std::io::Result<_>>()?,
        })
    }
}

/// The shapes of `vm` with 0 to [`MAX_NICS`] NICs, as they are on this host now; none where
/// an input cannot be read (the cold boot will name it) or the VM cannot have a template.
pub fn shapes(vm: &VmSettings, options: &RunqOptions, assets_dir: &Path) -> Vec<Shape> {
    let kernel = options
        .kernel
        .clone()
        .unwrap_or_else(|| assets_dir.join(assets::KERNEL));
    let initrd = options
        .initrd
        .clone()
        .unwrap_or_else(|| assets_dir.join(assets::INITRD));
    let tsc_khz = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| runq_shared::qemu::tsc_khz_from_cpuinfo(&text));
    let (Ok(assets), Ok(kernel), Ok(initrd)) = (
        FileId::of(assets_dir),
        FileId::of(&kernel),
        FileId::of(&initrd),
    ) else {
        return Vec::new();
    };
    (0..=MAX_NICS)
        .filter_map(|nics| {
            Shape::of(
                vm,
                nics,
                tsc_khz,
                assets.clone(),
                kernel.clone(),
                initrd.clone(),
            )
        })
        .collect()
}

/// The templates of these shapes that exist and are unchanged since they were written, and a
/// background build of the missing ones. A damaged one (truncated, rewritten, replaced) is
/// named in one line, removed and built again; the container boots cold.
pub fn find(shapes: Vec<Shape>) -> std::io::Result<Found> {
    let mut found = Found::none()?;
    let mut missing = Vec::new();
    for shape in shapes {
        let key = shape.key();
        let dir = template::dir().join(&key);
        match open_state(&dir, &key) {
            Ok((state, offer)) => {
                found.descriptors[shape.nics] = state.into();
                found.offers.push(offer);
            }
            Err(error) => {
                if !matches!(&error, TemplateError::Io(_, e) if e.kind() == std::io::ErrorKind::NotFound)
                {
                    eprintln!("runq: {error}; booting without it, and making it again");
                    let _ = std::fs::remove_dir_all(&dir);
                }
                missing.push(shape);
            }
        }
    }
    missing.retain(|shape| !being_built(&shape.key()));
    if !missing.is_empty() {
        if let Err(error) = start_builder(&missing) {
            eprintln!("runq: cannot start the template builder: {error}");
        }
    }
    Ok(found)
}

/// Removes the template `key` (hex, as the start report's parser checked), which QEMU could
/// not load: the next container of its shape builds it again.
pub fn discard(key: &str) {
    let dir = template::dir().join(key);
    // The proxy said so on the container's stderr already.
    let _ = std::fs::remove_dir_all(dir);
}

/// A builder holds the build lock of `key` now.
fn being_built(key: &str) -> bool {
    let path = crate::template_build::lock_path(&template::dir(), key);
    let Ok(lock) = File::open(path) else {
        return false;
    };
    matches!(
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockSharedNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

/// The template in `dir` exists and is unchanged since it was written.
pub fn usable(dir: &Path, key: &str) -> bool {
    open_state(dir, key).is_ok()
}

fn open_state(dir: &Path, key: &str) -> Result<(File, Offer), TemplateError> {
    let meta = template::read_meta(dir, key)?;
    let path = dir.join(template::STATE);
    let state = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| TemplateError::Io(path.display().to_string(), e))?;
    template::check_state(&state, &meta)?;
    Ok((
        state,
        Offer {
            nics: meta.shape.nics,
            key: meta.key,
            size: meta.size,
        },
    ))
}

/// Makes the templates' directory, root-only.
pub fn templates_dir() -> std::io::Result<PathBuf> {
    let dir = template::dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// `runq template build --shapes-on-stdin` in its own session, reading the shapes on its stdin, writing to the
/// build log; nobody waits for it.
fn start_builder(shapes: &[Shape]) -> std::io::Result<()> {
    let dir = templates_dir()?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(BUILD_LOG))?;
    let mut command = Command::new("/proc/self/exe");
    command
        .args(["template", "build", "--shapes-on-stdin"])
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log);
    // The builder is nobody's child: forked once more and the middle process gone, so that
    // it belongs neither to `runq run`'s process tree nor to the container's.
    // SAFETY: fork, _exit and setsid are async-signal-safe; the middle process only exits.
    unsafe {
        command.pre_exec(|| {
            match libc::fork() {
                -1 => return Err(std::io::Error::last_os_error()),
                0 => {}
                _ => libc::_exit(0),
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut middle = command.spawn()?;
    if let Some(mut stdin) = middle.stdin.take() {
        stdin.write_all(&serde_json::to_vec(shapes).map_err(std::io::Error::other)?)?;
    }
    middle.wait()?;
    Ok(())
}

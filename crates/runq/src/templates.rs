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
use runq_shared::template::{self, FileId, Offer, Shape, MAX_NICS};

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

/// The templates of these shapes that exist and look whole (their full check is the proxy's,
/// before it restores one), and a background build of the missing ones.
pub fn find(shapes: Vec<Shape>) -> std::io::Result<Found> {
    let mut found = Found::none()?;
    let mut missing = Vec::new();
    for shape in shapes {
        let key = shape.key();
        let dir = template::dir().join(&key);
        match open_state(&dir, &key) {
            Some((state, offer)) => {
                found.descriptors[shape.nics] = state.into();
                found.offers.push(Offer {
                    nics: shape.nics,
                    ..offer
                });
            }
            None => missing.push(shape),
        }
    }
    if !missing.is_empty() {
        if let Err(error) = start_builder(&missing) {
            eprintln!("runq: cannot start the template builder: {error}");
        }
    }
    Ok(found)
}

fn open_state(dir: &Path, key: &str) -> Option<(File, Offer)> {
    let meta = template::read_meta(dir, key).ok()?;
    let state = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir.join(template::STATE))
        .ok()?;
    state.metadata().ok().filter(|m| m.is_file())?;
    Some((
        state,
        Offer {
            nics: meta.shape.nics,
            key: meta.key,
            size: meta.size,
            sha256: meta.sha256,
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

/// `runq template build` in its own session, reading the shapes on its stdin, writing to the
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
        .args(["template", "build"])
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches nothing of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&serde_json::to_vec(shapes).map_err(std::io::Error::other)?)?;
    }
    Ok(())
}

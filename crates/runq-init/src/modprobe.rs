//! The kernel's on-demand module loader: /sbin/modprobe is a link to runq-init, which the
//! kernel runs as `modprobe -q -- NAME` when it wants a file system type, a protocol or a
//! crypto algorithm that no loaded module provides.
//!
//! It reads the full module tree that runq-init binds over /lib/modules once the container
//! root is mounted: the module named, or the modules whose alias matches the name, each after
//! its dependencies. A module already loaded is not an error. Being runq-init itself keeps a
//! second static binary (busybox, 1.9 MB) out of the initrd, which every boot unpacks.
//!
//! The link is only made once that tree is there. Before, the kernel's requests fail at once,
//! as they must: while it boots it asks six times for crypto templates that are built in
//! (`crypto-hmac(sha256)`, ...), and running a loader for each, which could find nothing,
//! cost ~90 ms of every boot under TCG.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the kernel runs its module loader (`/proc/sys/kernel/modprobe`, by default).
const MODPROBE_PATH: &str = "/sbin/modprobe";

/// Makes runq-init the kernel's module loader; called once the module tree is bound.
pub fn install() -> std::io::Result<()> {
    std::fs::create_dir_all("/sbin")?;
    std::os::unix::fs::symlink("/init", MODPROBE_PATH)
}

/// Whether runq-init was started under the name the kernel uses for modprobe.
pub fn invoked_as_modprobe(argv0: &str) -> bool {
    Path::new(argv0).file_name().and_then(|n| n.to_str()) == Some("modprobe")
}

pub fn main(args: &[String]) -> ExitCode {
    let quiet = args.iter().any(|a| a == "-q" || a == "--quiet");
    let Some(name) = args.iter().skip(1).find(|a| !a.starts_with('-')) else {
        eprintln!("modprobe: no module name given");
        return ExitCode::FAILURE;
    };
    match probe(name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if !quiet {
                eprintln!("modprobe: {name}: {error}");
            }
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn probe(name: &str) -> Result<(), ModprobeError> {
    let dir = PathBuf::from(format!(
        "{}/{}",
        runq_shared::layout::MODULES_IN_CONTAINER,
        crate::modules::kernel_release()
    ));
    let read = |file: &str| {
        let path = dir.join(file);
        std::fs::read_to_string(&path).map_err(|e| ModprobeError::Read(path, e))
    };
    let index = ModuleIndex::parse(&read("modules.dep")?);
    let plan = if index.contains(name) {
        index.load_order(&[name])?
    } else {
        let builtin = read("modules.builtin").unwrap_or_default();
        let targets = aliased(&read("modules.alias")?, name);
        if targets.is_empty() {
            return if is_builtin(&builtin, name) {
                Ok(())
            } else {
                Err(ModprobeError::NotFound)
            };
        }
        let wanted: Vec<&str> = targets
            .iter()
            .map(String::as_str)
            .filter(|m| !is_builtin(&builtin, m))
            .collect();
        index.load_order(&wanted)?
    };
    for file in plan {
        crate::modules::load(&dir.join(file).to_string_lossy())
            .map_err(|e| ModprobeError::Load(e.to_string()))?;
    }
    Ok(())
}

/// Module names compare with `-` and `_` as one, as the kernel's do.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The name of a module from its path in modules.dep or modules.builtin.
fn module_name(path: &str) -> String {
    normalize(crate::modules::module_name(path))
}

fn is_builtin(builtin: &str, name: &str) -> bool {
    let name = normalize(name);
    builtin.lines().any(|line| module_name(line.trim()) == name)
}

/// The modules whose alias pattern (a shell glob) matches `name`.
fn aliased(aliases: &str, name: &str) -> Vec<String> {
    let Ok(c_name) = CString::new(name) else {
        return Vec::new();
    };
    let mut modules = Vec::new();
    for line in aliases.lines() {
        let mut words = line.split_whitespace();
        let (Some("alias"), Some(pattern), Some(module)) =
            (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Ok(c_pattern) = CString::new(pattern) else {
            continue;
        };
        // SAFETY: fnmatch reads two NUL-terminated strings we own and keeps neither.
        let matched = unsafe { libc::fnmatch(c_pattern.as_ptr(), c_name.as_ptr(), 0) } == 0;
        let module = normalize(module);
        if matched && !modules.contains(&module) {
            modules.push(module);
        }
    }
    modules
}

/// modules.dep: each module's file, relative to the tree, and its dependencies' names.
struct ModuleIndex {
    modules: HashMap<String, (String, Vec<String>)>,
}

impl ModuleIndex {
    fn parse(dep: &str) -> ModuleIndex {
        let modules = dep
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(file, deps)| {
                let file = file.trim();
                let deps = deps.split_whitespace().map(module_name).collect();
                (module_name(file), (file.to_string(), deps))
            })
            .collect();
        ModuleIndex { modules }
    }

    fn contains(&self, name: &str) -> bool {
        self.modules.contains_key(&normalize(name))
    }

    /// The files to load for `wanted`, every module after its dependencies, each once.
    fn load_order(&self, wanted: &[&str]) -> Result<Vec<String>, ModprobeError> {
        let mut order = Vec::new();
        let mut seen = Vec::new();
        for name in wanted {
            self.visit(&normalize(name), &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), ModprobeError> {
        if seen.iter().any(|s| s == name) {
            return Ok(());
        }
        seen.push(name.to_string());
        let (file, deps) = self
            .modules
            .get(name)
            .ok_or_else(|| ModprobeError::MissingDependency(name.to_string()))?;
        for dep in deps {
            self.visit(dep, seen, order)?;
        }
        order.push(file.clone());
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ModprobeError {
    #[error("read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("no such module or alias in the module tree")]
    NotFound,
    #[error("module {0} is in no line of modules.dep")]
    MissingDependency(String),
    #[error("{0}")]
    Load(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/fs/xfs/xfs.ko: kernel/lib/libcrc32c.ko\n\
                       kernel/lib/libcrc32c.ko:\n\
                       kernel/a/top.ko: kernel/a/mid.ko kernel/a/base.ko\n\
                       kernel/a/mid.ko: kernel/a/base.ko\n\
                       kernel/a/base.ko:\n\
                       kernel/drivers/char/hw_random/virtio-rng.ko:\n";

    #[test]
    fn dependencies_load_first_and_once() {
        let index = ModuleIndex::parse(DEP);
        assert_eq!(
            index.load_order(&["xfs"]).unwrap(),
            ["kernel/lib/libcrc32c.ko", "kernel/fs/xfs/xfs.ko"]
        );
        assert_eq!(
            index.load_order(&["top", "mid"]).unwrap(),
            ["kernel/a/base.ko", "kernel/a/mid.ko", "kernel/a/top.ko"]
        );
    }

    #[test]
    fn dashes_and_underscores_are_one() {
        let index = ModuleIndex::parse(DEP);
        assert!(index.contains("virtio_rng") && index.contains("virtio-rng"));
        assert!(is_builtin("kernel/fs/ext4/ext4.ko\n", "ext4"));
        assert!(!is_builtin("kernel/fs/ext4/ext4.ko\n", "xfs"));
    }

    #[test]
    fn a_dependency_missing_from_the_index_is_an_error() {
        let index = ModuleIndex::parse("kernel/x.ko: kernel/gone.ko\n");
        let error = index.load_order(&["x"]).unwrap_err().to_string();
        assert!(error.contains("gone"), "{error}");
    }

    #[test]
    fn aliases_match_as_globs() {
        let aliases = "# comment\nalias fs-xfs xfs\nalias crypto-crc32c* crc32c_generic\n\
                       alias net-pf-[0-9] fake-proto\nalias fs-xfs xfs\nbogus line\n";
        assert_eq!(aliased(aliases, "fs-xfs"), ["xfs"]);
        assert_eq!(aliased(aliases, "crypto-crc32c-intel"), ["crc32c_generic"]);
        assert_eq!(aliased(aliases, "net-pf-7"), ["fake_proto"]);
        assert!(aliased(aliases, "fs-nothing").is_empty());
    }

    #[test]
    fn only_the_modprobe_name_selects_modprobe() {
        assert!(invoked_as_modprobe("/sbin/modprobe"));
        assert!(invoked_as_modprobe("modprobe"));
        assert!(!invoked_as_modprobe("/init"));
    }
}

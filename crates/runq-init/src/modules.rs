//! Loads the kernel modules the initrd carries, in the order the asset builder resolved from
//! modules.dep (dependencies first).

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::{console, Context, InitError};

const LOAD_LIST: &str = "/modules.load";

pub fn load_all() -> Result<(), InitError> {
    let list = std::fs::read_to_string(LOAD_LIST).context(|| format!("read {LOAD_LIST}"))?;
    for path in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        load(path)?;
    }
    console::debug("modules loaded");
    Ok(())
}

fn load(path: &str) -> Result<(), InitError> {
    let file = File::open(path).context(|| format!("open module {path}"))?;
    let params = c"";
    // SAFETY: finit_module reads the module from a file descriptor we own for the duration
    // of the call and a NUL-terminated, empty parameter string; no memory is shared.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc != 0 {
        let errno = nix::errno::Errno::last();
        if errno != nix::errno::Errno::EEXIST {
            return Err(InitError::Sys {
                what: format!("load module {path}"),
                source: errno,
            });
        }
    }
    Ok(())
}

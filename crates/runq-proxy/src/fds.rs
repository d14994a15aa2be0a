//! File descriptors the proxy did not open itself must not live on in it or in QEMU.

/// Closes every descriptor above stderr.
pub fn close_inherited() {
    // SAFETY: close_range only closes descriptors; nothing in this process uses any above 2
    // yet, since this runs first in main.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc != 0 {
        // Kernels before 5.9 lack close_range: close what /proc lists instead.
        let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter(|fd| *fd > 2)
                    .collect()
            })
            .unwrap_or_default();
        for fd in fds {
            let _ = nix::unistd::close(fd);
        }
    }
}

//! The bare floor's guest init (`runq-bench boot`): PID 1 of an initrd that holds nothing
//! else. It powers the VM off at once, so QEMU's run time is the floor of any boot with the
//! same QEMU, kernel and command line. With `floor-idle` on the kernel command line (the kernel
//! passes it on as an argument) it announces itself on the serial port and waits instead,
//! for the memory comparison.

/// Not a kernel parameter, so the kernel hands it to init (plain `idle` is one).
const IDLE_ARGUMENT: &str = "floor-idle";

fn main() {
    if std::env::args().any(|arg| arg == IDLE_ARGUMENT) {
        idle();
    }
    // SAFETY: reboot takes no pointers; in a guest PID 1 this ends the VM.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}

fn idle() -> ! {
    // SAFETY: mount is given NUL-terminated strings that outlive the call, and no data.
    unsafe {
        libc::mkdir(c"/dev".as_ptr(), 0o755);
        libc::mount(
            c"devtmpfs".as_ptr(),
            c"/dev".as_ptr(),
            c"devtmpfs".as_ptr(),
            0,
            std::ptr::null(),
        );
    }
    if let Ok(mut serial) = std::fs::OpenOptions::new().write(true).open("/dev/ttyS0") {
        use std::io::Write;
        let _ = serial.write_all(b"runq-floor: idle\n");
    }
    loop {
        std::thread::park();
    }
}

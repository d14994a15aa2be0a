//! A test helper run inside containers: writes through a shared, writable mmap of a file on
//! the container's root or a volume, then reads the file back with read(2). Busybox has no
//! tool that maps a file; this one is static, so it runs in any image.

use std::io::Read;
use std::os::fd::AsRawFd;

const TEXT: &[u8] = b"written-through-mmap\n";

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: runq-test-mmap FILE");
        std::process::exit(2);
    };
    let result = write_through_mmap(&path).and_then(|()| {
        let mut back = Vec::new();
        std::fs::File::open(&path)?.read_to_end(&mut back)?;
        if back.starts_with(TEXT) {
            Ok(())
        } else {
            Err(std::io::Error::other(format!("read back {back:?}")))
        }
    });
    match result {
        Ok(()) => println!("mmap-ok"),
        Err(error) => {
            eprintln!("runq-test-mmap {path}: {error}");
            std::process::exit(1);
        }
    }
}

fn write_through_mmap(path: &str) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.set_len(4096)?;
    // SAFETY: a fresh shared mapping of a file we hold open; nothing else aliases it.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the mapping is 4096 bytes long and TEXT is shorter.
    unsafe { std::ptr::copy_nonoverlapping(TEXT.as_ptr(), map.cast::<u8>(), TEXT.len()) };
    // SAFETY: msync and munmap of the mapping made above, with its length.
    let synced = unsafe { libc::msync(map, 4096, libc::MS_SYNC) };
    let error = std::io::Error::last_os_error();
    // SAFETY: as above; the mapping is not used after this.
    unsafe { libc::munmap(map, 4096) };
    if synced != 0 {
        return Err(error);
    }
    Ok(())
}

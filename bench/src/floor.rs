//! The bare floor: the QEMU command line of a real runq container, stripped of its devices
//! and booted with an initrd that holds only `runq-floor-init`. Same QEMU, firmware, kernel,
//! kernel command line, machine, CPUs and memory; nothing of runq's own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where the proxy sees the asset tree (in its own root); the floor runs on the host, where
/// it is installed.
const ASSETS_IN_PROXY: &str = runq_shared::layout::own_root::ASSETS;

/// QEMU options of the captured command line that the floor keeps, with their values.
const KEPT_WITH_VALUE: &[&str] = &[
    "-L", "-M", "-global", "-accel", "-cpu", "-m", "-smp", "-sandbox", "-kernel", "-append",
];
/// Flags (no value) it keeps.
const KEPT_FLAGS: &[&str] = &["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"];

/// The floor's command line from a runq container's QEMU command line (`captured`, as read
/// from /proc: the loader, its arguments, the QEMU binary, then QEMU's options).
pub fn floor_args(
    captured: &[String],
    assets: &Path,
    initrd: &Path,
    serial: &Path,
    idle: bool,
) -> Result<Vec<String>> {
    let on_host = |value: &str| match value.strip_prefix(ASSETS_IN_PROXY) {
        Some(rest) if rest.starts_with('/') => format!("{}{rest}", assets.display()),
        _ => value.to_string(),
    };
    let qemu_at = captured
        .iter()
        .position(|arg| arg.ends_with("/qemu-system-x86_64"))
        .context("no qemu-system-x86_64 in the captured command line")?;
    let mut args: Vec<String> = captured[..=qemu_at].iter().map(|a| on_host(a)).collect();
    let mut options = captured[qemu_at + 1..].iter();
    let mut has_memory_backend = false;
    while let Some(option) = options.next() {
        if KEPT_FLAGS.contains(&option.as_str()) {
            args.push(option.clone());
            continue;
        }
        let value = options
            .next()
            .with_context(|| format!("{option} without a value in the captured command line"))?;
        match option.as_str() {
            "-object" if value.starts_with("memory-backend") => {
                has_memory_backend = true;
                args.extend([option.clone(), value.clone()]);
            }
            "-append" if idle => args.extend([option.clone(), format!("{value} floor-idle")]),
            "-initrd" => args.extend([option.clone(), initrd.to_string_lossy().into_owned()]),
            "-serial" => args.extend([option.clone(), format!("file:{}", serial.display())]),
            kept if KEPT_WITH_VALUE.contains(&kept) => {
                args.extend([option.clone(), on_host(value)]);
            }
            // Devices and their back ends: the floor has none.
            _ => {}
        }
    }
    if !args.iter().any(|a| a == "-initrd") {
        args.extend(["-initrd".to_string(), initrd.to_string_lossy().into_owned()]);
    }
    if !args.iter().any(|a| a == "-serial") {
        args.extend(["-serial".to_string(), format!("file:{}", serial.display())]);
    }
    if !has_memory_backend && args.iter().any(|a| a.contains("memory-backend=")) {
        bail!("the captured command line names a memory backend it does not define");
    }
    Ok(args)
}

/// A newc cpio archive holding one executable, `/init`.
pub fn initrd_with_init(init: &[u8]) -> Vec<u8> {
    let mut archive = Vec::new();
    cpio_entry(&mut archive, "init", 0o100755, init);
    cpio_entry(&mut archive, "TRAILER!!!", 0, &[]);
    archive
}

fn cpio_entry(archive: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    let fields = [
        1,                     // inode
        mode,                  // mode
        0,                     // uid
        0,                     // gid
        1,                     // nlink
        0,                     // mtime
        data.len() as u32,     // file size
        0,                     // dev major
        0,                     // dev minor
        0,                     // rdev major
        0,                     // rdev minor
        name.len() as u32 + 1, // name size, with its NUL
        0,                     // check
    ];
    archive.extend_from_slice(b"070701");
    for field in fields {
        archive.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    archive.extend_from_slice(name.as_bytes());
    archive.push(0);
    pad4(archive);
    archive.extend_from_slice(data);
    pad4(archive);
}

fn pad4(archive: &mut Vec<u8>) {
    while !archive.len().is_multiple_of(4) {
        archive.push(0);
    }
}

/// Files of the floor in a scratch directory, removed on drop.
pub struct Floor {
    dir: PathBuf,
    captured: Vec<String>,
    assets: PathBuf,
}

impl Floor {
    pub fn new(captured: Vec<String>, assets: PathBuf) -> Result<Floor> {
        let init_binary = std::env::current_exe()
            .context("find runq-bench")?
            .with_file_name("runq-floor-init");
        let init = std::fs::read(&init_binary).with_context(|| {
            format!(
                "read {} (cargo build --release -p runq-bench builds it)",
                init_binary.display()
            )
        })?;
        let dir = std::env::temp_dir().join(format!("runq-bench-floor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let floor = Floor {
            dir,
            captured,
            assets,
        };
        std::fs::File::create(floor.initrd())
            .and_then(|mut file| file.write_all(&initrd_with_init(&init)))
            .with_context(|| format!("write {}", floor.initrd().display()))?;
        Ok(floor)
    }

    fn initrd(&self) -> PathBuf {
        self.dir.join("initrd")
    }

    fn serial(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    fn command(&self, idle: bool) -> Result<Command> {
        self.command_with_serial(idle, &self.serial())
    }

    fn command_with_serial(&self, idle: bool, serial: &Path) -> Result<Command> {
        let args = floor_args(&self.captured, &self.assets, &self.initrd(), serial, idle)?;
        let mut command = Command::new(&args[0]);
        command
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Ok(command)
    }

    /// One floor boot: seconds from QEMU's start to its exit.
    pub fn boot(&self) -> Result<f64> {
        let started = Instant::now();
        let output = self
            .command(false)?
            .output()
            .context("start the floor QEMU")?;
        let seconds = started.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!(
                "the floor QEMU failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(seconds)
    }

    /// `count` floor VMs started at once: seconds until the last one exited. The bound on
    /// density that no runtime can beat: the same VMs with nothing of runq's in them.
    pub fn boot_together(&self, count: usize) -> Result<f64> {
        let started = Instant::now();
        let mut children = Vec::new();
        for index in 0..count {
            let serial = self.dir.join(format!("serial-{index}.log"));
            match self.command_with_serial(false, &serial)?.spawn() {
                Ok(child) => children.push(child),
                Err(error) => {
                    for mut child in children {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    return Err(error).context("start a floor QEMU");
                }
            }
        }
        let mut failures = Vec::new();
        for child in children {
            let output = child.wait_with_output().context("wait for a floor QEMU")?;
            if !output.status.success() {
                failures.push(String::from_utf8_lossy(&output.stderr).trim().to_string());
            }
        }
        if let Some(first) = failures.first() {
            bail!("{} of {count} floor QEMUs failed: {first}", failures.len());
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// A floor VM booted and idle; killed on drop.
    pub fn idle(&self) -> Result<IdleFloor> {
        let _ = std::fs::remove_file(self.serial());
        let child = self
            .command(true)?
            .spawn()
            .context("start the floor QEMU")?;
        let vm = IdleFloor { child };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let serial = std::fs::read_to_string(self.serial()).unwrap_or_default();
            if serial.contains("runq-floor: idle") {
                return Ok(vm);
            }
            if Instant::now() > deadline {
                bail!("the idle floor VM did not come up within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct IdleFloor {
    child: Child,
}

impl IdleFloor {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for IdleFloor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured() -> Vec<String> {
        "/qemu/lib/ld-linux-x86-64.so.2 --library-path /qemu/lib \
         /qemu/bin/qemu-system-x86_64 -L /qemu/share/qemu \
         -M microvm,memory-backend=mem -accel tcg -cpu max -m 256M -smp 1 -nodefaults \
         -no-user-config -nographic -no-reboot -sandbox on,obsolete=deny \
         -serial file:/console.log -object memory-backend-memfd,id=mem,size=256M,share=on \
         -chardev socket,id=vfs0,path=/virtiofsd.sock \
         -device vhost-user-fs-device,queue-size=1024,chardev=vfs0,tag=rootfs \
         -netdev tap,id=net0,fd=8,vhost=off -device virtio-net-device,netdev=net0 \
         -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-device,rng=rng0 \
         -kernel /qemu/kernel/vmlinux -initrd /qemu/kernel/initrd \
         -append quiet"
            .split_whitespace()
            .map(String::from)
            .collect()
    }

    #[test]
    fn the_floor_keeps_machine_and_kernel_and_drops_devices() {
        let args = floor_args(
            &captured(),
            Path::new("/var/lib/runq/qemu"),
            Path::new("/tmp/f/initrd"),
            Path::new("/tmp/f/serial.log"),
            false,
        )
        .unwrap();
        let line = args.join(" ");
        assert!(line.starts_with(
            "/var/lib/runq/qemu/lib/ld-linux-x86-64.so.2 --library-path /var/lib/runq/qemu/lib \
             /var/lib/runq/qemu/bin/qemu-system-x86_64 -L /var/lib/runq/qemu/share/qemu"
        ));
        for kept in [
            "-M microvm,memory-backend=mem",
            "-m 256M",
            "-object memory-backend-memfd,id=mem,size=256M,share=on",
            "-kernel /var/lib/runq/qemu/kernel/vmlinux",
            "-initrd /tmp/f/initrd",
            "-serial file:/tmp/f/serial.log",
            "-append quiet",
            "-sandbox on,obsolete=deny",
        ] {
            assert!(line.contains(kept), "{kept} missing from {line}");
        }
        for dropped in ["-device", "-chardev", "-netdev", "rng-random", "fd=8"] {
            assert!(!line.contains(dropped), "{dropped} left in {line}");
        }
    }

    #[test]
    fn an_idle_floor_tells_its_init() {
        let args = floor_args(
            &captured(),
            Path::new("/r"),
            Path::new("/i"),
            Path::new("/s"),
            true,
        )
        .unwrap();
        assert!(args.iter().any(|a| a == "quiet floor-idle"));
    }

    #[test]
    fn the_initrd_is_a_newc_archive_with_init() {
        let archive = initrd_with_init(b"\x7fELF");
        assert!(archive.starts_with(b"070701"));
        assert_eq!(archive.len() % 4, 0);
        let text = String::from_utf8_lossy(&archive);
        assert!(text.contains("init\0"));
        assert!(text.contains("TRAILER!!!\0"));
        // Mode of the first entry: a regular executable file.
        assert_eq!(&archive[14..22], b"000081ED");
    }
}

//! Starting QEMU: from the template runq create handed, where there is one and QEMU loads it,
//! otherwise by booting the kernel.
//!
//! runq create checked the template against its meta, but only QEMU can tell whether the
//! stream loads. So a restore's QEMU gets a monitor on a socket pair, and the proxy waits,
//! still unconfined, until QEMU says the VM runs. Where it ends or stalls instead, the proxy
//! says so in one line and boots cold: once confined it could start no QEMU again.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use runq_shared::config::VmSettings;
use runq_shared::qemu::{self, Boot, HostFacts, Paths};
use runq_shared::qmp::Qmp;

use crate::children::{self, Tracked};
use crate::network::Tap;

/// What every QEMU of this container is started with, whichever way it starts.
pub struct Launch<'a> {
    pub vm: &'a VmSettings,
    pub host: HostFacts,
    pub paths: &'a Paths,
    pub disks: &'a [qemu::Disk],
    pub ninep: bool,
}

/// The longest a template's stream may take to load before the proxy boots cold instead (or
/// the boot's deadline, where that is shorter); one loads in well under a second here.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(20);

impl Launch<'_> {
    pub fn cold(&self, taps: &[Tap]) -> Result<Tracked> {
        let nics = self.nics(taps, false);
        let args = qemu::args(
            self.vm,
            self.host,
            self.paths,
            &nics,
            self.disks,
            Boot::Cold,
        );
        let fds: Vec<i32> = nics.iter().map(|nic| nic.fd).collect();
        children::start_qemu(self.paths, &args, self.vm.debug, self.ninep, &fds)
    }

    /// QEMU running the restored VM, or why it does not: QEMU is then gone and reaped.
    pub fn restore(&self, taps: &[Tap], state: File) -> Result<Tracked> {
        let nics = self.nics(taps, true);
        let boot = Boot::Restore {
            fd: state.as_raw_fd(),
        };
        let mut args = qemu::args(self.vm, self.host, self.paths, &nics, self.disks, boot);
        let (ours, qemus) = UnixStream::pair().context("a socket pair for QEMU's monitor")?;
        args.extend([
            "-chardev".to_string(),
            format!("socket,id=monitor,fd={}", qemus.as_raw_fd()),
            "-mon".to_string(),
            "chardev=monitor,mode=control".to_string(),
        ]);
        let fds: Vec<i32> = nics
            .iter()
            .map(|nic| nic.fd)
            .chain([state.as_raw_fd(), qemus.as_raw_fd()])
            .collect();
        let qemu = children::start_qemu(self.paths, &args, self.vm.debug, self.ninep, &fds)?;
        drop((state, qemus));
        let timeout = RESTORE_TIMEOUT.min(Duration::from_secs(self.vm.boot_timeout_secs.into()));
        let loaded = Qmp::over(ours, Instant::now() + timeout).and_then(|mut monitor| {
            monitor.load(qemu::TEMPLATE_FDSET)?;
            monitor.wait_running()?;
            // Loaded: QEMU, which a guest may take over, keeps no descriptor of the template.
            // A QEMU that refuses only keeps it open, read-only, as before.
            let _ = monitor.remove_fdset(qemu::TEMPLATE_FDSET);
            Ok(())
        });
        match loaded {
            // The monitor closes with `ours`: QEMU keeps running without one.
            Ok(()) => Ok(qemu),
            Err(error) => {
                qemu.kill_and_reap();
                let said = runq_shared::log_tail::log_tail(&self.paths.qemu_log, 1);
                if said.is_empty() {
                    Err(anyhow::anyhow!("{error}"))
                } else {
                    Err(anyhow::anyhow!("{error}: {said}"))
                }
            }
        }
    }

    /// A restore has the template's MACs (the guest then sets the container's).
    fn nics(&self, taps: &[Tap], restore: bool) -> Vec<qemu::Nic> {
        taps.iter()
            .enumerate()
            .map(|(number, tap)| qemu::Nic {
                fd: tap.fd.as_raw_fd(),
                mac: if restore {
                    runq_shared::template::nic_mac(number)
                } else {
                    tap.mac.clone()
                },
                stream: tap.stream,
            })
            .collect()
    }
}

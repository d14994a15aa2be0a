//! runq-proxy: PID 1 of a runq container on the host.
//!
//! Reads the VM config the runtime left for it, shares the container's root with the guest
//! (virtiofsd or QEMU's 9p), starts QEMU, and then serves the control channel: config to the
//! guest, signals and stdin in, stdout, stderr and the exit code out. It exits with the
//! application's exit code, or 1 with a message naming the part that failed.

mod boot_images;
mod channel;
mod children;
mod confine;
mod dns;
mod event;
mod exec;
mod fds;
mod network;
mod own_root;
mod pod_network;
mod serve;
mod signals;
mod start_report;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use runq_shared::config::NetMode;
use runq_shared::config::{GuestBoot, HostFindings, RootFs, VmConfig};
use runq_shared::timeline::Timeline;

use crate::serve::Helpers;
use runq_proxy::supervisor;
use runq_shared::qemu::{self, HostFacts, Paths};

fn main() -> ExitCode {
    match fds::take_handed_close_the_rest().and_then(run) {
        Ok(code) => {
            start_report::failed(&format!(
                "the guest ended (exit code {code}) before it started the application"
            ));
            ExitCode::from(runq_shared::protocol::exit_status(code))
        }
        Err(error) => {
            start_report::failed(&format!("{error:#}"));
            eprintln!("runq: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(handed: fds::Handed) -> Result<i32> {
    let started = runq_shared::timeline::wall_clock_ns();
    start_report::open(handed.start_report);
    runq_session::signals::block_all().context("block signals")?;
    // Before anything else: nothing of the image may be on the way of what follows.
    own_root::enter()?;
    let mut config = load_config(handed.vm_config)?;
    let mut timeline = config.vm.timeline_origin_ns.map(|origin| {
        let mut timeline = Timeline::new(origin);
        timeline.mark_at("proxy_start", started);
        timeline
    });
    let mut mark = |stage: &str| {
        if let Some(timeline) = timeline.as_mut() {
            timeline.mark(stage);
        }
    };
    let paths = Paths::in_own_root(&config.vm);
    let host = HostFacts {
        tsc_khz: std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| qemu::tsc_khz_from_cpuinfo(&text)),
    };
    let guest_mounts = config.guest.mounts.iter().map(|m| m.destination.as_str());
    own_root::share_container_tree(guest_mounts)?;
    let (resolv_conf, embedded_dns) = resolv_conf(&paths.shared_root, &config.vm.dns);
    if config.guest.process.terminal {
        config.guest.process.terminal_onlcr = runq_session::terminal::terminal_onlcr();
        runq_session::terminal::make_raw();
    }

    // Bound now, served once the proxy is confined (see `confine`): QEMU's connection waits in
    // the backlog, signals stay pending.
    let _ = std::fs::remove_file(&paths.agent_socket);
    let agent = UnixListener::bind(&paths.agent_socket)
        .with_context(|| format!("listen on {}", paths.agent_socket.display()))?;
    let exec_listener = if config.vm.noexec {
        None
    } else {
        Some(
            exec::bind(Path::new(runq_shared::layout::own_root::EXEC_SOCKET))
                .context("listen for exec sessions")?,
        )
    };

    let virtiofsd = match config.vm.root_fs {
        RootFs::Virtiofs => {
            mark("virtiofsd_exec");
            Some(children::start_virtiofsd(&paths)?)
        }
        RootFs::NineP { .. } => None,
    };
    let (guest_network, taps, passt) = if config.vm.net == NetMode::Shared {
        pod_network::share(&paths).context("connect the VM to the shared network namespace")?
    } else {
        let (network, taps) = network::take_over(config.vm.net).context("take over the network")?;
        (network, taps, None)
    };
    let template = restorable(&config.vm, taps.len(), handed.templates);
    let nics: Vec<qemu::Nic> = taps
        .iter()
        .enumerate()
        .map(|(number, tap)| qemu::Nic {
            fd: tap.fd.as_raw_fd(),
            // A restore has the template's arguments; the guest sets the container's MAC.
            mac: match template {
                Some(_) => runq_shared::template::nic_mac(number),
                None => tap.mac.clone(),
            },
            stream: tap.stream,
        })
        .collect();
    let disks = config
        .vm
        .disks
        .iter()
        .map(|disk| {
            Ok(qemu::Disk {
                path: disk.path.clone(),
                format: disk.format,
                cache: disk.cache,
                block_device: checked_image(disk)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let boot = match &template {
        Some(state) => qemu::Boot::Restore {
            fd: state.as_raw_fd(),
        },
        None => qemu::Boot::Cold,
    };
    let qemu_args = qemu::args(&config.vm, host, &paths, &nics, &disks, boot);
    let ninep = matches!(config.vm.root_fs, RootFs::NineP { .. });
    let confinement = &config.vm.confinement;
    confine::read_only_paths(confinement)?;
    confine::apparmor(confinement)?;
    mark(if template.is_some() {
        "qemu_restore"
    } else {
        "qemu_exec"
    });
    let qemu = children::start_qemu(
        &paths,
        &qemu_args,
        config.vm.debug,
        ninep,
        &nics,
        template.as_ref().map(|state| state.as_raw_fd()),
    )?;
    drop(taps);
    let restored = template.is_some();
    drop(template);
    confine::drop_capabilities(&confine::kept_capabilities(&children::qemu_capabilities(
        ninep,
    )))?;
    confine::limit_descriptors()?;
    confine::seccomp(confinement)?;

    let (events, queue) = event::queue();
    signals::spawn_listener(events.clone()).context("start the signal thread")?;
    if let Some(listener) = exec_listener {
        exec::spawn_listener(listener, events.clone()).context("serve exec sessions")?;
    }
    channel::spawn_reader(agent, events.clone(), restored).context("start the channel thread")?;

    let helpers = Helpers { virtiofsd, passt };
    let boot = GuestBoot {
        config: config.guest,
        host: HostFindings {
            network: guest_network,
            resolv_conf,
            embedded_dns,
            entropy: host_entropy()?,
            wall_clock_ns: None,
            restored,
        },
    };
    serve::serve(
        config.vm,
        boot,
        qemu,
        helpers,
        paths,
        timeline,
        (events, queue),
    )
}

/// The application's resolv.conf where runq's DNS options change the engine's (`None` keeps
/// the engine's), and whether the one it ends up with sends queries to Docker's embedded
/// server. The engine's file is read as the container sees it, bounded, and only when it is
/// a regular file: the engine binds its own there, but without one it is the image's.
fn resolv_conf(
    shared_root: &Path,
    settings: &runq_shared::dns::DnsSettings,
) -> (Option<String>, bool) {
    let engine = runq_shared::in_root::read_file(shared_root, "/etc/resolv.conf", 64 << 10)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let ours = settings
        .changes_anything()
        .then(|| settings.resolv_conf(&engine));
    let embedded = runq_shared::dns::names_embedded_dns(ours.as_deref().unwrap_or(&engine));
    (ours, embedded)
}

/// The template runq create handed for a VM with this many NICs, once it passed its check;
/// `None` boots cold, after one line saying why where a template was offered.
fn restorable(
    vm: &runq_shared::config::VmSettings,
    nics: usize,
    templates: Vec<std::fs::File>,
) -> Option<std::fs::File> {
    let offer = vm.templates.iter().find(|offer| offer.nics == nics)?;
    let state = templates.into_iter().nth(nics)?;
    match runq_shared::template::check(&state, offer) {
        Ok(()) => Some(state),
        Err(error) => {
            eprintln!("runq: {error}; booting without it");
            None
        }
    }
}

/// Random bytes for the guest's generator, from the host's.
fn host_entropy() -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; 64];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: getrandom writes at most the given length into the buffer we own.
        let got = unsafe {
            libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
        };
        if got < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error).context("read host entropy for the guest");
            }
        } else {
            filled += got as usize;
        }
    }
    Ok(bytes)
}

/// Checks a disk against the format the operator named (see `check_image`) and tells whether
/// it is a block device. A raw disk that starts like a qcow2 image stays raw: one line says
/// how to name it qcow2, in case that was meant.
fn checked_image(disk: &runq_shared::disks::VmDisk) -> Result<bool> {
    use runq_shared::disks::{check_image, looks_like_qcow2, read_header, DiskFormat};
    let path = &disk.path;
    let (header, block_device) =
        read_header(Path::new(path)).with_context(|| format!("runq disk {path}"))?;
    check_image(disk.format, &header).with_context(|| format!("runq disk {path}"))?;
    if disk.format == DiskFormat::Raw && looks_like_qcow2(&header) {
        eprintln!(
            "runq: runq disk {path} starts like a qcow2 image but is used as raw; \
             name it <id>.qcow2 to use it as qcow2"
        );
    }
    Ok(block_device)
}

/// Reads the VM config runq create wrote and handed over.
fn load_config(file: std::fs::File) -> Result<VmConfig> {
    let text = fds::read_vm_config(file)?;
    serde_json::from_slice(&text).context("parse the VM config")
}

#[cfg(test)]
mod tests {
    use super::*;
    use runq_shared::dns::DnsSettings;

    #[test]
    fn the_relay_is_wanted_only_where_the_final_resolv_conf_names_the_embedded_server() {
        let root = std::env::temp_dir().join(format!("runq-proxy-dns-{}", std::process::id()));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let keep = DnsSettings::default();
        assert_eq!(resolv_conf(&root, &keep), (None, false), "no resolv.conf");
        std::fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.11\n").unwrap();
        assert_eq!(resolv_conf(&root, &keep), (None, true));
        let replaced = DnsSettings {
            nameservers: Some(vec!["192.0.2.53".into()]),
            ..DnsSettings::default()
        };
        let (text, embedded) = resolv_conf(&root, &replaced);
        assert!(!embedded, "runq's --dns replaces it");
        assert!(text.unwrap().contains("nameserver 192.0.2.53"));
        let _ = std::fs::remove_dir_all(&root);
    }
}

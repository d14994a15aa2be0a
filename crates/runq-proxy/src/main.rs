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
mod launch;
mod network;
mod own_root;
mod pod_network;
mod serve;
mod signals;
mod start_report;

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
    let mut agent = listen_for_the_guest(&paths)?;
    let exec_listener = if config.vm.noexec {
        None
    } else {
        Some(
            exec::bind(Path::new(runq_shared::layout::own_root::EXEC_SOCKET))
                .context("listen for exec sessions")?,
        )
    };

    let mut virtiofsd = match config.vm.root_fs {
        RootFs::Virtiofs => {
            mark("virtiofsd_exec");
            Some(children::start_virtiofsd(&paths)?)
        }
        RootFs::NineP { .. } => None,
    };
    let (mut guest_network, mut taps, mut passt) = attach_network(&config.vm, &paths)?;
    let template = restorable(&config.vm, taps.len(), handed.templates);
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
    let ninep = matches!(config.vm.root_fs, RootFs::NineP { .. });
    let confinement = &config.vm.confinement;
    confine::read_only_paths(confinement)?;
    confine::apparmor(confinement)?;
    let launch = launch::Launch {
        vm: &config.vm,
        host,
        paths: &paths,
        disks: &disks,
        ninep,
    };
    let restore = match template {
        Some((key, state)) => {
            mark("qemu_restore");
            Some(launch.restore(&taps, state).map_err(|error| (key, error)))
        }
        None => None,
    };
    let restored = match restore {
        Some(Ok(qemu)) => {
            mark("template_loaded");
            Some(qemu)
        }
        Some(Err((key, error))) => {
            eprintln!("runq: template {key} did not load ({error:#}); booting without it, and making it again");
            start_report::template_failed(&key);
            // virtiofsd and passt served the QEMU that ended, and its connection to the
            // channel waits in the listener's backlog: new ones for the booting QEMU.
            if let Some(old) = virtiofsd.take() {
                old.kill_and_reap();
                virtiofsd = Some(children::start_virtiofsd(&paths)?);
            }
            if let Some(old) = passt.take() {
                old.kill_and_reap();
                (guest_network, taps, passt) = attach_network(&config.vm, &paths)?;
            }
            drop(agent);
            agent = listen_for_the_guest(&paths)?;
            None
        }
        None => None,
    };
    let (qemu, restored) = match restored {
        Some(qemu) => (qemu, true),
        None => {
            mark("qemu_exec");
            (launch.cold(&taps)?, false)
        }
    };
    drop(taps);
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

fn listen_for_the_guest(paths: &Paths) -> Result<UnixListener> {
    let _ = std::fs::remove_file(&paths.agent_socket);
    UnixListener::bind(&paths.agent_socket)
        .with_context(|| format!("listen on {}", paths.agent_socket.display()))
}

/// The guest's view of its network, the NICs' backends, and passt where it serves them.
fn attach_network(
    vm: &runq_shared::config::VmSettings,
    paths: &Paths,
) -> Result<(
    runq_shared::config::GuestNetwork,
    Vec<network::Tap>,
    Option<children::Tracked>,
)> {
    if vm.net == NetMode::Shared {
        pod_network::share(paths).context("connect the VM to the shared network namespace")
    } else {
        let (network, taps) = network::take_over(vm.net).context("take over the network")?;
        Ok((network, taps, None))
    }
}

/// The template runq create handed for a VM with this many NICs, with its key, once it
/// passed its check; `None` boots cold, after one line saying why where a template was
/// offered.
fn restorable(
    vm: &runq_shared::config::VmSettings,
    nics: usize,
    templates: Vec<std::fs::File>,
) -> Option<(String, std::fs::File)> {
    let offer = vm.templates.iter().find(|offer| offer.nics == nics)?;
    let state = templates.into_iter().nth(nics)?;
    match runq_shared::template::check(&state, offer) {
        Ok(()) => Some((offer.key.clone(), state)),
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

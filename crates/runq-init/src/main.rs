//! runq-init: PID 1 of the guest.
//!
//! Boots the guest side of a container: loads the virtio modules, opens the control channel,
//! receives the container's config, mounts the shared root, starts the application in its own
//! namespaces and relays its stdio until it exits; then syncs and powers the VM off.

mod console;
mod container;
mod devices;
mod disks;
mod dns_relay;
mod error;
mod freshen;
#[cfg(feature = "hostile")]
mod hostile;
mod identity;
mod modprobe;
mod modules;
mod mount_options;
mod mounts;
mod net;
mod outbox;
mod port;
mod relay;
mod rootdisk;
mod rootfs;
mod system;

use std::fs::File;
use std::process::ExitCode;

use runq_shared::config::GuestBoot;

use crate::error::{Context, InitError};
use runq_shared::protocol::{self, Message, MAIN_SESSION, PROTOCOL_VERSION};
use runq_shared::timeline::GuestMarks;

fn main() -> ExitCode {
    let mut marks = GuestMarks::default();
    marks.mark("init_start");
    let args: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    if args
        .first()
        .is_some_and(|argv0| modprobe::invoked_as_modprobe(argv0))
    {
        return modprobe::main(&args);
    }
    if std::process::id() != 1 {
        eprintln!("runq-init: must run as PID 1 of a runq guest");
        return ExitCode::FAILURE;
    }
    let mut channel = None;
    if let Err(error) = run(&mut channel, marks) {
        console::log(&format!("fatal: {error}"));
        if let Some(port) = channel.as_mut() {
            let _ = Message::Error {
                session: MAIN_SESSION,
                message: error.to_string(),
            }
            .write_to(port);
        }
    }
    system::power_off()
}

fn run(channel: &mut Option<File>, mut marks: GuestMarks) -> Result<(), InitError> {
    system::mount_basics()?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    console::set_debug(system::kernel_flag(&cmdline, "runq.debug"));
    let uevents = port::watch()?;
    modules::load_transport()?;
    let mut loaded = modules::Loaded::default();
    modules::load_template_libraries(&cmdline, &mut loaded)?;
    marks.mark("transport_loaded");
    let mut port = port::open(runq_shared::layout::AGENT_PORT_NAME, &uevents)?;
    drop(uevents);
    Message::Hello {
        version: PROTOCOL_VERSION,
    }
    .write_to(&mut port)
    .map_err(InitError::Channel)?;
    *channel = Some(port.try_clone().map_err(InitError::Channel)?);
    // While the proxy answers with the config, the modules it announced load.
    modules::load_hinted(&cmdline, &mut loaded)?;
    let prepared_net = match modules::is_template(&cmdline) {
        true => Some(net::Prepared::in_template()?),
        false => None,
    };
    marks.mark("modules_loaded");

    let boot = receive_config(&mut port)?;
    if boot.host.restored {
        marks.restored_from_template();
        console::debug("restored from a template");
    }
    marks.mark("config_received");
    freshen::apply(&boot.host)?;
    modules::load_for(&boot, &mut loaded)?;
    let GuestBoot { config, host } = boot;
    #[cfg(feature = "hostile")]
    if let Some(attack) = hostile::wanted(&config) {
        return hostile::attack(&attack, &mut port);
    }
    rootfs::mount(&config)?;
    rootfs::share_module_tree();
    let disks = disks::find(&config.disks)?;
    let root_disk = config.root_disk.as_ref().map(|root| root.id.as_str());
    if let Some(root) = &config.root_disk {
        rootdisk::switch(root, &config, &disks)?;
    }
    disks::mount_all(&config.disks, &disks, root_disk)?;
    marks.mark("root_mounted");
    net::configure(&host.network, host.restored, prepared_net)?;
    marks.mark("network_ready");
    let dns = dns_relay::listen_if_needed(host.embedded_dns);
    let children = relay::block_child_signals()?;
    let outbox = outbox::Outbox::new().context(|| "create the channel's outbox".into())?;
    // Before the application's PID namespace exists: after that the kernel refuses new
    // threads.
    let mirror = if host.network.mirror_localhost {
        let outbox = outbox.clone();
        let send = Box::new(move |message: &Message| outbox.send(message));
        Some(
            runq_mirror::Mirror::spawn(runq_mirror::Side::Guest, Default::default(), send)
                .context(|| "start the localhost mirror".into())?,
        )
    } else {
        None
    };
    let app = container::spawn(&config, host.resolv_conf.as_deref(), &disks)?;
    marks.mark("app_exec");
    // The relay owns the port from here on and reports its own failure.
    *channel = None;
    let code = relay::run(port, outbox, mirror, &config, app, children, dns, marks)?;
    console::debug(&format!("application exited with {code}"));
    Ok(())
}

fn receive_config(port: &mut File) -> Result<GuestBoot, InitError> {
    loop {
        match protocol::read_message(port)? {
            Some(Message::Config { json }) => {
                return serde_json::from_slice(&json).map_err(InitError::BadConfig)
            }
            Some(other) => console::log(&format!("ignoring {other:?} before the config")),
            None => return Err(InitError::ChannelClosed),
        }
    }
}

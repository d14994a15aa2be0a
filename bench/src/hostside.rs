//! `runq-bench hostside`: what one runq container costs the host side, process by process:
//! threads, descriptors, resident and proportional memory, for an idle container and for one
//! with exec sessions open. The figures the README's host-side budget quotes.

use std::path::Path;

use anyhow::{Context, Result};

use crate::docker::{Container, Setup};
use crate::memory::{process_tree, pss_kib};

#[derive(clap::Args)]
pub struct Settings {
    /// Exec sessions held open for the second measurement.
    #[arg(long, default_value_t = 4)]
    pub execs: usize,
}

pub fn run(settings: &Settings) -> Result<()> {
    let probe = std::env::current_exe().context("find the runq-bench binary")?;
    let runq = Setup::runq("runq", &[]);
    let name = format!("runq-bench-{}-hostside", std::process::id());
    let container = Container::start_ready(&runq, name, &probe, &["serve"])?;
    println!("## One container's host side\n");
    println!("Idle (the probe's server waiting):\n");
    table(container.pid()?)?;
    let sessions: Vec<std::process::Child> = (0..settings.execs)
        .map(|_| {
            std::process::Command::new(crate::docker::DOCKER)
                .args(["exec", &container.name, "sleep", "30"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .context("start docker exec")
        })
        .collect::<Result<_>>()?;
    // The sessions are open once each has its relay in the container's process tree.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while relays(container.pid()?) < settings.execs && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("\nWith {} exec sessions open:\n", settings.execs);
    table(container.pid()?)?;
    for mut session in sessions {
        let _ = session.kill();
        let _ = session.wait();
    }
    Ok(())
}

fn relays(proxy: u32) -> usize {
    container_processes(proxy)
        .into_iter()
        .filter(|&pid| role(pid) == "exec relay")
        .count()
}

/// The proxy's tree and whatever else runs in its PID namespace (exec relays, which runc
/// exec's parent leaves to the engine's shim).
fn container_processes(proxy: u32) -> Vec<u32> {
    let namespace = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let ours = namespace(proxy);
    let mut pids = process_tree(proxy);
    let others: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !pids.contains(pid) && ours.is_some() && namespace(*pid) == ours)
        .collect();
    pids.extend(others);
    pids
}

fn table(proxy: u32) -> Result<()> {
    println!("| process | threads | descriptors | RSS MiB | PSS MiB |");
    println!("|---|---:|---:|---:|---:|");
    let mut totals = (0, 0, 0.0, 0.0);
    for pid in container_processes(proxy) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse().ok())
                .unwrap_or(0)
        };
        let threads = field("Threads:");
        let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
        let rss = field("VmRSS:") as f64 / 1024.0;
        let pss = pss_kib(pid).unwrap_or(0) as f64 / 1024.0;
        println!(
            "| {} | {threads} | {descriptors} | {rss:.1} | {pss:.1} |",
            role(pid)
        );
        totals.0 += threads;
        totals.1 += descriptors;
        totals.2 += rss;
        totals.3 += pss;
    }
    let (threads, descriptors, rss, pss) = totals;
    println!("| **all** | {threads} | {descriptors} | {rss:.1} | {pss:.1} |");
    Ok(())
}

/// What a process of the container's tree is: the helpers run through the bundled loader,
/// so their command line names the binary.
fn role(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|&byte| byte == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let named = |binary: &str| {
        args.iter()
            .any(|arg| Path::new(arg).file_name() == Some(binary.as_ref()))
    };
    if named("qemu-system-x86_64") {
        "QEMU".into()
    } else if named("virtiofsd") {
        "virtiofsd".into()
    } else if named("passt") {
        "passt".into()
    } else if args.iter().any(|arg| arg == "--relay") {
        "exec relay".into()
    } else if named("proxy") {
        "proxy".into()
    } else {
        crate::memory::name_of(pid)
    }
}

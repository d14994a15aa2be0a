//! `runq-bench hostside`: what one runq container costs the host side, process by process:
//! threads, descriptors, resident and proportional memory, for an idle container and for one
//! with exec sessions open, and with `--attacks`, for one whose guest attacks the host side
//! (the test-only hostile guest of tests/hostile_guest.rs). The figures the README's host-side
//! budget quotes.

use std::path::Path;

use anyhow::{Context, Result};

use crate::docker::{docker, Container, ExtraRuntime, Setup};
use crate::memory::{process_tree, pss_kib};

#[derive(clap::Args)]
pub struct Settings {
    /// Exec sessions held open for the second measurement.
    #[arg(long, default_value_t = 4)]
    pub execs: usize,
    /// Also measure containers whose guest floods the host side (builds the hostile guest's
    /// initrd with scripts/build-hostile-initrd.sh).
    #[arg(long)]
    pub attacks: bool,
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
    drop(container);
    if settings.attacks {
        attacks()?;
    }
    Ok(())
}

/// The floods a guest may send without breaking the protocol, each in a container of its own:
/// the host side must hold them to its bounds and keep the container running. (The attacks
/// that break the protocol end the container within a second.)
const FLOODS: [(&str, &str, &[&str]); 3] = [
    (
        "dns-flood-embedded",
        "200k DNS queries through Docker's embedded server",
        &["--network", NETWORK],
    ),
    (
        "listen-flood",
        "60k listening ports announced over and over, in a pod",
        &["-e", "RUNQ_NET=shared"],
    ),
    (
        "connect-flood",
        "10k mirrored connections asked for, in a pod",
        &["-e", "RUNQ_NET=shared"],
    ),
];

/// A user-defined network: Docker's embedded DNS server answers only there.
const NETWORK: &str = "runq-bench-hostile";

fn attacks() -> Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-hostile-initrd.sh");
    let built = std::process::Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    anyhow::ensure!(built.status.success(), "{} failed", script.display());
    let initrd = String::from_utf8_lossy(&built.stdout).trim().to_string();
    let hostile = ExtraRuntime::register("runq-bench-hostile", &["--initrd", &initrd])?;
    let _ = docker(&["network", "rm", NETWORK]);
    docker(&["network", "create", NETWORK])?;
    println!(
        "
## Under attack
"
    );
    println!(
        "The most each held, sampled every 100 ms for {} s once the attack ran {} s:
",
        SAMPLED.as_secs(),
        RAMP.as_secs()
    );
    println!("| attack | proxy threads | proxy descriptors | proxy RSS MiB | all threads | all descriptors | all RSS MiB | container |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let measured = FLOODS
        .iter()
        .try_for_each(|(attack, what, options)| under_attack(hostile.name, attack, what, options));
    let _ = docker(&["network", "rm", NETWORK]);
    measured
}

const RAMP: std::time::Duration = std::time::Duration::from_secs(2);
const SAMPLED: std::time::Duration = std::time::Duration::from_secs(3);

fn under_attack(runtime: &str, attack: &str, what: &str, options: &[&str]) -> Result<()> {
    let name = format!("runq-bench-{}-{attack}", std::process::id());
    let env = format!("RUNQ_TEST_ATTACK={attack}");
    let mut args = vec!["run", "-d", "--runtime", runtime, "--name", &name];
    args.extend(options);
    args.extend(["-e", &env, crate::docker::IMAGE, "true"]);
    docker(&args)?;
    let container = Container { name };
    let proxy = container.pid()?;
    // A measurement window, not a synchronisation: the flood runs from the guest's start.
    std::thread::sleep(RAMP);
    let (mut most_proxy, mut most_all) = (Usage::default(), Usage::default());
    let end = std::time::Instant::now() + SAMPLED;
    while std::time::Instant::now() < end {
        let usages: Vec<(u32, Usage)> = container_processes(proxy)
            .into_iter()
            .map(|pid| (pid, Usage::of(pid)))
            .collect();
        let all = usages
            .iter()
            .fold(Usage::default(), |sum, (_, usage)| sum.plus(usage));
        if let Some((_, usage)) = usages.iter().find(|(pid, _)| *pid == proxy) {
            most_proxy = most_proxy.max(usage);
        }
        most_all = most_all.max(&all);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let running = docker(&["inspect", "-f", "{{.State.Running}}", &container.name])?;
    let state = match running.trim() {
        "true" => "running",
        _ => "ended",
    };
    println!(
        "| {attack}: {what} | {} | {} | {:.1} | {} | {} | {:.1} | {state} |",
        most_proxy.threads,
        most_proxy.descriptors,
        most_proxy.rss_mib,
        most_all.threads,
        most_all.descriptors,
        most_all.rss_mib
    );
    Ok(())
}

/// What one process (or several, summed) holds.
#[derive(Default, Clone, Copy)]
struct Usage {
    threads: u64,
    descriptors: usize,
    rss_mib: f64,
}

impl Usage {
    fn of(pid: u32) -> Usage {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        Usage {
            threads: status_field(&status, "Threads:"),
            descriptors: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count),
            rss_mib: status_field(&status, "VmRSS:") as f64 / 1024.0,
        }
    }

    fn plus(self, other: &Usage) -> Usage {
        Usage {
            threads: self.threads + other.threads,
            descriptors: self.descriptors + other.descriptors,
            rss_mib: self.rss_mib + other.rss_mib,
        }
    }

    fn max(self, other: &Usage) -> Usage {
        Usage {
            threads: self.threads.max(other.threads),
            descriptors: self.descriptors.max(other.descriptors),
            rss_mib: self.rss_mib.max(other.rss_mib),
        }
    }
}

fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
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
        let Usage {
            threads,
            descriptors,
            rss_mib: rss,
        } = Usage::of(pid);
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

//! The network benchmark: for runc and for runq with each network mode, a probe server in one
//! container, measured from the host and from a second container of the same kind.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::docker::{run_probe, Container, Setup};
use crate::probe::{self, Load, Measured};

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    #[command(flatten)]
    pub load: Load,
    /// Leave out runc, or a runq mode: runc, tap, macvtap, shared.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
}

/// A boot under TCG on a loaded machine can take this long.
const READY_DEADLINE: Duration = Duration::from_secs(180);

struct Row {
    setup: &'static str,
    path: &'static str,
    measured: Measured,
}

pub fn run(settings: &Settings) -> Result<()> {
    let probe_binary = std::env::current_exe().context("find the runq-bench binary")?;
    let setups = [
        Setup::runc(),
        Setup::runq("runq tap", &["-e", "RUNQ_NET=tap"]),
        Setup::runq("runq macvtap", &["-e", "RUNQ_NET=macvtap"]),
        // A pod's way: in through the mirrored listener and the control channel, out
        // through passt.
        Setup::runq("runq shared", &["-e", "RUNQ_NET=shared"]),
    ];
    let load = &settings.load;
    let load_args = [
        "--bytes".to_string(),
        load.bytes.to_string(),
        "--runs".to_string(),
        load.runs.to_string(),
        "--round-trips".to_string(),
        load.round_trips.to_string(),
    ];
    let mut rows = Vec::new();
    for setup in setups.iter().filter(|s| {
        !settings
            .skip
            .iter()
            .any(|skip| s.label.ends_with(skip.as_str()))
    }) {
        eprintln!("runq-bench net: {}", setup.label);
        let tag = setup.label.replace(' ', "-");
        let server = Container::start(
            setup,
            format!("runq-bench-{}-{tag}-server", std::process::id()),
            &probe_binary,
            &["serve"],
        )?;
        let address = format!("{}:{}", server.address()?, probe::PORT);
        wait_until_listening(&address)?;
        rows.push(Row {
            setup: setup.label,
            path: "host → container",
            measured: probe::measure(&address, load)?,
        });

        let mut command = vec!["client", "--address", &address];
        command.extend(load_args.iter().map(String::as_str));
        let output = run_probe(
            setup,
            &format!("runq-bench-{}-{tag}-client", std::process::id()),
            &probe_binary,
            &command,
        )?;
        let measured = Measured::from_output(&output)
            .with_context(|| format!("no result from the client container: {output:?}"))?;
        rows.push(Row {
            setup: setup.label,
            path: "container → container",
            measured,
        });
    }
    print_table(load, &rows);
    Ok(())
}

fn wait_until_listening(address: &str) -> Result<()> {
    let deadline = Instant::now() + READY_DEADLINE;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(
            &address.parse().context("a server address")?,
            Duration::from_secs(2),
        )
        .is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the probe server at {address} never listened")
}

fn print_table(load: &Load, rows: &[Row]) {
    println!(
        "TCP over Docker's default bridge: {} MiB per stream (median of {}), {} one-byte \
         round trips; {} cores, host kernel {}.\n",
        load.bytes >> 20,
        load.runs,
        load.round_trips,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
    );
    println!("| setup | path | throughput (MB/s) | round trip median (µs) | round trip p99 (µs) |");
    println!("|---|---|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |",
            row.setup,
            row.path,
            row.measured.megabytes_per_second,
            row.measured.round_trip_median_us,
            row.measured.round_trip_p99_us
        );
    }
}

//! `runq-bench`: runs the benchmarks and prints Markdown tables. The same static binary is
//! also the probe inside the containers (`serve`, `client`), bind-mounted in read-only, so
//! every figure is timed by the same code on both ends.

mod boot;
mod chart;
mod cpu;
mod docker;
mod floor;
mod hostside;
mod memory;
mod net;
mod probe;
mod stats;
mod storage;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// `docker run true` against runc, runq's boot timeline against the bare floor VM, idle
    /// memory, density and `docker exec` latency; writes an SVG chart of the timeline.
    Boot(boot::Settings),
    /// TCP throughput and round trips, host to container and container to container, for
    /// runc and for runq with tap and macvtap NICs.
    Net(net::Settings),
    /// The container's root under runc, and under runq with virtio-fs and 9p in each cache
    /// mode: sequential write and read, and a tree of small files.
    Storage(storage::Settings),
    /// One container's host side, process by process: threads, descriptors, memory, idle
    /// and with exec sessions open.
    Hostside(hostside::Settings),
    /// The storage probe: one job, timed (runs in a container).
    Fs(storage::Job),
    /// The probe's server: a TCP sink and an echo for round trips (runs in a container).
    Serve {
        #[arg(long, default_value_t = probe::PORT)]
        port: u16,
    },
    /// The probe's client: prints one result line (runs in a container).
    Client {
        #[arg(long)]
        address: String,
        #[command(flatten)]
        load: probe::Load,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Boot(settings) => boot::run(&settings),
        Command::Net(settings) => net::run(&settings),
        Command::Storage(settings) => storage::run(&settings),
        Command::Hostside(settings) => hostside::run(&settings),
        Command::Fs(job) => storage::probe(&job),
        Command::Serve { port } => probe::serve(port),
        Command::Client { address, load } => {
            let result = probe::measure(&address, &load)?;
            println!("{}", result.to_line());
            Ok(())
        }
    }
}

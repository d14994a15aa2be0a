//! `runq-bench`: runs the benchmarks and prints Markdown tables. The same static binary is
//! also the probe inside the containers (`serve`, `client`), bind-mounted in read-only, so
//! every figure is timed by the same code on both ends.

mod docker;
mod net;
mod probe;
mod stats;

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
    /// TCP throughput and round trips, host to container and container to container, for
    /// runc and for runq with tap and macvtap NICs.
    Net(net::Settings),
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
        Command::Net(settings) => net::run(&settings),
        Command::Serve { port } => probe::serve(port),
        Command::Client { address, load } => {
            let result = probe::measure(&address, &load)?;
            println!("{}", result.to_line());
            Ok(())
        }
    }
}

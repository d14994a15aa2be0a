//! The storage benchmark: how the container's root performs under runc (overlayfs on the
//! host) and under runq with virtio-fs and 9p in each cache mode. In one container per setup,
//! `docker exec` runs the probe: write a large file and fsync it, read it back after dropping
//! its cached pages (posix_fadvise, no privileges needed), make and remove a tree of small
//! files.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::docker::{Container, ExtraRuntime, Setup};
use crate::stats::median;

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// MiB written and read back.
    #[arg(long, default_value_t = 128)]
    pub mib: u64,
    /// Small files in the metadata job.
    #[arg(long, default_value_t = 2000)]
    pub files: usize,
    /// Runs of each job; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// What the probe inside a container does, and where.
#[derive(Debug, Clone, clap::Args)]
pub struct Job {
    /// write, read or tree.
    #[arg(long)]
    pub job: String,
    #[arg(long, default_value = "/runq-bench-data")]
    pub dir: String,
    #[arg(long, default_value_t = 128)]
    pub mib: u64,
    #[arg(long, default_value_t = 2000)]
    pub files: usize,
}

const CHUNK: usize = 1 << 20;

/// Runs one job in this process; prints `runq-bench-fs SECONDS`.
pub fn probe(job: &Job) -> Result<()> {
    let dir = Path::new(&job.dir);
    std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let file = dir.join("big");
    let started = Instant::now();
    match job.job.as_str() {
        "write" => {
            let mut out = std::fs::File::create(&file)?;
            let chunk = vec![0x5au8; CHUNK];
            for _ in 0..job.mib {
                out.write_all(&chunk)?;
            }
            out.sync_all()?;
        }
        "read" => {
            let mut input = std::fs::File::open(&file)?;
            // SAFETY: an advice call on a descriptor we own; no memory is passed.
            unsafe {
                libc::posix_fadvise(
                    std::os::fd::AsRawFd::as_raw_fd(&input),
                    0,
                    0,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
            let mut chunk = vec![0u8; CHUNK];
            let mut total = 0u64;
            loop {
                let n = input.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            anyhow::ensure!(total == job.mib << 20, "read {total} bytes");
        }
        "tree" => {
            let tree = dir.join("tree");
            for index in 0..job.files {
                let sub = tree.join(format!("d{}", index % 50));
                std::fs::create_dir_all(&sub)?;
                std::fs::write(sub.join(format!("f{index}")), [b'x'; 1024])?;
            }
            std::fs::remove_dir_all(&tree)?;
        }
        other => anyhow::bail!("unknown job {other:?}: write, read or tree"),
    }
    println!("runq-bench-fs {:.3}", started.elapsed().as_secs_f64());
    Ok(())
}

fn seconds_of(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|line| line.strip_prefix("runq-bench-fs "))
        .and_then(|s| s.trim().parse().ok())
}

struct Row {
    setup: &'static str,
    write: f64,
    read: f64,
    tree: f64,
}

pub fn run(settings: &Settings) -> Result<()> {
    let probe_binary = std::env::current_exe().context("find the runq-bench binary")?;
    // 9p is the operator's choice (runq's --fs), its cache mode the container's.
    let nine_p = ExtraRuntime::register("runq-bench-9p", &["--fs", "9p"])?;
    let setups = [
        Setup::runc(),
        Setup::runq("runq virtio-fs", &[]),
        Setup::runtime("runq 9p none", nine_p.name, &["-e", "RUNQ_9PCACHE=none"]),
        Setup::runtime("runq 9p loose", nine_p.name, &["-e", "RUNQ_9PCACHE=loose"]),
        Setup::runtime(
            "runq 9p fscache",
            nine_p.name,
            &["-e", "RUNQ_9PCACHE=fscache"],
        ),
        Setup::runtime("runq 9p mmap", nine_p.name, &["-e", "RUNQ_9PCACHE=mmap"]),
    ];
    let mut rows = Vec::new();
    for setup in &setups {
        eprintln!("runq-bench storage: {}", setup.label);
        let tag = setup.label.replace(' ', "-");
        let holder = Container::start_ready(
            setup,
            format!("runq-bench-{}-{tag}", std::process::id()),
            &probe_binary,
            &["serve"],
        )?;
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..settings.runs.max(1) {
            for (slot, job) in ["write", "read", "tree"].iter().enumerate() {
                let output = holder.exec_probe(&[
                    "fs",
                    "--job",
                    job,
                    "--mib",
                    &settings.mib.to_string(),
                    "--files",
                    &settings.files.to_string(),
                ])?;
                times[slot].push(
                    seconds_of(&output)
                        .with_context(|| format!("no result from the {job} job: {output:?}"))?,
                );
            }
        }
        rows.push(Row {
            setup: setup.label,
            write: settings.mib as f64 / median(&times[0]),
            read: settings.mib as f64 / median(&times[1]),
            tree: median(&times[2]),
        });
    }
    println!(
        "The container's root: {} MiB written (fsync at the end) and read back, and {} files of \
         1 KiB made and removed; median of {} runs.\n",
        settings.mib, settings.files, settings.runs
    );
    println!("| setup | write (MiB/s) | read (MiB/s) | small-file tree (s) |");
    println!("|---|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} |",
            row.setup, row.write, row.read, row.tree
        );
    }
    Ok(())
}

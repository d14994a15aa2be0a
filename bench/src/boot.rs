//! The boot benchmark: `docker run true` under runq and runc, runq's boot timeline from the
//! marks its parts record (`RUNQ_TIMELINE`), the bare floor VM, idle memory, density and
//! `docker exec` latency. runq, runc and the floor take turns in each round, so that the
//! machine's changing load falls on all of them alike.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use runq_shared::timeline::Report;

use crate::chart::{self, Bar};
use crate::cpu;
use crate::docker::{docker, Container, Setup, DOCKER, IMAGE};
use crate::floor::Floor;
use crate::memory;
use crate::probe;
use crate::stats::median;

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Rounds of `docker run true` (runc, runq and the floor each once a round).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Containers started at once for the density figure.
    #[arg(long, default_value_t = 10)]
    pub density: usize,
    /// `docker exec true` calls per runtime.
    #[arg(long, default_value_t = 10)]
    pub exec_runs: usize,
    /// Guest memory (`RUNQ_MEM`, MiB) of the idle containers and the floor.
    #[arg(long, default_value_t = 256)]
    pub mem: u32,
    /// Where the boot timeline chart goes.
    #[arg(long, default_value = "boot-timeline.svg")]
    pub svg: PathBuf,
}

/// Under TCG on a loaded two-core machine a boot can take this long.
const READY_DEADLINE: Duration = Duration::from_secs(180);
/// Idle processes are measured this long after they are ready, all alike, so that the
/// guest's last boot-time allocations are in.
const SETTLE: Duration = Duration::from_secs(3);

pub fn run(settings: &Settings) -> Result<()> {
    let probe_binary = std::env::current_exe().context("find the runq-bench binary")?;
    let assets = runq_shared::layout::installed_assets();
    let runq = Setup::runq("runq", &["-e", &format!("RUNQ_MEM={}", settings.mem)]);
    let runc = Setup::runc();

    eprintln!("runq-bench boot: idle memory");
    let (memory, captured) = idle_memory(&runq, &runc, &probe_binary)?;
    let floor = Floor::new(captured, assets)?;
    let (floor_idle_kib, floor_split) = {
        let vm = floor.idle()?;
        std::thread::sleep(SETTLE);
        (memory::pss_kib(vm.pid())?, memory::pss_split_kib(vm.pid())?)
    };

    eprintln!("runq-bench boot: the template of the containers' shape");
    wait_for_template(settings.mem)?;
    eprintln!(
        "runq-bench boot: {} rounds of docker run true",
        settings.runs
    );
    let timed = |template: &str| -> Result<(f64, Stages)> {
        let (seconds, stages) = docker_run_true(&Setup {
            label: "runq",
            options: [
                runq.options.clone(),
                vec!["-e".into(), "RUNQ_TIMELINE=1".into()],
                vec!["-e".into(), format!("RUNQ_TEMPLATE={template}")],
            ]
            .concat(),
        })?;
        Ok((seconds, stages.context("runq printed no timeline")?))
    };
    let mut rounds = Vec::new();
    for round in 0..settings.runs {
        eprintln!("runq-bench boot: round {}", round + 1);
        rounds.push(Round {
            runc_s: docker_run_true(&runc)?.0,
            runq: timed("1")?,
            runq_cold: timed("0")?,
            floor_s: floor.boot()?,
        });
    }

    eprintln!("runq-bench boot: docker exec latency");
    let exec = exec_latency(&runq, &runc, &probe_binary, settings.exec_runs)?;
    eprintln!("runq-bench boot: density");
    let count = settings.density;
    let density = [
        (
            format!("runc: {count} containers answering"),
            density(&runc, &probe_binary, count)?,
        ),
        (
            format!("runq: {count} containers answering"),
            density(&runq, &probe_binary, count)?,
        ),
        (
            format!("runq booted: {count} containers answering"),
            density(
                &Setup {
                    label: "runq-booted",
                    options: [
                        runq.options.clone(),
                        vec!["-e".into(), "RUNQ_TEMPLATE=0".into()],
                    ]
                    .concat(),
                },
                &probe_binary,
                count,
            )?,
        ),
        (
            format!("bare floor: {count} VMs booted to their exit"),
            Density {
                one: with_cpu(|| floor.boot())?,
                many: with_cpu(|| floor.boot_together(count))?,
            },
        ),
    ];

    let summary = Summary::of(&rounds, |round| &round.runq);
    let cold = Summary::of(&rounds, |round| &round.runq_cold);
    for (summary, path) in [
        (&summary, settings.svg.clone()),
        (&cold, cold_svg(&settings.svg)),
    ] {
        std::fs::write(&path, chart::svg(&summary.chart_title(), &summary.bars()))
            .with_context(|| format!("write {}", path.display()))?;
    }
    let floor_memory = (floor_idle_kib, floor_split);
    print_report(
        settings,
        [&summary, &cold],
        &memory,
        floor_memory,
        &exec,
        &density,
    );
    Ok(())
}

/// The cold boots' chart, beside the templates'.
fn cold_svg(svg: &Path) -> PathBuf {
    let stem = svg
        .file_stem()
        .map_or("boot-timeline".into(), |s| s.to_string_lossy());
    svg.with_file_name(format!("{stem}-cold.svg"))
}

/// One `docker run` makes runq build the template of its shape in the background; waits
/// until the one with a NIC, Docker's, exists.
fn wait_for_template(mem_mib: u32) -> Result<()> {
    use runq_shared::template;
    docker_run_true(&Setup::runq(
        "runq",
        &["-e", &format!("RUNQ_MEM={mem_mib}")],
    ))?;
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        let found = std::fs::read_dir(template::dir())
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| {
                let key = entry.file_name().to_string_lossy().into_owned();
                template::read_meta(&entry.path(), &key)
                    .is_ok_and(|meta| meta.shape.mem_mib == mem_mib && meta.shape.nics == 1)
            });
        if found {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("runq made no template of {mem_mib} MiB within {READY_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stage names with milliseconds since `docker run` started.
type Stages = Vec<(String, f64)>;

struct Round {
    runc_s: f64,
    /// Wall time and stages, restored from a template.
    runq: (f64, Stages),
    /// The same, booted (`RUNQ_TEMPLATE=0`).
    runq_cold: (f64, Stages),
    floor_s: f64,
}

/// `docker run --rm IMAGE true`: seconds, and runq's timeline when it printed one, with
/// stages counted from the start of `docker run`.
fn docker_run_true(setup: &Setup) -> Result<(f64, Option<Stages>)> {
    let mut args = vec!["run".to_string(), "--rm".to_string()];
    args.extend(setup.options.iter().cloned());
    args.extend([IMAGE.to_string(), "true".to_string()]);
    let started_ns = runq_shared::timeline::wall_clock_ns();
    let started = Instant::now();
    let output = Command::new(DOCKER)
        .args(&args)
        .output()
        .context("run docker")?;
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "{} docker run true failed: {}",
            setup.label,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let report = String::from_utf8_lossy(&output.stderr)
        .lines()
        .find_map(Report::parse_line);
    let stages = report.map(|report| {
        let offset_ms = (report.origin_unix_ns as f64 - started_ns as f64) / 1e6;
        let mut stages = vec![
            ("docker_run".to_string(), 0.0),
            ("runtime_create".to_string(), offset_ms),
        ];
        stages.extend(
            report
                .stages_ms
                .into_iter()
                .map(|(stage, ms)| (stage, ms + offset_ms)),
        );
        stages.push(("docker_run_returned".to_string(), seconds * 1000.0));
        stages
    });
    Ok((seconds, stages))
}

/// Median figures over the rounds, of runq restored or booted.
struct Summary {
    /// Restored from a template.
    template: bool,
    runc_s: f64,
    runq_s: f64,
    floor_s: f64,
    /// Per round: runq's boot (QEMU start → application exec) over the floor's.
    boot_ratios: Vec<f64>,
    /// Per round: runtime create → application exec over the floor.
    create_ratios: Vec<f64>,
    /// Stages in the order of their median times, each with its median.
    stages: Stages,
}

impl Summary {
    fn of(rounds: &[Round], runq: fn(&Round) -> &(f64, Stages)) -> Summary {
        let mut by_stage: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for round in rounds {
            for (stage, ms) in &runq(round).1 {
                by_stage.entry(stage.clone()).or_default().push(*ms);
            }
        }
        let mut stages: Stages = by_stage
            .into_iter()
            .map(|(stage, samples)| (stage, median(&samples)))
            .collect();
        stages.sort_by(|a, b| a.1.total_cmp(&b.1));
        let seconds =
            |pick: fn(&Round) -> f64| median(&rounds.iter().map(pick).collect::<Vec<_>>());
        // Each round's runq and floor ran back to back; their ratio is steadier on a machine
        // whose speed drifts than the ratio of two medians.
        let ratios = |from: &str| -> Vec<f64> {
            rounds
                .iter()
                .filter_map(|round| {
                    let at = |name: &str| {
                        runq(round)
                            .1
                            .iter()
                            .find(|(s, _)| s == name)
                            .map(|(_, ms)| *ms)
                    };
                    Some((at("app_exec")? - at(from)?) / 1000.0 / round.floor_s)
                })
                .collect()
        };
        let template = stages.iter().any(|(stage, _)| stage == "qemu_restore");
        Summary {
            template,
            runc_s: seconds(|r| r.runc_s),
            runq_s: median(&rounds.iter().map(|r| runq(r).0).collect::<Vec<_>>()),
            floor_s: seconds(|r| r.floor_s),
            boot_ratios: ratios(if template {
                "qemu_restore"
            } else {
                "qemu_exec"
            }),
            create_ratios: ratios("runtime_create"),
            stages,
        }
    }

    /// QEMU's start: a restore's or a boot's.
    fn qemu_start(&self) -> f64 {
        self.stage(if self.template {
            "qemu_restore"
        } else {
            "qemu_exec"
        })
    }

    fn label(&self) -> &'static str {
        if self.template {
            "runq, template"
        } else {
            "runq, boot"
        }
    }

    fn stage(&self, name: &str) -> f64 {
        self.stages
            .iter()
            .find(|(stage, _)| stage == name)
            .map_or(f64::NAN, |(_, ms)| *ms)
    }

    /// QEMU's start to the application's start: runq's boot, like for like with the floor.
    fn boot_ms(&self) -> f64 {
        self.stage("app_exec") - self.qemu_start()
    }

    /// The runtime's start to the application's start: everything runq adds.
    fn create_to_app_ms(&self) -> f64 {
        self.stage("app_exec") - self.stage("runtime_create")
    }

    fn chart_title(&self) -> String {
        format!(
            "{} timeline (docker run --rm busybox true, median of stages), floor {:.0} ms",
            self.label(),
            self.floor_s * 1000.0
        )
    }

    fn bars(&self) -> Vec<Bar> {
        let mut bars: Vec<Bar> = self
            .stages
            .windows(2)
            .map(|pair| Bar {
                label: pair[1].0.replace('_', " "),
                start_ms: pair[0].1,
                end_ms: pair[1].1,
                floor: false,
            })
            .collect();
        let qemu = self.qemu_start();
        bars.push(Bar {
            label: "bare floor (QEMU start to exit)".into(),
            start_ms: qemu,
            end_ms: qemu + self.floor_s * 1000.0,
            floor: true,
        });
        bars
    }
}

struct IdleMemory {
    /// (process, PSS KiB) of the runq container: proxy, QEMU, virtiofsd.
    runq_parts: Vec<(String, u64)>,
    /// The runq QEMU's PSS split (see [`memory::pss_split_kib`]).
    qemu_split: [u64; 3],
    /// QEMU's `-accel` value.
    accel: String,
    runc_kib: u64,
}

/// PSS of an idle runq and an idle runc container, and the runq QEMU's command line.
fn idle_memory(
    runq: &Setup,
    runc: &Setup,
    probe_binary: &Path,
) -> Result<(IdleMemory, Vec<String>)> {
    let name = |kind: &str| format!("runq-bench-{}-idle-{kind}", std::process::id());
    let runq_box = Container::start_ready(runq, name("runq"), probe_binary, &["serve"])?;
    let runc_box = Container::start_ready(runc, name("runc"), probe_binary, &["serve"])?;
    std::thread::sleep(SETTLE);

    let mut runq_parts = Vec::new();
    let mut captured = None;
    let mut qemu_split = [0; 3];
    for pid in memory::process_tree(runq_box.pid()?) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let part = if args.iter().any(|a| a.ends_with("/qemu-system-x86_64")) {
            captured = Some(args);
            qemu_split = memory::pss_split_kib(pid)?;
            "QEMU".to_string()
        } else if args.iter().any(|a| a.ends_with("/virtiofsd")) {
            "virtiofsd".to_string()
        } else {
            memory::name_of(pid)
        };
        runq_parts.push((part, memory::pss_kib(pid)?));
    }
    let runc_kib = memory::process_tree(runc_box.pid()?)
        .into_iter()
        .map(memory::pss_kib)
        .sum::<Result<u64>>()?;
    let captured = captured.context("no QEMU process in the runq container")?;
    Ok((
        IdleMemory {
            runq_parts,
            qemu_split,
            accel: captured
                .windows(2)
                .find(|pair| pair[0] == "-accel")
                .map(|pair| pair[1].clone())
                .unwrap_or_default(),
            runc_kib,
        },
        captured,
    ))
}

/// Median seconds of `docker exec CONTAINER true`, runq and runc in turns.
fn exec_latency(
    runq: &Setup,
    runc: &Setup,
    probe_binary: &Path,
    runs: usize,
) -> Result<(f64, f64)> {
    let name = |kind: &str| format!("runq-bench-{}-exec-{kind}", std::process::id());
    let runq_box = Container::start_ready(runq, name("runq"), probe_binary, &["serve"])?;
    let runc_box = Container::start_ready(runc, name("runc"), probe_binary, &["serve"])?;
    let mut runq_samples = Vec::new();
    let mut runc_samples = Vec::new();
    for _ in 0..runs.max(1) {
        for (container, samples) in [
            (&runc_box, &mut runc_samples),
            (&runq_box, &mut runq_samples),
        ] {
            let started = Instant::now();
            docker(&["exec", &container.name, "true"])?;
            samples.push(started.elapsed().as_secs_f64());
        }
    }
    Ok((median(&runq_samples), median(&runc_samples)))
}

/// One start and `count` starts at once: how long each took, and the host's CPU time they
/// kept busy.
struct Density {
    one: Timed,
    many: Timed,
}

#[derive(Clone, Copy)]
struct Timed {
    seconds: f64,
    cpu_seconds: f64,
}

fn with_cpu(run: impl FnOnce() -> Result<f64>) -> Result<Timed> {
    let busy = cpu::busy_seconds()?;
    let seconds = run()?;
    Ok(Timed {
        seconds,
        cpu_seconds: cpu::busy_seconds()? - busy,
    })
}

/// Seconds until one container, and until `count` containers started at once, answer on
/// the probe's port (an echo round trip, so the application itself answered).
fn density(setup: &Setup, probe_binary: &Path, count: usize) -> Result<Density> {
    Ok(Density {
        one: start_and_reach(setup, probe_binary, 1)?,
        many: start_and_reach(setup, probe_binary, count)?,
    })
}

/// The CPU time is taken when the last one answered, before the containers are removed.
fn start_and_reach(setup: &Setup, probe_binary: &Path, count: usize) -> Result<Timed> {
    let busy = cpu::busy_seconds()?;
    let started = Instant::now();
    let results: Vec<Result<Container>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .map(|index| {
                scope.spawn(move || -> Result<Container> {
                    let name = format!(
                        "runq-bench-{}-density-{}-{count}-{index}",
                        std::process::id(),
                        setup.label
                    );
                    let container = Container::start(setup, name, probe_binary, &["serve"])?;
                    let address = format!("{}:{}", container.address()?, probe::PORT);
                    wait_for_echo(&address)?;
                    Ok(container)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a density thread panicked")))
            })
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu::busy_seconds()? - busy;
    let containers = results.into_iter().collect::<Result<Vec<_>>>()?;
    drop(containers);
    Ok(Timed {
        seconds,
        cpu_seconds,
    })
}

fn wait_for_echo(address: &str) -> Result<()> {
    let deadline = Instant::now() + READY_DEADLINE;
    let target = address.parse().context("a container address")?;
    loop {
        let answered = TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .and_then(|mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(5)))?;
                stream.write_all(b"Lx")?;
                let mut echo = [0u8; 1];
                stream.read_exact(&mut echo)?;
                Ok(echo == *b"x")
            })
            .unwrap_or(false);
        if answered {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing answered at {address} within {READY_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether the density ratio is the runtime's or the machine's: the CPU one start keeps busy
/// bounds how fast `count` can go at once on these cores, whatever the runtime does.
fn print_density_bound(count: usize, cores: usize, density: &[(String, Density)]) {
    println!(
        "\nDensity against the machine: the host's busy CPU time (all processes, /proc/stat) \
         while one start and {count} at once ran, and the least ratio {count} starts' CPU \
         time allows on {cores} cores (one's CPU time × {count} / {cores}, over one's time):\n"
    );
    println!(
        "| starts | one: s, CPU s | {count} at once: s, CPU s per start | least ratio | ratio |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (label, Density { one, many }) in density {
        let name = label.split(':').next().unwrap_or(label);
        println!(
            "| {name} | {:.2}, {:.2} | {:.2}, {:.2} | {:.1}× | {:.1}× |",
            one.seconds,
            one.cpu_seconds,
            many.seconds,
            many.cpu_seconds / count.max(1) as f64,
            cpu::ratio_bound(one.seconds, one.cpu_seconds, count, cores),
            many.seconds / one.seconds
        );
    }
}

fn summary_accel(accel: &str) -> String {
    match accel.split(',').next() {
        Some("tcg") => format!("TCG (QEMU -accel {accel})"),
        Some("kvm") => "KVM".to_string(),
        _ => format!("QEMU -accel {accel:?}"),
    }
}

/// The median of paired ratios, with their range.
fn ratio_range(ratios: &[f64]) -> String {
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.2}× ({low:.2}–{high:.2})", median(ratios))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_report(
    settings: &Settings,
    summaries: [&Summary; 2],
    memory: &IdleMemory,
    (floor_kib, floor_split): (u64, [u64; 3]),
    exec: &(f64, f64),
    density: &[(String, Density)],
) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Boot, memory and density; {} cores, host kernel {}, guest under {}; medians of {} \
         rounds (runc, runq restored from a template, runq booted and the floor in turn).\n",
        cores,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        summary_accel(&memory.accel),
        settings.runs
    );
    println!("| figure | runq | runc or floor | ratio |");
    println!("|---|---:|---:|---:|");
    for summary in summaries {
        let label = summary.label();
        println!(
            "| `docker run --rm busybox true`, {label} (s) | {:.2} | {:.2} (runc) | {:.1}× |",
            summary.runq_s,
            summary.runc_s,
            summary.runq_s / summary.runc_s
        );
        println!(
            "| {label}: QEMU start → application exec (s) | {:.2} | {:.2} (floor) | {} |",
            summary.boot_ms() / 1000.0,
            summary.floor_s,
            ratio_range(&summary.boot_ratios)
        );
        println!(
            "| {label}: runtime create → application exec (s) | {:.2} | {:.2} (floor) | {} |",
            summary.create_to_app_ms() / 1000.0,
            summary.floor_s,
            ratio_range(&summary.create_ratios)
        );
    }
    let runq_kib: u64 = memory.runq_parts.iter().map(|(_, kib)| kib).sum();
    println!(
        "| idle PSS, RUNQ_MEM={} (MiB) | {:.1} | {:.1} (floor) | {:+.1} MiB |",
        settings.mem,
        mib(runq_kib),
        mib(floor_kib),
        mib(runq_kib) - mib(floor_kib)
    );
    println!(
        "| idle PSS against runc (MiB) | {:.1} | {:.1} (runc) | {:.0}× |",
        mib(runq_kib),
        mib(memory.runc_kib),
        runq_kib as f64 / memory.runc_kib.max(1) as f64
    );
    println!(
        "| `docker exec true` (s) | {:.2} | {:.2} (runc) | {:.1}× |",
        exec.0,
        exec.1,
        exec.0 / exec.1
    );
    for (label, Density { one, many }) in density {
        println!(
            "| {label} / one (s) | {:.2} | {:.2} (one) | {:.1}× |",
            many.seconds,
            one.seconds,
            many.seconds / one.seconds
        );
    }
    print_density_bound(settings.density, cores, density);
    println!("\nIdle runq container, PSS by process:\n");
    println!("| process | PSS (MiB) |");
    println!("|---|---:|");
    for (part, kib) in &memory.runq_parts {
        println!("| {part} | {:.1} |", mib(*kib));
    }
    println!("\nQEMU's PSS, idle, runq against the floor:\n");
    println!("| QEMU | PSS (MiB) | anonymous: heap, translated code | files: binaries, kernel image | guest RAM |");
    println!("|---|---:|---:|---:|---:|");
    for (label, split) in [("runq", memory.qemu_split), ("floor", floor_split)] {
        println!(
            "| {label} | {:.1} | {:.1} | {:.1} | {:.1} |",
            mib(split.iter().sum()),
            mib(split[0]),
            mib(split[1]),
            mib(split[2])
        );
    }
    for summary in summaries {
        println!(
            "\nTimeline of `docker run --rm --runtime runq busybox true`, {} (median of each \
             stage, ms since docker run started; chart: {}):\n",
            summary.label(),
            if summary.template {
                settings.svg.clone()
            } else {
                cold_svg(&settings.svg)
            }
            .display()
        );
        println!("| stage | at (ms) | step (ms) |");
        println!("|---|---:|---:|");
        let mut previous = 0.0;
        for (stage, ms) in &summary.stages {
            println!("| {stage} | {ms:.0} | {:.0} |", ms - previous);
            previous = *ms;
        }
        println!(
            "| (bare floor: QEMU start to exit) | | {:.0} |",
            summary.floor_s * 1000.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(runq_s: f64, stages: &[(&str, f64)]) -> Round {
        let stages: Stages = stages.iter().map(|(s, ms)| (s.to_string(), *ms)).collect();
        let restored = stages
            .iter()
            .map(|(s, ms)| (s.replace("qemu_exec", "qemu_restore"), ms / 2.0))
            .collect();
        Round {
            runc_s: 0.5,
            runq: (runq_s / 2.0, restored),
            runq_cold: (runq_s, stages),
            floor_s: 2.0,
        }
    }

    #[test]
    fn stages_are_medians_in_time_order() {
        let rounds = [
            round(
                4.0,
                &[
                    ("runtime_create", 100.0),
                    ("qemu_exec", 300.0),
                    ("app_exec", 2600.0),
                ],
            ),
            round(
                5.0,
                &[
                    ("runtime_create", 120.0),
                    ("qemu_exec", 350.0),
                    ("app_exec", 2900.0),
                ],
            ),
            round(
                4.5,
                &[
                    ("runtime_create", 90.0),
                    ("qemu_exec", 310.0),
                    ("app_exec", 2500.0),
                ],
            ),
        ];
        let restored = Summary::of(&rounds, |round| &round.runq);
        assert!(restored.template);
        assert_eq!(restored.runq_s, 2.25);
        assert_eq!(restored.boot_ms(), (2600.0 - 310.0) / 2.0);
        let summary = Summary::of(&rounds, |round| &round.runq_cold);
        assert!(!summary.template);
        assert_eq!(summary.runq_s, 4.5);
        assert_eq!(summary.floor_s, 2.0);
        let names: Vec<&str> = summary.stages.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["runtime_create", "qemu_exec", "app_exec"]);
        assert_eq!(summary.boot_ms(), 2600.0 - 310.0);
        assert_eq!(summary.create_to_app_ms(), 2600.0 - 100.0);
        // Per round: (2600 - 300) / 2000, (2900 - 350) / 2000, (2500 - 310) / 2000.
        assert_eq!(summary.boot_ratios, [1.15, 1.275, 1.095]);
        assert_eq!(ratio_range(&summary.boot_ratios), "1.15× (1.09–1.27)");
        let bars = summary.bars();
        assert_eq!(bars.len(), 3);
        assert!(bars[2].floor);
        assert_eq!(bars[2].start_ms, 310.0);
        assert_eq!(bars[2].end_ms, 2310.0);
    }
}

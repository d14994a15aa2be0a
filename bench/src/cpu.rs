//! The host's busy CPU time, from /proc/stat: what a start costs the machine, all processes
//! together (the engine's, the runtime's and QEMU's), rather than how long it takes.

use anyhow::{Context, Result};

/// `/proc/stat` counts in USER_HZ, which the kernel fixes at 100 for user space on x86.
const TICKS_PER_SECOND: f64 = 100.0;

/// Seconds every CPU of the host together spent busy since it booted: all but idle and
/// iowait.
pub fn busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    busy_ticks(&stat)
        .map(|ticks| ticks as f64 / TICKS_PER_SECOND)
        .context("no cpu line in /proc/stat")
}

fn busy_ticks(stat: &str) -> Option<u64> {
    let fields: Vec<u64> = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))?
        .split_whitespace()
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal; guest time is already in user's.
    let [user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = fields[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

/// What a run of `count` jobs at once costs at least, on `cores` CPUs, against one: the
/// CPU time of `count` single runs spread evenly over every core, over one run's time. A
/// start that keeps a core busy throughout cannot be done `count` times at once in less.
pub fn ratio_bound(one_s: f64, one_cpu_s: f64, count: usize, cores: usize) -> f64 {
    let spread = one_cpu_s * count as f64 / cores.max(1) as f64;
    spread.max(one_s) / one_s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 20 30 5000 400 6 7 8 0 0\ncpu0 50 10 15 2500 200 3 3 4 0 0\n";
        assert_eq!(busy_ticks(stat), Some(171));
    }

    #[test]
    fn a_short_or_garbled_cpu_line_is_no_figure() {
        assert_eq!(busy_ticks("cpu  100 20 30\n"), None);
        assert_eq!(busy_ticks("cpu  100 x 30 5000 400 6 7 8\n"), None);
        assert_eq!(busy_ticks("intr 5\n"), None);
    }

    #[test]
    fn the_bound_is_the_spread_cpu_time_over_one_run() {
        // One run of 0.69 s keeping 0.6 s of CPU busy: ten on two cores need 3 s.
        let bound = ratio_bound(0.69, 0.6, 10, 2);
        assert!((bound - 3.0 / 0.69).abs() < 1e-9);
        // Little CPU: the jobs overlap and the bound is one run's time.
        assert_eq!(ratio_bound(1.0, 0.1, 10, 16), 1.0);
    }
}

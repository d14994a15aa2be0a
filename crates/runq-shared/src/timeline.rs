//! The boot timeline (`RUNQ_TIMELINE`): each part records when it reached a stage, and the
//! proxy prints the whole as one line on the container's stderr when the container ends.
//!
//! Host parts record wall-clock time. The guest records its own boot clock (zero when its
//! kernel started keeping time) and sends its marks with the boot clock's reading at sending;
//! the proxy places them on the host's clock by the time the message arrived, which is late
//! by the channel's latency (well under a millisecond against stages of tens of them).

use serde::{Deserialize, Serialize};

/// The prefix of the line the proxy prints; `runq-bench` looks for it.
pub const LINE_PREFIX: &str = "runq-timeline: ";

/// The stage every guest clock reading is counted from.
pub const KERNEL_START: &str = "kernel_start";

/// Marks of the guest, as sent in [`crate::protocol::Message::Timeline`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestMarks {
    /// The guest's boot clock when the message was sent.
    pub sent_ns: u64,
    /// Stage names with the guest's boot clock when each was reached.
    pub marks: Vec<(String, u64)>,
    /// Restored from a template: its kernel started, and its earlier stages were reached, in
    /// the template's boot, not this container's.
    #[serde(default)]
    pub restored: bool,
}

impl GuestMarks {
    pub fn mark(&mut self, stage: &str) {
        self.marks.push((stage.to_string(), boot_clock_ns()));
    }

    /// A copy stamped with the time of sending.
    pub fn stamped(&self) -> GuestMarks {
        GuestMarks {
            sent_ns: boot_clock_ns(),
            marks: self.marks.clone(),
            restored: self.restored,
        }
    }

    /// Drops the template's marks: this container's stages start at its config.
    pub fn restored_from_template(&mut self) {
        self.marks.clear();
        self.restored = true;
    }
}

/// More stages than runq has, host and guest together.
pub const MAX_MARKS: usize = 64;

/// The host's record: stages with wall-clock times, in the order they were reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// When `runq create` started (Unix time in ns): the timeline's zero.
    pub origin_unix_ns: u64,
    pub marks: Vec<(String, u64)>,
}

/// What the proxy prints: stages with milliseconds since `runq create` started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub origin_unix_ns: u64,
    pub stages_ms: Vec<(String, f64)>,
}

impl Timeline {
    pub fn new(origin_unix_ns: u64) -> Timeline {
        Timeline {
            origin_unix_ns,
            marks: Vec::new(),
        }
    }

    /// Records `stage` now; a stage reached again keeps its first time.
    pub fn mark(&mut self, stage: &str) {
        self.mark_at(stage, wall_clock_ns());
    }

    /// At most [`MAX_MARKS`]: the guest's marks come from the guest, which may send any.
    pub fn mark_at(&mut self, stage: &str, unix_ns: u64) {
        if self.marks.len() < MAX_MARKS && !self.marks.iter().any(|(name, _)| name == stage) {
            self.marks.push((stage.to_string(), unix_ns));
        }
    }

    /// Places the guest's marks, received at `received_unix_ns`, on the host's clock; the
    /// guest clock's zero becomes [`KERNEL_START`].
    pub fn add_guest(&mut self, guest: &GuestMarks, received_unix_ns: u64) {
        let to_host =
            |guest_ns: u64| received_unix_ns.saturating_sub(guest.sent_ns.saturating_sub(guest_ns));
        if !guest.restored {
            self.mark_at(KERNEL_START, to_host(0));
        }
        for (stage, guest_ns) in &guest.marks {
            self.mark_at(stage, to_host(*guest_ns));
        }
    }

    /// Stages sorted by time, in milliseconds since the origin.
    pub fn report(&self) -> Report {
        let mut marks = self.marks.clone();
        marks.sort_by_key(|(_, ns)| *ns);
        Report {
            origin_unix_ns: self.origin_unix_ns,
            stages_ms: marks
                .into_iter()
                .map(|(stage, ns)| {
                    let since = ns as f64 - self.origin_unix_ns as f64;
                    (stage, (since / 1e4).round() / 100.0)
                })
                .collect(),
        }
    }

    /// The line the proxy prints.
    pub fn line(&self) -> String {
        let json = serde_json::to_string(&self.report()).unwrap_or_default();
        format!("{LINE_PREFIX}{json}")
    }
}

impl Report {
    /// The report in a line of output, if it holds one.
    pub fn parse_line(line: &str) -> Option<Report> {
        let json = line.trim().strip_prefix(LINE_PREFIX)?;
        serde_json::from_str(json).ok()
    }

    pub fn stage(&self, name: &str) -> Option<f64> {
        self.stages_ms
            .iter()
            .find(|(stage, _)| stage == name)
            .map(|(_, ms)| *ms)
    }
}

pub fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_nanos() as u64)
        .unwrap_or(0)
}

/// CLOCK_BOOTTIME: in the guest, time since its kernel started keeping time.
pub fn boot_clock_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into memory we own and keeps no reference.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    if rc != 0 {
        return 0;
    }
    (now.tv_sec as u64) * 1_000_000_000 + now.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_cannot_grow_the_timeline_without_bound() {
        let mut timeline = Timeline::new(0);
        let flood = GuestMarks {
            sent_ns: 1_000,
            marks: (0..10_000).map(|n| (format!("stage{n}"), 10)).collect(),
            restored: false,
        };
        timeline.add_guest(&flood, 5_000);
        assert_eq!(timeline.marks.len(), MAX_MARKS);
    }

    #[test]
    fn guest_marks_are_placed_by_their_arrival() {
        let mut timeline = Timeline::new(1_000_000_000);
        timeline.mark_at("qemu_exec", 1_100_000_000);
        let guest = GuestMarks {
            sent_ns: 900_000_000,
            marks: vec![
                ("init_start".into(), 600_000_000),
                ("app_exec".into(), 850_000_000),
            ],
            restored: false,
        };
        // Sent at guest 0.9 s, received at host origin + 1.2 s: the guest kernel started
        // at origin + 0.3 s.
        timeline.add_guest(&guest, 2_200_000_000);
        let report = timeline.report();
        assert_eq!(report.stage("qemu_exec"), Some(100.0));
        assert_eq!(report.stage(KERNEL_START), Some(300.0));
        assert_eq!(report.stage("init_start"), Some(900.0));
        assert_eq!(report.stage("app_exec"), Some(1150.0));
        let order: Vec<&str> = report.stages_ms.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(order, ["qemu_exec", KERNEL_START, "init_start", "app_exec"]);
    }

    #[test]
    fn a_restored_guest_has_no_kernel_start_and_none_of_the_templates_stages() {
        let mut marks = GuestMarks::default();
        marks.mark("init_start");
        marks.restored_from_template();
        marks.mark("config_received");
        let mut timeline = Timeline::new(0);
        timeline.add_guest(&marks.stamped(), 5_000_000_000);
        let report = timeline.report();
        assert_eq!(report.stage(KERNEL_START), None);
        assert_eq!(report.stage("init_start"), None);
        assert!(report.stage("config_received").is_some());
    }

    #[test]
    fn a_stage_keeps_its_first_time() {
        let mut timeline = Timeline::new(0);
        timeline.mark_at("app_exec", 5_000_000);
        timeline.add_guest(
            &GuestMarks {
                sent_ns: 10,
                marks: vec![("app_exec".into(), 9)],
                restored: false,
            },
            9_000_000,
        );
        assert_eq!(timeline.report().stage("app_exec"), Some(5.0));
    }

    #[test]
    fn the_printed_line_parses_back() {
        let mut timeline = Timeline::new(42);
        timeline.mark_at("proxy_start", 2_000_042);
        let report = Report::parse_line(&format!("{}\n", timeline.line())).unwrap();
        assert_eq!(report.origin_unix_ns, 42);
        assert_eq!(report.stage("proxy_start"), Some(2.0));
        assert!(Report::parse_line("something else").is_none());
    }
}

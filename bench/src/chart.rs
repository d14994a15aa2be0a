//! The boot timeline as an SVG Gantt chart: one bar per stage, from the stage before it.

use std::fmt::Write;

const WIDTH: f64 = 960.0;
const LABEL_WIDTH: f64 = 250.0;
const ROW: f64 = 22.0;
const TOP: f64 = 40.0;

/// A bar: label, start and end in milliseconds.
pub struct Bar {
    pub label: String,
    pub start_ms: f64,
    pub end_ms: f64,
    /// The bare floor is drawn apart from runq's own stages.
    pub floor: bool,
}

pub fn svg(title: &str, bars: &[Bar]) -> String {
    let end = bars.iter().map(|b| b.end_ms).fold(1.0, f64::max);
    let scale = (WIDTH - LABEL_WIDTH - 80.0) / end;
    let height = TOP + ROW * bars.len() as f64 + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="15">{}</text>"#,
        escape(title)
    );
    // A grid line every 500 ms.
    let mut tick = 0.0;
    while tick <= end {
        let x = LABEL_WIDTH + tick * scale;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#666">{:.1} s</text>"##,
            height - 30.0,
            height - 15.0,
            tick / 1000.0
        );
        tick += 500.0;
    }
    for (row, bar) in bars.iter().enumerate() {
        let y = TOP + ROW * row as f64;
        let x = LABEL_WIDTH + bar.start_ms * scale;
        let width = ((bar.end_ms - bar.start_ms) * scale).max(1.0);
        let color = if bar.floor { "#999" } else { "#3b7dd8" };
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{x:.1}" y="{:.1}" width="{width:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}">{:.0} ms</text>"#,
            LABEL_WIDTH - 8.0,
            y + 15.0,
            escape(&bar.label),
            y + 3.0,
            ROW - 6.0,
            x + width + 4.0,
            y + 15.0,
            bar.end_ms - bar.start_ms
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bar_per_stage_with_its_duration() {
        let chart = svg(
            "boot <test>",
            &[
                Bar {
                    label: "create → proxy".into(),
                    start_ms: 0.0,
                    end_ms: 250.0,
                    floor: false,
                },
                Bar {
                    label: "floor".into(),
                    start_ms: 250.0,
                    end_ms: 2750.0,
                    floor: true,
                },
            ],
        );
        assert!(chart.starts_with("<svg"));
        assert!(chart.trim_end().ends_with("</svg>"));
        assert_eq!(chart.matches("<rect x=").count(), 2);
        assert!(chart.contains(">250 ms<") && chart.contains(">2500 ms<"));
        assert!(chart.contains("boot &lt;test&gt;"));
    }
}

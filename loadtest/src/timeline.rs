//! The run as a picture: successes/s, errors/s and p99 latency per 250 ms
//! bucket (by completion time), with the fault steps marked — written as a
//! plain SVG file, no plotting library.

use std::fmt::Write as _;

use crate::check::traffic::histogram;
use crate::ledger::{Event, Phase, Record};

const BUCKET_US: u64 = 250_000;
const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const RATE_TOP: f64 = 50.0;
const RATE_HEIGHT: f64 = 210.0;
const LATENCY_TOP: f64 = 310.0;
const LATENCY_HEIGHT: f64 = 150.0;
const LEGEND_TOP: f64 = 500.0;
const LEGEND_LINE: f64 = 16.0;

/// One 250 ms bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    ok_per_s: f64,
    errors_per_s: f64,
    p99_ms: f64,
}

/// The SVG of a run that lasted `end_us`.
pub fn svg(title: &str, records: &[Record], events: &[Event], end_us: u64) -> String {
    let buckets = buckets(records, end_us);
    let plot = Plot {
        end_us: end_us.max(1),
    };
    let height = LEGEND_TOP + LEGEND_LINE * (events.len() as f64 + 1.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="24" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let rate_max = nice_ceiling(
        buckets
            .iter()
            .map(|b| b.ok_per_s.max(b.errors_per_s))
            .fold(1.0, f64::max),
    );
    let latency_max = nice_ceiling(buckets.iter().map(|b| b.p99_ms).fold(1.0, f64::max));
    plot.panel(&mut out, RATE_TOP, RATE_HEIGHT, rate_max, "requests/s");
    plot.panel(&mut out, LATENCY_TOP, LATENCY_HEIGHT, latency_max, "p99 ms");
    let ok: Vec<f64> = buckets.iter().map(|b| b.ok_per_s).collect();
    let errors: Vec<f64> = buckets.iter().map(|b| b.errors_per_s).collect();
    let p99: Vec<f64> = buckets.iter().map(|b| b.p99_ms).collect();
    plot.line(&mut out, &ok, RATE_TOP, RATE_HEIGHT, rate_max, "#2a9d4b");
    plot.line(
        &mut out,
        &errors,
        RATE_TOP,
        RATE_HEIGHT,
        rate_max,
        "#d62728",
    );
    plot.line(
        &mut out,
        &p99,
        LATENCY_TOP,
        LATENCY_HEIGHT,
        latency_max,
        "#1f5fbf",
    );
    plot.time_axis(&mut out);
    plot.events(&mut out, events);
    legend(&mut out);
    out.push_str("</svg>\n");
    out
}

fn buckets(records: &[Record], end_us: u64) -> Vec<Bucket> {
    let count = usize::try_from(end_us.div_ceil(BUCKET_US))
        .unwrap_or(0)
        .max(1);
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); count];
    let mut buckets = vec![Bucket::default(); count];
    for record in records.iter().filter(|r| r.phase == Phase::Load) {
        let index = usize::try_from(record.t_done_us / BUCKET_US)
            .unwrap_or(usize::MAX)
            .min(count - 1);
        // The last bucket may be cut short by the end of the run.
        let start = index as u64 * BUCKET_US;
        let width = end_us.saturating_sub(start).clamp(1, BUCKET_US);
        let per_s = 1e6 / width as f64;
        if record.is_success() {
            buckets[index].ok_per_s += per_s;
        } else {
            buckets[index].errors_per_s += per_s;
        }
        latencies[index].push(record.latency_us());
    }
    for (bucket, latencies) in buckets.iter_mut().zip(latencies) {
        if !latencies.is_empty() {
            bucket.p99_ms = histogram(latencies).value_at_quantile(0.99) as f64 / 1000.0;
        }
    }
    buckets
}

/// Maps run time to x.
struct Plot {
    end_us: u64,
}

impl Plot {
    fn x(&self, t_us: u64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * t_us as f64 / self.end_us as f64
    }

    /// Frame, horizontal grid lines and y labels of one panel.
    fn panel(&self, out: &mut String, top: f64, height: f64, max: f64, label: &str) {
        let width = WIDTH - LEFT - RIGHT;
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#999"/>"##
        );
        for step in 0..=4 {
            let value = max * f64::from(step) / 4.0;
            let y = top + height - height * f64::from(step) / 4.0;
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{value}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{label}</text>"#,
            top - 6.0
        );
    }

    /// A polyline of per-bucket values (plotted at bucket centres).
    fn line(
        &self,
        out: &mut String,
        values: &[f64],
        top: f64,
        height: f64,
        max: f64,
        colour: &str,
    ) {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, value)| {
                let t = (i as u64) * BUCKET_US + BUCKET_US / 2;
                let y = top + height - height * (value / max).min(1.0);
                format!("{:.1},{y:.1}", self.x(t.min(self.end_us)))
            })
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
    }

    /// Second ticks under the latency panel.
    fn time_axis(&self, out: &mut String) {
        let seconds = self.end_us / 1_000_000;
        let step = if seconds > 30 {
            5
        } else if seconds > 12 {
            2
        } else {
            1
        };
        let y = LATENCY_TOP + LATENCY_HEIGHT;
        for s in (0..=seconds).step_by(step) {
            let x = self.x(s * 1_000_000);
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{y}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{s} s</text>"##,
                y + 5.0,
                y + 18.0
            );
        }
    }

    /// A numbered dashed line per fault step across both panels, and the
    /// numbered list under the plot.
    fn events(&self, out: &mut String, events: &[Event]) {
        for (n, event) in events.iter().enumerate() {
            let x = self.x(event.t_us.min(self.end_us));
            let _ = writeln!(
                out,
                r##"<line x1="{x:.1}" y1="{RATE_TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e07b00" stroke-dasharray="4 3"/><text x="{x:.1}" y="{:.1}" fill="#e07b00" text-anchor="middle">{}</text>"##,
                LATENCY_TOP + LATENCY_HEIGHT,
                RATE_TOP - 20.0 + 10.0 * (n % 2) as f64,
                n + 1
            );
            let _ = writeln!(
                out,
                r##"<text x="{LEFT}" y="{:.1}" fill="#e07b00">{}. {:.3} s: {}</text>"##,
                LEGEND_TOP + LEGEND_LINE * (n as f64 + 1.0),
                n + 1,
                event.t_us as f64 / 1e6,
                escape(&event.what)
            );
        }
    }
}

fn legend(out: &mut String) {
    let y = LEGEND_TOP - 4.0;
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{y}"><tspan fill="#2a9d4b">■ successes/s</tspan>  <tspan fill="#d62728">■ errors/s</tspan>  <tspan fill="#1f5fbf">■ p99 latency</tspan>  <tspan fill="#e07b00">┆ fault steps (250 ms buckets, by completion time)</tspan></text>"##
    );
}

/// 1, 2 or 5 times a power of ten, at least `value`.
fn nice_ceiling(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
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
    fn axis_maxima_are_round() {
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(1234.0), 2000.0);
    }

    #[test]
    fn an_empty_run_still_draws() {
        let svg = svg("t <x>", &[], &[], 0);
        assert!(svg.starts_with("<svg") && svg.contains("t &lt;x&gt;"));
    }
}

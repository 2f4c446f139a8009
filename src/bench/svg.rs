//! The chart of a run, as a hand-written SVG: on the left the latency
//! distribution (latency against percentile, the percentile axis in
//! "nines"), on the right throughput per second over time.

use std::fmt::Write as _;

use super::report::{BenchResult, Percentiles};

const WIDTH: f64 = 1100.0;
const HEIGHT: f64 = 440.0;
const PANEL_WIDTH: f64 = 460.0;
const PANEL_HEIGHT: f64 = 320.0;
const TOP: f64 = 64.0;
const LEFT_PANEL_X: f64 = 70.0;
const RIGHT_PANEL_X: f64 = 610.0;
const NINES_MAX: f64 = 5.0;

/// Reads one figure of a second of the timeline.
type SecondField = fn(&super::report::Second) -> u64;

/// The chart for `result`.
pub fn chart(result: &BenchResult) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT_PANEL_X}" y="20" font-size="15">{} — {:?} driver, {}</text>"#,
        escape(&result.workload.name),
        result.driver,
        escape(&result.bootstrap),
    );
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT_PANEL_X}" y="36" font-size="11">flush policy: {}</text>"#,
        escape(&result.flush_policy)
    );
    latency_panel(&mut svg, result);
    throughput_panel(&mut svg, result);
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn frame(svg: &mut String, x: f64, title: &str) {
    let _ = writeln!(
        svg,
        r##"<rect x="{x}" y="{TOP}" width="{PANEL_WIDTH}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(svg, r#"<text x="{x}" y="{}">{title}</text>"#, TOP - 8.0);
}

/// A "nice" upper bound at or above `value`: 1, 2 or 5 times a power of ten.
fn nice_max(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if value <= step * power {
            return step * power;
        }
    }
    10.0 * power
}

fn latency_panel(svg: &mut String, result: &BenchResult) {
    frame(svg, LEFT_PANEL_X, "latency (ms, log scale) by percentile");
    let series: Vec<(&str, &str, &Percentiles)> =
        std::iter::once(("produce ack", "#1f77b4", &result.produce_ack_latency))
            .chain(
                result
                    .end_to_end_latency
                    .iter()
                    .map(|p| ("end to end", "#d62728", p)),
            )
            .collect();
    let max_ms = series
        .iter()
        .map(|(_, _, p)| p.max_us / 1000.0)
        .fold(0.001, f64::max);
    let min_ms = series
        .iter()
        .flat_map(|(_, _, p)| p.curve.first().map(|c| c.1 / 1000.0))
        .fold(max_ms, f64::min)
        .max(0.001);
    let low = 10f64.powf(min_ms.log10().floor());
    let high = nice_max(max_ms);
    let y_of = |ms: f64| {
        let span = (high.log10() - low.log10()).max(1e-9);
        TOP + PANEL_HEIGHT - (ms.max(low).log10() - low.log10()) / span * PANEL_HEIGHT
    };
    let x_of = |percentile: f64| {
        let nines = if percentile >= 100.0 {
            NINES_MAX
        } else {
            (-(1.0 - percentile / 100.0).log10()).min(NINES_MAX)
        };
        LEFT_PANEL_X + nines / NINES_MAX * PANEL_WIDTH
    };
    for (label, nines) in [
        ("0", 0.0),
        ("90", 1.0),
        ("99", 2.0),
        ("99.9", 3.0),
        ("99.99", 4.0),
        ("99.999", 5.0),
    ] {
        let x = LEFT_PANEL_X + nines / NINES_MAX * PANEL_WIDTH;
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + PANEL_HEIGHT,
            TOP + PANEL_HEIGHT + 16.0
        );
    }
    let mut tick = low;
    while tick <= high * 1.0001 {
        let y = y_of(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT_PANEL_X}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{tick}</text>"##,
            LEFT_PANEL_X + PANEL_WIDTH,
            LEFT_PANEL_X - 4.0,
            y + 4.0
        );
        tick *= 10.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT_PANEL_X + PANEL_WIDTH / 2.0,
        TOP + PANEL_HEIGHT + 34.0
    );
    for (index, (label, color, percentiles)) in series.iter().enumerate() {
        let points: Vec<String> = percentiles
            .curve
            .iter()
            .map(|(percentile, us)| format!("{:.1},{:.1}", x_of(*percentile), y_of(us / 1000.0)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        legend(
            svg,
            LEFT_PANEL_X + 10.0,
            TOP + 18.0 + 16.0 * index as f64,
            color,
            label,
        );
    }
}

fn legend(svg: &mut String, x: f64, y: f64, color: &str, label: &str) {
    let _ = writeln!(
        svg,
        r#"<rect x="{x:.1}" y="{:.1}" width="12" height="4" fill="{color}"/><text x="{:.1}" y="{y:.1}">{label}</text>"#,
        y - 6.0,
        x + 16.0
    );
}

fn throughput_panel(svg: &mut String, result: &BenchResult) {
    frame(
        svg,
        RIGHT_PANEL_X,
        "throughput (messages/s) per second; shaded: warm-up",
    );
    let seconds = result.timeline.len().max(1) as f64;
    let peak = result
        .timeline
        .iter()
        .map(|s| s.acked.max(s.consumed).max(s.sent))
        .max()
        .unwrap_or(1) as f64;
    let high = nice_max(peak);
    let x_of = |second: f64| RIGHT_PANEL_X + second / seconds * PANEL_WIDTH;
    let y_of = |rate: f64| TOP + PANEL_HEIGHT - rate / high * PANEL_HEIGHT;
    let warmup = (result.workload.warmup_seconds as f64).min(seconds);
    let _ = writeln!(
        svg,
        r##"<rect x="{RIGHT_PANEL_X}" y="{TOP}" width="{:.1}" height="{PANEL_HEIGHT}" fill="#f2f2f2"/>"##,
        x_of(warmup) - RIGHT_PANEL_X
    );
    for step in 0..=4 {
        let rate = high * f64::from(step) / 4.0;
        let y = y_of(rate);
        let _ = writeln!(
            svg,
            r##"<line x1="{RIGHT_PANEL_X}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            RIGHT_PANEL_X + PANEL_WIDTH,
            RIGHT_PANEL_X - 4.0,
            y + 4.0,
            super::report::thousands(rate as u64)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds ({} in all)</text>"#,
        RIGHT_PANEL_X + PANEL_WIDTH / 2.0,
        TOP + PANEL_HEIGHT + 34.0,
        result.timeline.len()
    );
    let label_every = (seconds / 10.0).ceil().max(1.0) as usize;
    for second in (0..=result.timeline.len()).step_by(label_every) {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{second}</text>"#,
            x_of(second as f64),
            TOP + PANEL_HEIGHT + 16.0
        );
    }
    let lines: [(&str, &str, SecondField); 2] = [
        ("acknowledged", "#1f77b4", |s| s.acked),
        ("consumed", "#d62728", |s| s.consumed),
    ];
    for (index, (label, color, value)) in lines.iter().enumerate() {
        let points: Vec<String> = result
            .timeline
            .iter()
            .map(|s| {
                format!(
                    "{:.1},{:.1}",
                    x_of(s.second as f64 + 0.5),
                    y_of(value(s) as f64)
                )
            })
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        legend(
            svg,
            RIGHT_PANEL_X + 10.0,
            TOP + 18.0 + 16.0 * index as f64,
            color,
            label,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.0), 5.0);
        assert_eq!(nice_max(10.0), 10.0);
        assert_eq!(nice_max(1234.0), 2000.0);
    }
}

//! Inline SVG charts, rendered on the server (no scripts, no external assets): each chart is
//! an `<svg role="img">` with a title, so a screen reader reads what it shows.

use std::fmt::Write as _;

use super::health::HourBucket;
use super::layout::esc;

/// A small inline SVG line chart of hourly values (gaps where an hour had no data).
pub(super) fn sparkline(values: &[Option<f64>], max: f64, label: &str) -> String {
    let (w, h) = (144.0_f64, 30.0_f64);
    let n = values.len().max(2) as f64;
    let max = if max > 0.0 { max } else { 1.0 };
    let mut paths = String::new();
    let mut dots = String::new();
    let mut current = String::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => {
                let x = i as f64 * (w - 4.0) / (n - 1.0) + 2.0;
                let y = h - 2.0 - (v / max).clamp(0.0, 1.0) * (h - 4.0);
                let _ = write!(current, "{x:.1},{y:.1} ");
                // A dot per hour with data, so a single busy hour is still visible.
                let _ = write!(
                    dots,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\" fill=\"#0b5cad\"/>"
                );
            }
            None => {
                if !current.is_empty() {
                    let _ = write!(
                        paths,
                        "<polyline fill=\"none\" stroke=\"#0b5cad\" stroke-width=\"1.6\" points=\"{}\"/>",
                        current.trim_end()
                    );
                    current.clear();
                }
            }
        }
    }
    if !current.is_empty() {
        let _ = write!(
            paths,
            "<polyline fill=\"none\" stroke=\"#0b5cad\" stroke-width=\"1.6\" points=\"{}\"/>",
            current.trim_end()
        );
    }
    format!(
        "<svg class=\"spark\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-label=\"{l}\"><title>{l}</title><rect x=\"0.5\" y=\"0.5\" width=\"{w1}\" height=\"{h1}\" \
         fill=\"#fff\" stroke=\"#d0d7de\"/>{paths}{dots}</svg>",
        l = esc(label),
        w1 = w - 1.0,
        h1 = h - 1.0
    )
}

pub(super) fn hourly_rate(b: &[HourBucket]) -> Vec<Option<f64>> {
    b.iter()
        .map(|x| (x.total > 0).then(|| x.ok as f64 / x.total as f64))
        .collect()
}

pub(super) fn hourly_latency(b: &[HourBucket]) -> Vec<Option<f64>> {
    b.iter()
        .map(|x| (x.total > 0).then(|| x.latency_ms_sum as f64 / x.total as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_leaves_gaps_for_hours_without_data() {
        let svg = sparkline(&[Some(1.0), None, Some(0.5), Some(0.0)], 1.0, "x");
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}

//! Server-rendered SVG charts over time, with axes, labels and units, for the source and
//! handler pages: volume (successful and failed, stacked bars) and latency (p50 and p95 lines).
//!
//! No scripts, no external fonts: plain `<svg role="img">` with a `<title>` and `<desc>` that
//! say in words what the chart shows, and every series told apart by shape and a text legend
//! as well as colour. Colours meet WCAG AA against the white plot (3:1 for graphics, 4.5:1 for
//! text).

use std::fmt::Write as _;

use super::activity::{Bucket, Window};
use super::layout::esc;

const W: f64 = 640.0;
const H: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 42.0;
const OK: &str = "#0b5cad";
const BAD: &str = "#b3261e";
const TEXT: &str = "#1b1f24";
const GRID: &str = "#8c959f";

/// Which value of a bucket a line draws.
type Pick = fn(&Bucket) -> Option<i64>;

/// A round axis maximum at or above `v`: 1, 2 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|m| *m >= v)
        .unwrap_or(10.0 * p)
}

/// The x-axis label of a bucket: `HH:00` for hourly buckets, `MM-DD` for longer ones.
fn tick_label(b: &Bucket, step_hours: i64) -> String {
    let s = &b.start;
    if step_hours == 1 {
        s.get(11..16).unwrap_or(s).to_owned()
    } else {
        format!(
            "{} {}",
            s.get(5..10).unwrap_or(s),
            s.get(11..13).map(|h| format!("{h}h")).unwrap_or_default()
        )
    }
}

/// The frame: title, axes, y ticks with the unit, x ticks every few buckets.
fn frame(out: &mut String, id: &str, title: &str, desc: &str, unit: &str, max: f64, w: &Window) {
    let plot_h = H - TOP - BOTTOM;
    let _ = write!(
        out,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" \
         aria-labelledby=\"{id}-t {id}-d\" xmlns=\"http://www.w3.org/2000/svg\">\
         <title id=\"{id}-t\">{t}</title><desc id=\"{id}-d\">{d}</desc>\
         <rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fff\"/>\
         <text x=\"{LEFT}\" y=\"16\" font-size=\"13\" font-weight=\"600\" fill=\"{TEXT}\">{t}</text>",
        t = esc(title),
        d = esc(desc),
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = TOP + plot_h - plot_h * f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{GRID}\" \
             stroke-width=\"0.5\" stroke-dasharray=\"2 3\"/>\
             <text x=\"{tx}\" y=\"{ty:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"{TEXT}\">{v}</text>",
            x2 = W - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            v = if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            },
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{yb}\" stroke=\"{TEXT}\"/>\
         <line x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{yb}\" y2=\"{yb}\" stroke=\"{TEXT}\"/>\
         <text x=\"12\" y=\"{ym:.1}\" font-size=\"11\" fill=\"{TEXT}\" \
         transform=\"rotate(-90 12 {ym:.1})\" text-anchor=\"middle\">{unit}</text>",
        yb = TOP + plot_h,
        x2 = W - RIGHT,
        ym = TOP + plot_h / 2.0,
        unit = esc(unit),
    );
    let n = w.buckets.len().max(1);
    let every = if n > 12 { n / 6 } else { 2 };
    let slot = (W - LEFT - RIGHT) / n as f64;
    for (i, b) in w.buckets.iter().enumerate() {
        if i % every == 0 {
            let x = LEFT + slot * i as f64;
            let _ = write!(
                out,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{yb}\" y2=\"{yt}\" stroke=\"{TEXT}\"/>\
                 <text x=\"{x:.1}\" y=\"{ty}\" font-size=\"11\" text-anchor=\"middle\" fill=\"{TEXT}\">{l}</text>",
                yb = TOP + plot_h,
                yt = TOP + plot_h + 4.0,
                ty = TOP + plot_h + 17.0,
                l = esc(&tick_label(b, w.step_hours)),
            );
        }
    }
    let _ = write!(
        out,
        "<text x=\"{x}\" y=\"{y}\" font-size=\"11\" text-anchor=\"end\" fill=\"{TEXT}\">time (UTC), {s} h per bar</text>",
        x = W - RIGHT,
        y = H - 6.0,
        s = w.step_hours,
    );
}

/// Stacked bars per bucket: successful (blue, solid) and failed (red, hatched).
pub(super) fn volume(id: &str, what: &str, w: &Window) -> String {
    let max = nice_max(w.buckets.iter().map(|b| b.total).max().unwrap_or(0) as f64);
    let title = format!("{what} per bucket, last {}", window_words(w));
    let desc = format!(
        "{} {what} in the window, {} failed. Blue bars: successful; red hatched bars: failed.",
        w.total, w.failed
    );
    let mut out = String::new();
    frame(&mut out, id, &title, &desc, "count", max, w);
    let plot_h = H - TOP - BOTTOM;
    let slot = (W - LEFT - RIGHT) / w.buckets.len().max(1) as f64;
    let _ = write!(
        out,
        "<defs><pattern id=\"{id}-hatch\" width=\"4\" height=\"4\" patternUnits=\"userSpaceOnUse\">\
         <rect width=\"4\" height=\"4\" fill=\"{BAD}\"/><path d=\"M0 4 L4 0\" stroke=\"#fff\" stroke-width=\"1\"/>\
         </pattern></defs>"
    );
    for (i, b) in w.buckets.iter().enumerate() {
        let x = LEFT + slot * i as f64 + slot * 0.15;
        let bw = slot * 0.7;
        let ok = b.total.saturating_sub(b.failed) as f64;
        let h_ok = plot_h * ok / max;
        let h_bad = plot_h * b.failed as f64 / max;
        let base = TOP + plot_h;
        if h_ok > 0.0 {
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{h_ok:.1}\" fill=\"{OK}\"/>",
                base - h_ok
            );
        }
        if h_bad > 0.0 {
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{h_bad:.1}\" fill=\"url(#{id}-hatch)\" stroke=\"{BAD}\"/>",
                base - h_ok - h_bad
            );
        }
    }
    legend(
        &mut out,
        &[("successful", OK, false), ("failed", BAD, true)],
        id,
    );
    out.push_str("</svg>");
    out
}

/// p50 (solid) and p95 (dashed) latency lines, with a dot per bucket that had data.
pub(super) fn latency(id: &str, w: &Window) -> String {
    let max = nice_max(w.buckets.iter().filter_map(|b| b.p95_ms).max().unwrap_or(0) as f64);
    let title = format!("Latency p50 and p95, last {}", window_words(w));
    let desc = match (w.p50_ms, w.p95_ms) {
        (Some(a), Some(b)) => {
            format!("Over the window: p50 {a} ms, p95 {b} ms. Solid line: p50; dashed line: p95.")
        }
        _ => "No attempts in the window.".to_owned(),
    };
    let mut out = String::new();
    frame(&mut out, id, &title, &desc, "milliseconds (ms)", max, w);
    let plot_h = H - TOP - BOTTOM;
    let slot = (W - LEFT - RIGHT) / w.buckets.len().max(1) as f64;
    fn p50(b: &Bucket) -> Option<i64> {
        b.p50_ms
    }
    fn p95(b: &Bucket) -> Option<i64> {
        b.p95_ms
    }
    let series: [(Pick, &str, &str); 2] = [(p50, OK, ""), (p95, BAD, " stroke-dasharray=\"6 3\"")];
    for (pick, colour, dash) in series {
        let mut pts = String::new();
        let mut dots = String::new();
        for (i, b) in w.buckets.iter().enumerate() {
            if let Some(v) = pick(b) {
                let x = LEFT + slot * (i as f64 + 0.5);
                let y = TOP + plot_h - plot_h * (v as f64 / max).clamp(0.0, 1.0);
                let _ = write!(pts, "{x:.1},{y:.1} ");
                let _ = write!(
                    dots,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{colour}\"/>"
                );
            }
        }
        if !pts.is_empty() {
            let _ = write!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>{dots}",
                pts.trim_end()
            );
        }
    }
    legend(
        &mut out,
        &[("p50", OK, false), ("p95 (dashed)", BAD, false)],
        id,
    );
    out.push_str("</svg>");
    out
}

fn window_words(w: &Window) -> &'static str {
    if w.name == "24h" {
        "24 hours"
    } else {
        "7 days"
    }
}

fn legend(out: &mut String, items: &[(&str, &str, bool)], id: &str) {
    let mut x = W - RIGHT - 230.0;
    for (label, colour, hatched) in items {
        let fill = if *hatched {
            format!("url(#{id}-hatch)")
        } else {
            (*colour).to_owned()
        };
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"8\" width=\"12\" height=\"10\" fill=\"{fill}\" stroke=\"{colour}\"/>\
             <text x=\"{tx:.1}\" y=\"17\" font-size=\"11\" fill=\"{TEXT}\">{}</text>",
            esc(label),
            tx = x + 16.0,
        );
        x += 110.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        Window {
            name: "24h",
            step_hours: 1,
            buckets: (0..24)
                .map(|i| Bucket {
                    start: format!("2026-11-22T{i:02}:00:00Z"),
                    total: i,
                    failed: i / 4,
                    p50_ms: (i > 0).then_some(i as i64 * 10),
                    p95_ms: (i > 0).then_some(i as i64 * 30),
                })
                .collect(),
            total: 276,
            failed: 60,
            p50_ms: Some(120),
            p95_ms: Some(690),
        }
    }

    #[test]
    fn charts_have_axes_labels_units_and_a_text_description() {
        let w = window();
        let v = volume("v", "attempts", &w);
        assert!(v.starts_with("<svg") && v.ends_with("</svg>"));
        assert!(v.contains("<title id=\"v-t\">") && v.contains("276 attempts"));
        assert!(v.contains(">count</text>") && v.contains(">00:00</text>"));
        assert!(v.contains(">failed</text>"), "a legend in words");
        let l = latency("l", &w);
        assert!(l.contains("milliseconds (ms)") && l.contains("p95 690 ms"));
        assert_eq!(l.matches("<polyline").count(), 2);
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(23.0), 50.0);
        assert_eq!(nice_max(690.0), 1000.0);
    }
}

//! A latency-by-percentile chart (HdrHistogram style) drawn as a small SVG by hand: the x axis
//! spreads the tail (50%, 90%, 99%, 99.9%, 99.99%), the y axis is latency on a log scale.

use std::fmt::Write;

const W: f64 = 820.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// The x axis ends at 99.99%.
const MAX_NINES: f64 = 4.0;
const COLORS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// One line of the chart: a label and latencies in microseconds (any order).
pub struct Series<'a> {
    pub label: String,
    pub micros: &'a [u64],
}

/// Renders the series as an SVG document. Empty series are left out.
pub fn latency_svg(title: &str, series: &[Series<'_>]) -> String {
    let mut sorted: Vec<(String, Vec<u64>)> = series
        .iter()
        .filter(|s| !s.micros.is_empty())
        .map(|s| {
            let mut v = s.micros.to_vec();
            v.sort_unstable();
            (s.label.clone(), v)
        })
        .collect();
    sorted.truncate(COLORS.len());
    let min = sorted.iter().map(|(_, v)| v[0]).min().unwrap_or(100).max(10) as f64 / 1000.0;
    let max = sorted.iter().map(|(_, v)| v[v.len() - 1]).max().unwrap_or(1000).max(20) as f64 / 1000.0;
    let (lo, hi) = (min.log10().floor(), max.log10().ceil().max(min.log10().floor() + 1.0));
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x_of = |nines: f64| LEFT + plot_w * (nines / MAX_NINES).clamp(0.0, 1.0);
    let y_of = |ms: f64| TOP + plot_h * (1.0 - ((ms.max(1e-6).log10() - lo) / (hi - lo)).clamp(0.0, 1.0));

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"#,
        W / 2.0,
        escape(title)
    );
    // y grid: decades and their 2x and 5x
    let mut decade = lo;
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let ms = 10f64.powf(decade) * m;
            if ms.log10() > hi + 1e-9 {
                break;
            }
            let y = y_of(ms);
            let stroke = if m == 1.0 { "#bbb" } else { "#eee" };
            let _ =
                writeln!(svg, r#"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="{stroke}"/>"#, W - RIGHT);
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y + 4.0,
                ms_label(ms)
            );
        }
        decade += 1.0;
    }
    for (nines, label) in
        [(0.0, "0%"), (std::f64::consts::LOG10_2, "50%"), (1.0, "90%"), (2.0, "99%"), (3.0, "99.9%"), (4.0, "99.99%")]
    {
        let x = x_of(nines);
        let _ = writeln!(svg, r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#ddd"/>"##, H - BOTTOM);
        let _ = writeln!(svg, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#, H - BOTTOM + 18.0);
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">latency (ms, log scale)</text>"#,
        LEFT + plot_w / 2.0,
        H - 10.0,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    for (i, (label, v)) in sorted.iter().enumerate() {
        let n = v.len();
        let mut points = Vec::new();
        for step in 0..=400 {
            let nines = MAX_NINES * f64::from(step) / 400.0;
            let p = 1.0 - 10f64.powf(-nines);
            if step > 0 && p > (n as f64 - 1.0) / n as f64 {
                break;
            }
            let idx = ((n as f64 - 1.0) * p).round() as usize;
            points.push(format!("{:.1},{:.1}", x_of(nines), y_of(v[idx.min(n - 1)] as f64 / 1000.0)));
        }
        let color = COLORS[i];
        let _ =
            writeln!(svg, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, points.join(" "));
        let ly = TOP + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{} (n={n})</text>"#,
            LEFT + 12.0,
            LEFT + 36.0,
            LEFT + 42.0,
            ly + 4.0,
            escape(label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn ms_label(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_one_line_per_non_empty_series_and_escapes_labels() {
        let a: Vec<u64> = (1..=1000).map(|i| i * 50).collect();
        let b: Vec<u64> = vec![];
        let svg = latency_svg(
            "a < b",
            &[Series { label: "adjust & co".into(), micros: &a }, Series { label: "empty".into(), micros: &b }],
        );
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("adjust &amp; co (n=1000)"));
        assert!(svg.contains("a &lt; b"));
        assert!(!svg.contains("empty"));
    }
}

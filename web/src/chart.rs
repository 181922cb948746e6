//! Metric charts as inline SVG, drawn on the server from the API's series: no chart library,
//! no script, nothing fetched. Each chart is one metric, one line per series (a replica, a
//! node), the time axis spanning the chosen range, the value axis from zero to the highest
//! point. Every label is escaped here, because the SVG goes into the page as markup.

use protocol::metrics::{MetricsView, SeriesView};
use serde::Serialize;
use std::fmt::Write;

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;
/// Room on the left for the value axis's labels and below for the times.
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 20.0;
/// Line colours, told apart at WCAG AA contrast on white.
const COLOURS: &[&str] = &["#1f5fa8", "#a8431f", "#2e7d32", "#6a1b9a", "#8d6e00", "#00695c"];

/// The charts the app page shows, in this order: (metric, title).
pub(crate) const APP_CHARTS: &[(&str, &str)] = &[
    ("http_requests_per_second", "Requests per second"),
    ("http_5xx_percent", "5xx share (%)"),
    ("http_latency_p95_ms", "p95 latency (ms)"),
    ("container_cpu_percent", "CPU per replica (%)"),
    ("container_memory_bytes", "Memory per replica"),
];

/// One chart for a template: its title, its SVG, and the legend (name, colour, newest value).
#[derive(Debug, Serialize)]
pub(crate) struct Chart {
    pub metric: String,
    pub title: String,
    pub svg: String,
    pub legend: Vec<(String, String, String)>,
    /// Points drawn across every line.
    pub points: usize,
    /// The highest value drawn (0 without points).
    pub max: f64,
}

/// The app page's charts from `view`, spanning `since`..`now` (Unix seconds).
pub(crate) fn app_charts(view: &MetricsView, now: i64) -> Vec<Chart> {
    APP_CHARTS
        .iter()
        .map(|(metric, title)| {
            let series: Vec<&SeriesView> = view.series.iter().filter(|s| s.metric == *metric).collect();
            chart(metric, title, &series, view.since, now)
        })
        .collect()
}

/// What a series is called in a legend: its replica (`web.2`), else its labels.
fn series_name(s: &SeriesView) -> String {
    match (s.labels.get("process"), s.labels.get("replica")) {
        (Some(p), Some(r)) => format!("{p}.{r}"),
        _ => {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if labels.is_empty() {
                s.metric.clone()
            } else {
                labels.join(" ")
            }
        }
    }
}

/// A value with its unit, short: `12.5`, `3.2 MiB`, `41 ms`.
pub(crate) fn format_value(value: f64, unit: &str) -> String {
    match unit {
        "bytes" => {
            let mut v = value;
            for u in ["B", "KiB", "MiB", "GiB", "TiB"] {
                if v < 1024.0 || u == "TiB" {
                    return if u == "B" { format!("{v:.0} B") } else { format!("{v:.1} {u}") };
                }
                v /= 1024.0;
            }
            unreachable!("the loop returns at TiB")
        }
        "percent" => format!("{value:.1}%"),
        "ms" => format!("{value:.0} ms"),
        "per_second" => format!("{value:.1}/s"),
        _ => format!("{value:.1}"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn clock(unix: i64) -> String {
    let secs = unix.rem_euclid(86_400);
    format!("{:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

/// One chart of `series` between `since` and `now`.
pub(crate) fn chart(metric: &str, title: &str, series: &[&SeriesView], since: i64, now: i64) -> Chart {
    let span = (now - since).max(1) as f64;
    let unit = series.first().map_or("", |s| s.unit.as_str());
    let max = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0_f64, f64::max);
    // Headroom above the highest point; a flat zero line still gets an axis.
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let (plot_w, plot_h) = (WIDTH - LEFT - 8.0, HEIGHT - BOTTOM - 8.0);
    let x = |t: i64| LEFT + ((t - since) as f64 / span).clamp(0.0, 1.0) * plot_w;
    let y = |v: f64| 8.0 + plot_h - (v / top).clamp(0.0, 1.0) * plot_h;

    let mut svg = String::new();
    let label = escape(title);
    let _ = write!(
        svg,
        r##"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{label}" xmlns="http://www.w3.org/2000/svg">"##
    );
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#767676"/><line x1="{LEFT}" y1="8" x2="{LEFT}" y2="{y0}" stroke="#767676"/>"##,
        y0 = 8.0 + plot_h,
        x1 = LEFT + plot_w,
    );
    for (value, at) in [(top, y(top)), (top / 2.0, y(top / 2.0)), (0.0, y(0.0))] {
        let _ = write!(
            svg,
            r##"<text x="{tx}" y="{ty:.1}" text-anchor="end" font-size="11" fill="#333">{}</text>"##,
            escape(&format_value(value, unit)),
            tx = LEFT - 4.0,
            ty = at + 4.0,
        );
    }
    for (t, anchor) in [(since, "start"), (now, "end")] {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" text-anchor="{anchor}" font-size="11" fill="#333">{}</text>"##,
            x(t),
            HEIGHT - 4.0,
            clock(t)
        );
    }
    let mut legend = Vec::new();
    let mut points = 0;
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = s.points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        points += path.len();
        if path.len() == 1 {
            let _ = write!(
                svg,
                r##"<circle cx="{}" r="2.5" fill="{colour}"/>"##,
                path[0].replace(',', "\" cy=\"")
            );
        } else if !path.is_empty() {
            let _ = write!(
                svg,
                r##"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"##,
                path.join(" ")
            );
        }
        let current = s.current().map_or("–".to_string(), |v| format_value(v, &s.unit));
        legend.push((series_name(s), colour.to_string(), current));
    }
    if points == 0 {
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="middle" font-size="13" fill="#333">No data in this range yet</text>"##,
            LEFT + plot_w / 2.0,
            8.0 + plot_h / 2.0
        );
    }
    svg.push_str("</svg>");
    Chart { metric: metric.to_string(), title: title.to_string(), svg, legend, points, max }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(replica: &str, points: Vec<(i64, f64)>) -> SeriesView {
        let labels =
            [("process".to_string(), "web".to_string()), ("replica".to_string(), replica.to_string())];
        SeriesView {
            metric: "container_cpu_percent".into(),
            labels: labels.into_iter().collect(),
            unit: "percent".into(),
            step_secs: 10,
            points,
        }
    }

    #[test]
    fn lines_span_the_range_and_labels_are_escaped() {
        let a = series("1", vec![(1000, 0.0), (1300, 50.0), (1600, 25.0)]);
        let b = series("<2>", vec![(1600, 10.0)]);
        let c = chart("container_cpu_percent", "CPU <per> replica", &[&a, &b], 1000, 1600);
        assert_eq!(c.points, 4);
        assert!(c.svg.contains("<polyline") && c.svg.contains("<circle"), "{}", c.svg);
        // The first point sits on the left axis, the last on the right edge.
        assert!(c.svg.contains(&format!("{LEFT:.1},")), "{}", c.svg);
        assert!(c.svg.contains("CPU &lt;per&gt; replica") && !c.svg.contains("<per>"));
        assert_eq!(c.legend[0], ("web.1".to_string(), COLOURS[0].to_string(), "25.0%".to_string()));
        assert_eq!(c.legend[1].0, "web.<2>", "the template escapes legend text");
        let empty = chart("http_5xx_percent", "5xx", &[], 1000, 1600);
        assert_eq!(empty.points, 0);
        assert!(empty.svg.contains("No data"));
    }

    #[test]
    fn values_read_in_their_units() {
        assert_eq!(format_value(3.5 * 1024.0 * 1024.0, "bytes"), "3.5 MiB");
        assert_eq!(format_value(512.0, "bytes"), "512 B");
        assert_eq!(format_value(12.345, "percent"), "12.3%");
        assert_eq!(format_value(41.4, "ms"), "41 ms");
    }
}

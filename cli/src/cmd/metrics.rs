//! `paas metrics`: an environment's series (or the nodes'), each with its newest value and a
//! sparkline of the span asked for.

use crate::args::{Global, MetricsArgs};
use crate::output::emit;
use protocol::metrics::{MetricsView, SeriesView};
use std::process::ExitCode;

/// Cells of a sparkline.
const WIDTH: usize = 40;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub async fn exec(g: &Global, args: MetricsArgs) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    if args.scrape_token {
        let token = client.scrape_token().await?;
        emit(g.output, &token, |t| println!("{}", t.token))?;
        return Ok(ExitCode::SUCCESS);
    }
    let since = args.since.as_deref().unwrap_or("1h");
    let (view, whose) = match &args.app {
        Some(app) if !args.nodes => {
            protocol::AppName::new(app.as_str())?;
            protocol::EnvName::new(args.env.as_str())?;
            (client.metrics(app, &args.env, since).await?, format!("{app}/{}", args.env))
        }
        _ => (client.node_metrics(since).await?, "the nodes".to_string()),
    };
    emit(g.output, &view, |view| print(view, &whose, since))?;
    Ok(ExitCode::SUCCESS)
}

fn print(view: &MetricsView, whose: &str, since: &str) {
    if view.series.is_empty() {
        println!("No metrics for {whose} in the last {since} yet: agents send a sample every 10 seconds.");
        return;
    }
    let step = view.series[0].step_secs;
    println!(
        "{whose}, last {since} ({} points; newest value, then lowest and highest):",
        describe_step(step)
    );
    let now = view.series.iter().filter_map(|s| s.points.last().map(|p| p.0)).max().unwrap_or(view.since);
    let rows: Vec<(String, String, String)> = view
        .series
        .iter()
        .map(|s| (name(s), value(s.current(), &s.unit), sparkline(s, view.since, now)))
        .collect();
    let (w0, w1) =
        rows.iter().fold((0, 0), |(a, b), r| (a.max(r.0.chars().count()), b.max(r.1.chars().count())));
    for (n, v, line) in rows {
        println!("{n:<w0$}  {v:>w1$}  {line}");
    }
}

fn describe_step(step: u64) -> String {
    if step.is_multiple_of(60) {
        format!("{} min", step / 60)
    } else {
        format!("{step} s")
    }
}

/// The metric and its labels: `container_cpu_percent web.2 node=n1`.
fn name(s: &SeriesView) -> String {
    let mut out = s.metric.clone();
    if let (Some(p), Some(r)) = (s.labels.get("process"), s.labels.get("replica")) {
        out.push_str(&format!(" {p}.{r}"));
    }
    for (k, v) in &s.labels {
        if !["process", "replica"].contains(&k.as_str()) {
            out.push_str(&format!(" {k}={v}"));
        }
    }
    out
}

/// A value in its unit: `12.5%`, `3.1/s`, `240 MiB`, `18 ms`.
pub fn value(v: Option<f64>, unit: &str) -> String {
    let Some(v) = v else { return "-".into() };
    match unit {
        "percent" => format!("{v:.1}%"),
        "per_second" => format!("{v:.1}/s"),
        "ms" => format!("{v:.0} ms"),
        "bytes" => bytes(v),
        _ => format!("{v:.0}"),
    }
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The span from `from` to `to` in [`WIDTH`] cells, each the mean of its points (blank where
/// none), scaled from the lowest point to the highest; then the lowest and highest points.
fn sparkline(s: &SeriesView, from: i64, to: i64) -> String {
    let span = (to - from).max(1) as f64;
    let mut cells = vec![(0.0, 0u32); WIDTH];
    for (at, v) in &s.points {
        let i = (((at - from) as f64 / span) * WIDTH as f64) as usize;
        let cell = &mut cells[i.min(WIDTH - 1)];
        *cell = (cell.0 + v, cell.1 + 1);
    }
    let means: Vec<Option<f64>> =
        cells.iter().map(|(sum, n)| (*n > 0).then(|| sum / f64::from(*n))).collect();
    // The lowest and highest points, not cells: a cell's mean hides a spike.
    let (lo, hi) = s.points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), (_, v)| (lo.min(*v), hi.max(*v)));
    let line: String = means
        .iter()
        .map(|m| match m {
            None => ' ',
            Some(_) if hi <= lo => BARS[0],
            Some(v) => BARS[(((v - lo) / (hi - lo)) * 7.0).round().clamp(0.0, 7.0) as usize],
        })
        .collect();
    format!("{line}  {} .. {}", value(Some(lo), &s.unit), value(Some(hi), &s.unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_sparklines() {
        assert_eq!(value(Some(12.345), "percent"), "12.3%");
        assert_eq!(value(Some(3.0 * 1024.0 * 1024.0), "bytes"), "3.0 MiB");
        assert_eq!(value(None, "ms"), "-");
        let s = SeriesView {
            metric: "http_requests_per_second".into(),
            unit: "per_second".into(),
            step_secs: 10,
            points: vec![(0, 1.0), (200, 8.0), (399, 4.5)],
            ..Default::default()
        };
        let line = sparkline(&s, 0, 400);
        assert!(line.starts_with('▁'), "{line}");
        assert_eq!(line.chars().filter(|c| BARS.contains(c)).count(), 3, "{line}");
        assert!(line.contains('█') && line.ends_with("1.0/s .. 8.0/s"), "{line}");
        // Points sharing a cell: the cell shows their mean, the range the points themselves.
        let crowded = SeriesView { points: vec![(398, 5.0), (399, 0.0)], ..s.clone() };
        assert!(sparkline(&crowded, 0, 400).ends_with("0.0/s .. 5.0/s"));
    }
}

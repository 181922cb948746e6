//! Prometheus's text exposition format (version 0.0.4) of the newest figures (gauges) and the
//! ingress's totals since start (counters and a latency histogram). Written here: the format
//! is a few lines per metric, and the client crates bring a registry of their own that would
//! hold the same figures twice.

use super::ring::SeriesKey;
use protocol::metrics::{TrafficFigures, LATENCY_BOUNDS_MS};
use std::collections::BTreeMap;
use std::fmt::Write;

/// One app environment's ingress counts since start.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    responses: [u64; 5],
    bytes_out: u64,
    buckets: Vec<u64>,
    sum_ms: f64,
}

impl Totals {
    pub fn add(&mut self, t: &TrafficFigures) {
        for (total, n) in self.responses.iter_mut().zip(t.responses) {
            *total += n;
        }
        self.bytes_out += t.bytes_out;
        self.buckets.resize(LATENCY_BOUNDS_MS.len() + 1, 0);
        for (total, n) in self.buckets.iter_mut().zip(&t.latency_buckets) {
            *total += n;
        }
        self.sum_ms += t.latency_sum_ms;
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The exposition: gauges from `current`, counters from `totals` by (node, app, env).
pub fn render(current: &[(SeriesKey, f64)], totals: &BTreeMap<(String, String, String), Totals>) -> String {
    type Labels = BTreeMap<String, String>;
    let mut by_metric: BTreeMap<&str, Vec<(&Labels, f64)>> = BTreeMap::new();
    for (key, value) in current {
        by_metric.entry(key.metric.as_str()).or_default().push((&key.labels, *value));
    }
    let mut out = String::new();
    for (metric, samples) in by_metric {
        let _ = writeln!(out, "# HELP paas_{metric} {}", help(metric));
        let _ = writeln!(out, "# TYPE paas_{metric} gauge");
        for (labels, value) in samples {
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            line(&mut out, &format!("paas_{metric}"), &labels, value);
        }
    }
    if totals.is_empty() {
        return out;
    }
    out.push_str("# HELP paas_http_requests_total Requests the ingress answered, by status class.\n");
    out.push_str("# TYPE paas_http_requests_total counter\n");
    for ((node, app, env), t) in totals {
        for (class, n) in CLASSES.iter().zip(t.responses) {
            let labels =
                [("app", app.as_str()), ("env", env.as_str()), ("node", node.as_str()), ("code", *class)];
            line(&mut out, "paas_http_requests_total", &labels, n as f64);
        }
    }
    out.push_str("# HELP paas_http_response_bytes_total Body bytes the ingress sent.\n");
    out.push_str("# TYPE paas_http_response_bytes_total counter\n");
    for ((node, app, env), t) in totals {
        let labels = [("app", app.as_str()), ("env", env.as_str()), ("node", node.as_str())];
        line(&mut out, "paas_http_response_bytes_total", &labels, t.bytes_out as f64);
    }
    out.push_str(
        "# HELP paas_http_request_duration_seconds Time from a request's start to its response's end.\n",
    );
    out.push_str("# TYPE paas_http_request_duration_seconds histogram\n");
    for ((node, app, env), t) in totals {
        let mut cumulative = 0;
        for (i, n) in t.buckets.iter().enumerate() {
            cumulative += n;
            let le = LATENCY_BOUNDS_MS.get(i).map_or("+Inf".to_string(), |ms| format!("{}", ms / 1000.0));
            let labels =
                [("app", app.as_str()), ("env", env.as_str()), ("node", node.as_str()), ("le", le.as_str())];
            line(&mut out, "paas_http_request_duration_seconds_bucket", &labels, cumulative as f64);
        }
        let labels = [("app", app.as_str()), ("env", env.as_str()), ("node", node.as_str())];
        line(&mut out, "paas_http_request_duration_seconds_sum", &labels, t.sum_ms / 1000.0);
        line(&mut out, "paas_http_request_duration_seconds_count", &labels, cumulative as f64);
    }
    out
}

fn line(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the format writes it: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn help(metric: &str) -> &'static str {
    match metric {
        "node_cpu_percent" => "Busy share of the node's cores over the last sample.",
        "node_memory_percent" => "Memory in use (not available) on the node.",
        "node_memory_used_bytes" => "Memory in use (not available) on the node.",
        "node_disk_percent" => "Space used on the file system holding the path.",
        "node_disk_used_bytes" => "Space used on the file system holding the path.",
        "node_network_receive_bytes_per_second" => "Bytes received by the node's interfaces (not loopback).",
        "node_network_transmit_bytes_per_second" => "Bytes sent by the node's interfaces (not loopback).",
        "http_requests_per_second" => "Requests the ingress answered per second over the last sample.",
        "http_5xx_percent" => "Share of the ingress's answers that were 5xx over the last sample.",
        "http_latency_p50_ms" => "Median request duration over the last sample.",
        "http_latency_p95_ms" => "95th percentile of request duration over the last sample.",
        "http_bytes_out_per_second" => "Body bytes the ingress sent per second over the last sample.",
        "container_cpu_percent" => "Share of one core the container used over the last sample.",
        "container_memory_bytes" => "Memory the container uses (without reclaimable page cache).",
        "container_memory_percent" => "Memory the container uses against its limit.",
        "container_restarts" => "Times the agent restarted the container after a crash.",
        "db_connections" => "Client connections the database server has open.",
        "db_connections_percent" => "Client connections against max_connections.",
        "db_size_bytes" => "Size of the app's database.",
        "db_replica_lag_bytes" => "WAL a replica received but has not replayed.",
        "db_wal_archive_backlog" => {
            "Archived WAL files of a primary waiting to be shipped to the backup store."
        }
        _ => "A paas metric.",
    }
}

#[cfg(test)]
mod tests {
    use super::super::{series_of, tests::sample};
    use super::*;

    #[test]
    fn gauges_and_counters_in_the_text_format() {
        let s = sample();
        let mut totals = BTreeMap::new();
        let mut t = Totals::default();
        t.add(&s.traffic[0]);
        t.add(&s.traffic[0]);
        totals.insert(("n1".to_string(), "shop".to_string(), "production".to_string()), t);
        let text = render(&series_of("n1", &s), &totals);
        assert!(
            text.contains("# TYPE paas_node_cpu_percent gauge\npaas_node_cpu_percent{node=\"n1\"} 12.5\n"),
            "{text}"
        );
        assert!(text.contains(
            "paas_http_requests_total{app=\"shop\",env=\"production\",node=\"n1\",code=\"2xx\"} 36\n"
        ));
        assert!(text.contains("paas_http_request_duration_seconds_bucket{app=\"shop\",env=\"production\",node=\"n1\",le=\"0.01\"} 36\n"));
        assert!(text.contains("le=\"+Inf\"} 40\n"));
        assert!(text.contains(
            "paas_http_request_duration_seconds_count{app=\"shop\",env=\"production\",node=\"n1\"} 40\n"
        ));
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

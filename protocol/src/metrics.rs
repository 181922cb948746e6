//! Metrics on the wire: what a node agent samples every [`SAMPLE_SECS`] and sends to the
//! control plane ([`NodeSample`]), and what the API answers for `paas metrics`
//! ([`MetricsView`]).

use serde::{Deserialize, Serialize};

/// How often agents sample, and the finest resolution the control plane keeps.
pub const SAMPLE_SECS: u64 = 10;

/// Upper bounds (milliseconds) of the ingress's latency histogram buckets; one more bucket
/// counts what is slower than the last.
pub const LATENCY_BOUNDS_MS: [f64; 11] =
    [5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0];

/// One node's sample, sent to `POST /agent/v1/nodes/{node}/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSample {
    /// Seconds the counts below cover: the time since the previous sample.
    pub interval_secs: f64,
    pub host: HostFigures,
    pub containers: Vec<ContainerFigures>,
    /// The ingress's requests per app environment over the interval (ingress nodes only).
    pub traffic: Vec<TrafficFigures>,
    pub databases: Vec<DatabaseFigures>,
}

/// The machine: CPU over the interval, memory, the file systems that hold the platform's data,
/// network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostFigures {
    /// Busy share of all cores over the interval, 0 to 100; `None` for the first sample.
    pub cpu_percent: Option<f64>,
    pub cpus: u32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disks: Vec<DiskFigures>,
    /// Bytes per second over the interval, every interface but loopback.
    pub net_rx_bytes_per_sec: Option<f64>,
    pub net_tx_bytes_per_sec: Option<f64>,
}

/// A file system, named by a directory on it that the platform uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskFigures {
    pub path: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

impl DiskFigures {
    pub fn used_percent(&self) -> f64 {
        percent(self.used_bytes as f64, self.total_bytes as f64)
    }
}

/// One app container (a replica of a process).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerFigures {
    pub app: String,
    pub env: String,
    pub process: String,
    pub replica: u32,
    /// Share of one core over the interval (200 is two cores busy); `None` for the first sample
    /// and while it is not running.
    pub cpu_percent: Option<f64>,
    /// `None` while it is not running (crashed, waiting for its restart).
    pub memory_bytes: Option<u64>,
    /// The container's memory limit, when it has one.
    pub memory_limit_bytes: Option<u64>,
    /// Times the agent restarted it after a crash.
    pub restarts: u32,
}

/// The ingress's requests for one app environment over the interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficFigures {
    pub app: String,
    pub env: String,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub responses: [u64; 5],
    pub bytes_out: u64,
    /// Requests per latency bucket ([`LATENCY_BOUNDS_MS`], then the slower ones).
    pub latency_buckets: Vec<u64>,
    /// Sum of the requests' durations, milliseconds.
    pub latency_sum_ms: f64,
}

impl TrafficFigures {
    pub fn requests(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// The latency under which `q` (0 to 1) of the requests finished, interpolated inside its
    /// bucket; `None` without requests.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0.0;
        for (i, &n) in self.latency_buckets.iter().enumerate() {
            let upper = LATENCY_BOUNDS_MS.get(i).copied();
            let lower = if i == 0 { 0.0 } else { LATENCY_BOUNDS_MS[i - 1] };
            if n > 0 && seen + n as f64 >= rank {
                // The open last bucket has no upper bound: its lower one is all that is known.
                let Some(upper) = upper else { return Some(lower) };
                return Some(lower + (upper - lower) * ((rank - seen) / n as f64));
            }
            seen += n as f64;
        }
        Some(*LATENCY_BOUNDS_MS.last().expect("bounds"))
    }
}

/// A database server of an app environment (primary or replica).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseFigures {
    pub app: String,
    pub env: String,
    /// `primary` or `replica`.
    pub role: String,
    pub connections: u64,
    pub max_connections: u64,
    pub size_bytes: u64,
    /// Replicas: WAL received but not yet replayed.
    pub lag_bytes: Option<u64>,
    /// Primaries: archived WAL files waiting in the spool for the agent to ship them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_backlog: Option<u64>,
}

/// `part` of `whole` in percent; 0 when `whole` is 0.
pub fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

/// One series as `paas metrics` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesView {
    /// The metric's name, e.g. `http_requests_per_second`.
    pub metric: String,
    /// Its labels other than app and environment (`process`, `replica`, `class`, `node`...).
    pub labels: std::collections::BTreeMap<String, String>,
    /// The unit its values are in: `percent`, `bytes`, `per_second`, `ms`, `count`.
    pub unit: String,
    /// Seconds between points.
    pub step_secs: u64,
    /// (Unix seconds, value), oldest first; gaps where nothing was sampled are left out.
    pub points: Vec<(i64, f64)>,
}

impl SeriesView {
    /// The newest value.
    pub fn current(&self) -> Option<f64> {
        self.points.last().map(|p| p.1)
    }
}

/// `GET /api/v1/apps/{app}/envs/{env}/metrics` and `GET /api/v1/nodes/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsView {
    /// Unix seconds the series start at.
    pub since: i64,
    pub series: Vec<SeriesView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let mut t =
            TrafficFigures { latency_buckets: vec![0; LATENCY_BOUNDS_MS.len() + 1], ..Default::default() };
        assert_eq!(t.latency_quantile_ms(0.5), None);
        // 10 requests between 10 and 25 ms, 10 over 10 s.
        t.latency_buckets[2] = 10;
        t.latency_buckets[11] = 10;
        assert_eq!(t.latency_quantile_ms(0.25), Some(17.5));
        assert_eq!(t.latency_quantile_ms(0.5), Some(25.0));
        assert_eq!(t.latency_quantile_ms(0.95), Some(10000.0));
    }
}

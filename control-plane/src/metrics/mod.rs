//! Metrics, the control plane's side: each node's sample (every 10 s) becomes points of named
//! series in the ring store (`ring`), which the API reads back for `paas metrics` and the
//! console; the newest sample of each node and the ingress's totals since start make the
//! Prometheus text on `/metrics` (`prom`).

mod prom;
pub mod ring;

use crate::error::DomainError;
use crate::state::AppState;
use protocol::metrics::{percent, MetricsView, NodeSample, SeriesView};
use protocol::{AppName, EnvName};
use ring::{Rings, SeriesKey};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// Series kept at most unless configured (`--metrics-max-series`): about 69 KB each on disk
/// (a day of 10 s samples and a month of 5 min means), so 2,000 take at most 138 MB.
pub const DEFAULT_MAX_SERIES: usize = 2000;
/// A node's newest sample counts as current this long (three missed samples).
const FRESH_SECS: i64 = 35;

#[derive(Default)]
pub struct Metrics {
    /// What Prometheus sends on `/metrics` (`<dir>/scrape-token`): it reads metrics only.
    scrape_token: String,
    /// `None` for a control plane without a metrics directory (unit tests of other parts).
    rings: Option<Mutex<Rings>>,
    /// Each node's newest sample and when it came (Unix seconds).
    latest: Mutex<HashMap<String, (i64, NodeSample)>>,
    /// The ingress's counts since this process started, per (node, app, env): Prometheus's
    /// counters (a restart is a counter reset, which Prometheus expects).
    totals: Mutex<BTreeMap<(String, String, String), prom::Totals>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The unit of a metric, from its name's ending.
pub fn unit_of(metric: &str) -> &'static str {
    if metric.ends_with("_percent") {
        "percent"
    } else if metric.ends_with("_per_second") {
        "per_second"
    } else if metric.ends_with("_bytes") {
        "bytes"
    } else if metric.ends_with("_ms") {
        "ms"
    } else {
        "count"
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Metrics {
    /// Opens the series store in `dir`.
    pub fn open(dir: &Path, max_series: usize) -> anyhow::Result<Self> {
        let rings = Rings::open(dir, max_series)?;
        let path = dir.join("scrape-token");
        let scrape_token = match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let t = crate::tokens::generate();
                protocol::files::write_private(&path, t.as_bytes())?;
                t
            }
        };
        Ok(Self { scrape_token, rings: Some(Mutex::new(rings)), ..Default::default() })
    }

    pub fn scrape_token(&self) -> &str {
        &self.scrape_token
    }

    /// Whether `secret` is the scrape token (compared by hash, so in constant time).
    pub fn is_scrape_token(&self, secret: &str) -> bool {
        !self.scrape_token.is_empty()
            && crate::tokens::hash(secret) == crate::tokens::hash(&self.scrape_token)
    }

    /// Takes `node`'s sample, received at `now`. Blocking (it writes the store).
    pub fn record(&self, node: &str, sample: NodeSample, now: i64) -> anyhow::Result<()> {
        {
            let mut totals = lock(&self.totals);
            for t in &sample.traffic {
                totals.entry((node.to_string(), t.app.clone(), t.env.clone())).or_default().add(t);
            }
        }
        if let Some(rings) = &self.rings {
            let mut rings = lock(rings);
            let refused = rings.refused;
            for (key, value) in series_of(node, &sample) {
                rings.write(&key, now, value)?;
            }
            if rings.refused > refused && refused == 0 {
                tracing::warn!(
                    series = rings.len(),
                    "the metrics store holds as many series as it may (--metrics-max-series); new series are not kept"
                );
            }
        }
        lock(&self.latest).insert(node.to_string(), (now, sample));
        Ok(())
    }

    /// Series of `app`'s environment `env` from `since` to `now`. Blocking.
    pub fn app_view(&self, app: &str, env: &str, since: i64, now: i64) -> anyhow::Result<MetricsView> {
        self.view(|k| k.label("app") == Some(app) && k.label("env") == Some(env), since, now)
    }

    /// The nodes' own series (CPU, memory, disks, network). Blocking.
    pub fn nodes_view(&self, since: i64, now: i64) -> anyhow::Result<MetricsView> {
        self.view(|k| k.metric.starts_with("node_"), since, now)
    }

    fn view(&self, wanted: impl Fn(&SeriesKey) -> bool, since: i64, now: i64) -> anyhow::Result<MetricsView> {
        let mut series = Vec::new();
        if let Some(rings) = &self.rings {
            let rings = lock(rings);
            let mut keys: Vec<&SeriesKey> = rings.keys().filter(|k| wanted(k)).collect();
            keys.sort_by(|a, b| (order(&a.metric), a).cmp(&(order(&b.metric), b)));
            for key in keys {
                let points = rings.read(key, since, now, now)?;
                if points.points.is_empty() {
                    continue;
                }
                let mut labels = key.labels.clone();
                labels.remove("app");
                labels.remove("env");
                series.push(SeriesView {
                    metric: key.metric.clone(),
                    labels,
                    unit: unit_of(&key.metric).to_string(),
                    step_secs: points.step as u64,
                    points: points.points,
                });
            }
        }
        Ok(MetricsView { since, series })
    }

    /// Forgets the series of `app` (deleted). Blocking.
    pub fn forget_app(&self, app: &str) -> anyhow::Result<()> {
        if let Some(rings) = &self.rings {
            lock(rings).retain(|k| k.label("app") != Some(app))?;
        }
        lock(&self.latest).values_mut().for_each(|(_, s)| {
            s.containers.retain(|c| c.app != app);
            s.traffic.retain(|t| t.app != app);
            s.databases.retain(|d| d.app != app);
        });
        lock(&self.totals).retain(|(_, a, _), _| a != app);
        Ok(())
    }

    /// Removes series nothing wrote for longer than the coarse ring holds. Blocking.
    pub fn expire(&self, now: i64) -> anyhow::Result<usize> {
        let Some(rings) = &self.rings else { return Ok(0) };
        let mut rings = lock(rings);
        let horizon = now - ring::COARSE_STEP * ring::COARSE_SLOTS;
        let stale: Vec<SeriesKey> = rings
            .keys()
            .filter(|k| rings.last_written(k).ok().flatten().is_none_or(|at| at < horizon))
            .cloned()
            .collect();
        rings.retain(|k| !stale.contains(k))
    }

    /// The points of every node's sample that is still current at `now`.
    pub fn current(&self, now: i64) -> Vec<(SeriesKey, f64)> {
        lock(&self.latest)
            .iter()
            .filter(|(_, (at, _))| now - at <= FRESH_SECS)
            .flat_map(|(node, (_, sample))| series_of(node, sample))
            .collect()
    }

    /// When each node's newest sample came (Unix seconds), since this process started.
    pub fn last_seen(&self) -> HashMap<String, i64> {
        lock(&self.latest).iter().map(|(node, (at, _))| (node.clone(), *at)).collect()
    }

    /// The newest figures and the ingress's totals in Prometheus's text format.
    pub fn prometheus(&self, now: i64) -> String {
        prom::render(&self.current(now), &lock(&self.totals))
    }

    /// Series the store holds.
    pub fn series_count(&self) -> usize {
        self.rings.as_ref().map_or(0, |r| lock(r).len())
    }
}

/// `since` as `paas metrics --since` gives it (`6h`, or a time), in Unix seconds; an hour ago
/// without one.
fn since_secs(since: Option<&str>, now: i64) -> crate::error::Result<i64> {
    let since = since.unwrap_or("1h");
    let ns = crate::logs::parse_instant("since", since, now.saturating_mul(1_000_000_000))?;
    Ok(ns.div_euclid(1_000_000_000))
}

/// The series of `app`'s environment `env` since `since`.
pub async fn app_view(
    state: &AppState,
    app: &str,
    env: &str,
    since: Option<&str>,
) -> crate::error::Result<MetricsView> {
    let (app, env) = (AppName::new(app)?, EnvName::new(env)?);
    state.store.get_env(app.as_str(), env.as_str()).await?;
    let now = now_secs();
    let since = since_secs(since, now)?;
    let metrics = state.metrics.clone();
    blocking(move || metrics.app_view(app.as_str(), env.as_str(), since, now)).await
}

/// The nodes' series since `since`.
pub async fn nodes_view(state: &AppState, since: Option<&str>) -> crate::error::Result<MetricsView> {
    let now = now_secs();
    let since = since_secs(since, now)?;
    let metrics = state.metrics.clone();
    blocking(move || metrics.nodes_view(since, now)).await
}

/// Most entries of each kind one sample may carry.
const MAX_ENTRIES: usize = 10_000;
const MAX_DISKS: usize = 64;

/// What of a node's sample can become series: names that are names (a node's figures become
/// labels that terminals, Prometheus and emails show), paths without control characters, a
/// bounded count of each.
fn sanitized(mut s: NodeSample) -> NodeSample {
    let named = |app: &str, env: &str| AppName::new(app).is_ok() && EnvName::new(env).is_ok();
    let word = |w: &str| {
        !w.is_empty()
            && w.len() <= 63
            && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    s.containers.retain(|c| named(&c.app, &c.env) && word(&c.process));
    s.traffic.retain(|t| {
        named(&t.app, &t.env) && t.latency_buckets.len() <= protocol::metrics::LATENCY_BOUNDS_MS.len() + 1
    });
    s.databases.retain(|d| named(&d.app, &d.env) && word(&d.role));
    s.host.disks.retain(|d| d.path.len() <= 256 && !d.path.chars().any(char::is_control));
    s.containers.truncate(MAX_ENTRIES);
    s.traffic.truncate(MAX_ENTRIES);
    s.databases.truncate(MAX_ENTRIES);
    s.host.disks.truncate(MAX_DISKS);
    s
}

/// Takes a sample of `node` (from its agent).
pub async fn record(state: &AppState, node: &str, sample: NodeSample) -> crate::error::Result<()> {
    let (metrics, node, sample) = (state.metrics.clone(), node.to_string(), sanitized(sample));
    blocking(move || metrics.record(&node, sample, now_secs())).await
}

/// Forgets the series of a deleted app: a new app of the same name starts with none.
pub async fn forget_app(state: &AppState, app: &str) {
    let (metrics, owned) = (state.metrics.clone(), app.to_string());
    if let Err(e) = blocking(move || metrics.forget_app(&owned)).await {
        tracing::warn!(app, error = %e, "forgetting a deleted app's metrics failed");
    }
}

/// Runs store work off the async threads; its failure is the server's, said in the log.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> crate::error::Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(DomainError::Internal(e.context("the metrics store failed"))),
        Err(e) => Err(DomainError::Internal(anyhow::anyhow!("the metrics store failed: {e}"))),
    }
}

/// Removes series nothing wrote to for a month, hourly.
pub async fn expire(state: AppState) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    let stop = state.shutting_down();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let metrics = state.metrics.clone();
        match blocking(move || metrics.expire(now_secs())).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(series = n, "removed metrics series no sample came for in a month"),
            Err(e) => tracing::warn!(error = %e, "expiring old metrics series failed"),
        }
    }
}

/// Every metric, in the order listings show them: the app's traffic first, then its
/// containers, its database, the nodes.
pub const METRICS: &[&str] = &[
    "http_requests_per_second",
    "http_5xx_percent",
    "http_latency_p50_ms",
    "http_latency_p95_ms",
    "http_bytes_out_per_second",
    "container_cpu_percent",
    "container_memory_bytes",
    "container_memory_percent",
    "container_restarts",
    "db_connections",
    "db_connections_percent",
    "db_size_bytes",
    "db_replica_lag_bytes",
    "db_wal_archive_backlog",
    "node_cpu_percent",
    "node_memory_percent",
    "node_memory_used_bytes",
    "node_disk_percent",
    "node_disk_used_bytes",
    "node_network_receive_bytes_per_second",
    "node_network_transmit_bytes_per_second",
];

fn order(metric: &str) -> usize {
    METRICS.iter().position(|m| *m == metric).unwrap_or(METRICS.len())
}

/// The points one sample of `node` gives: (series, value).
pub fn series_of(node: &str, s: &NodeSample) -> Vec<(SeriesKey, f64)> {
    let mut out = Vec::new();
    let mut put = |metric: &str, labels: &[(&str, &str)], value: Option<f64>| {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            let mut labels = labels.to_vec();
            labels.push(("node", node));
            out.push((SeriesKey::new(metric, &labels), v));
        }
    };
    let h = &s.host;
    put("node_cpu_percent", &[], h.cpu_percent);
    put("node_memory_percent", &[], Some(percent(h.memory_used_bytes as f64, h.memory_total_bytes as f64)));
    put("node_memory_used_bytes", &[], Some(h.memory_used_bytes as f64));
    for d in &h.disks {
        put("node_disk_percent", &[("path", &d.path)], Some(d.used_percent()));
        put("node_disk_used_bytes", &[("path", &d.path)], Some(d.used_bytes as f64));
    }
    put("node_network_receive_bytes_per_second", &[], h.net_rx_bytes_per_sec);
    put("node_network_transmit_bytes_per_second", &[], h.net_tx_bytes_per_sec);
    let interval = s.interval_secs.max(1.0);
    for t in &s.traffic {
        let who = [("app", t.app.as_str()), ("env", t.env.as_str())];
        let requests = t.requests() as f64;
        put("http_requests_per_second", &who, Some(requests / interval));
        put("http_5xx_percent", &who, Some(percent(t.responses[4] as f64, requests)));
        put("http_latency_p50_ms", &who, t.latency_quantile_ms(0.5));
        put("http_latency_p95_ms", &who, t.latency_quantile_ms(0.95));
        put("http_bytes_out_per_second", &who, Some(t.bytes_out as f64 / interval));
    }
    for c in &s.containers {
        let replica = c.replica.to_string();
        let who = [
            ("app", c.app.as_str()),
            ("env", c.env.as_str()),
            ("process", &c.process),
            ("replica", &replica),
        ];
        put("container_cpu_percent", &who, c.cpu_percent);
        put("container_memory_bytes", &who, c.memory_bytes.map(|m| m as f64));
        let limit = c.memory_bytes.zip(c.memory_limit_bytes).map(|(m, l)| percent(m as f64, l as f64));
        put("container_memory_percent", &who, limit);
        put("container_restarts", &who, Some(f64::from(c.restarts)));
    }
    for d in &s.databases {
        let who = [("app", d.app.as_str()), ("env", d.env.as_str()), ("role", d.role.as_str())];
        put("db_connections", &who, Some(d.connections as f64));
        put("db_connections_percent", &who, Some(percent(d.connections as f64, d.max_connections as f64)));
        put("db_size_bytes", &who, Some(d.size_bytes as f64));
        put("db_replica_lag_bytes", &who, d.lag_bytes.map(|b| b as f64));
        put("db_wal_archive_backlog", &who, d.archive_backlog.map(|b| b as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::metrics::{ContainerFigures, HostFigures, TrafficFigures, LATENCY_BOUNDS_MS};

    pub(super) fn sample() -> NodeSample {
        let mut buckets = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        buckets[1] = 18;
        buckets[3] = 2;
        NodeSample {
            interval_secs: 10.0,
            host: HostFigures {
                cpu_percent: Some(12.5),
                cpus: 2,
                memory_used_bytes: 1 << 30,
                memory_total_bytes: 4 << 30,
                ..Default::default()
            },
            containers: vec![ContainerFigures {
                app: "shop".into(),
                env: "production".into(),
                process: "web".into(),
                replica: 1,
                cpu_percent: Some(3.0),
                memory_bytes: Some(64 << 20),
                memory_limit_bytes: Some(256 << 20),
                restarts: 0,
            }],
            traffic: vec![TrafficFigures {
                app: "shop".into(),
                env: "production".into(),
                responses: [0, 18, 0, 0, 2],
                bytes_out: 2000,
                latency_buckets: buckets,
                latency_sum_ms: 200.0,
            }],
            databases: Vec::new(),
        }
    }

    #[test]
    fn a_nodes_odd_names_and_paths_are_left_out() {
        let mut s = sample();
        s.containers[0].app = "Shop\u{1b}[31m".into();
        s.traffic[0].env = "../x".into();
        s.host.disks.push(protocol::metrics::DiskFigures { path: "/a\nb".into(), ..Default::default() });
        s.host
            .disks
            .push(protocol::metrics::DiskFigures { path: "/var/lib/docker".into(), ..Default::default() });
        let s = sanitized(s);
        assert!(s.containers.is_empty() && s.traffic.is_empty());
        assert_eq!(s.host.disks.len(), 1);
        assert_eq!(sanitized(sample()), sample());
    }

    #[test]
    fn a_sample_becomes_series_an_app_view_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::open(dir.path(), 100).unwrap();
        let now = 1_800_000_000;
        metrics.record("n1", sample(), now).unwrap();
        let view = metrics.app_view("shop", "production", now - 3600, now).unwrap();
        let get = |m: &str| view.series.iter().find(|s| s.metric == m).and_then(SeriesView::current);
        assert_eq!(get("http_requests_per_second"), Some(2.0));
        assert_eq!(get("http_5xx_percent"), Some(10.0));
        assert_eq!(get("container_memory_percent"), Some(25.0));
        assert_eq!(view.series[0].metric, "http_requests_per_second", "traffic first");
        assert!(view.series.iter().all(|s| !s.labels.contains_key("app")));
        assert!(series_of("n1", &sample()).iter().all(|(k, _)| order(&k.metric) < METRICS.len()), "listed");
        assert!(metrics.app_view("other", "production", now - 3600, now).unwrap().series.is_empty());
        let nodes = metrics.nodes_view(now - 3600, now).unwrap();
        assert!(nodes.series.iter().any(|s| s.metric == "node_memory_percent" && s.current() == Some(25.0)));
        metrics.forget_app("shop").unwrap();
        assert!(metrics.app_view("shop", "production", now - 3600, now).unwrap().series.is_empty());
    }
}

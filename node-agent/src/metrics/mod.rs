//! Metrics, the node's side: every [`SAMPLE_SECS`] the sampler reads the machine (`host`), the
//! CPU and memory of each running app container of this node (`cgroup`), the ingress's
//! request counts per app environment, and the restarts and database figures of the node's
//! latest report, and sends them to the control plane. A sample that cannot be sent is dropped
//! (metrics are current figures; the next one follows), and said so once per outage.

mod cgroup;
mod host;

use crate::docker::DockerClient;
use crate::ingress::IngressHandle;
use protocol::agent::NodeReport;
use protocol::metrics::{ContainerFigures, DatabaseFigures, NodeSample, SAMPLE_SECS};
use protocol::Client;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use cgroup::Usage;

pub struct Sampler {
    pub docker: DockerClient,
    pub client: Client,
    pub node: String,
    /// The ingress this node serves, if it does.
    pub ingress: Option<IngressHandle>,
    /// The node's latest report: restarts and database figures.
    pub reports: watch::Receiver<NodeReport>,
    /// Directories whose file systems are measured (Docker's data, the agent's state).
    pub paths: Vec<PathBuf>,
}

impl Sampler {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(SAMPLE_SECS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut host = host::HostReader::default();
        // Each container's CPU time at the previous sample.
        let mut cpu: HashMap<String, (u64, Instant)> = HashMap::new();
        let mut last = Instant::now();
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let interval = now.duration_since(last).as_secs_f64();
            last = now;
            let sample = self.sample(&mut host, &mut cpu, interval).await;
            match tokio::time::timeout(
                Duration::from_secs(SAMPLE_SECS),
                self.client.send_metrics(&self.node, &sample),
            )
            .await
            {
                Ok(Ok(_)) if std::mem::take(&mut failing) => {
                    tracing::info!(node = %self.node, "sending metrics works again");
                }
                Ok(Err(e)) if !failing => {
                    tracing::warn!(node = %self.node, error = %e, "sending metrics failed; samples are dropped until it works");
                    failing = true;
                }
                Err(_) if !failing => {
                    tracing::warn!(node = %self.node, "sending metrics timed out; samples are dropped until it works");
                    failing = true;
                }
                _ => {}
            }
        }
    }

    async fn sample(
        &self,
        host: &mut host::HostReader,
        cpu: &mut HashMap<String, (u64, Instant)>,
        interval: f64,
    ) -> NodeSample {
        let paths = self.paths.clone();
        let mut reader = std::mem::take(host);
        let (reader, figures) = tokio::task::spawn_blocking(move || {
            let figures = reader.sample(&paths);
            (reader, figures)
        })
        .await
        .unwrap_or_default();
        *host = reader;
        let report = self.reports.borrow().clone();
        let restarts: HashMap<&str, u32> =
            report.containers.iter().map(|c| (c.name.as_str(), c.restarts)).collect();
        let mut containers = Vec::new();
        let mut databases = Vec::new();
        let sources = self.docker.metric_sources().await.unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for source in &sources {
            // A stopped container counts only while it is assigned (crashed, waiting for its
            // restart): then its restarts still show.
            let restarts = restarts.get(source.name.as_str()).copied();
            if !source.running && (source.role.is_some() || restarts.is_none()) {
                continue;
            }
            if let Some(role) = &source.role {
                let figures =
                    report.databases.iter().find(|d| d.name == source.name).and_then(|d| d.db.clone());
                if let Some(f) = figures {
                    databases.push(DatabaseFigures {
                        app: source.app.clone(),
                        env: source.env.clone(),
                        role: role.clone(),
                        connections: f.connections,
                        max_connections: f.max_connections,
                        size_bytes: f.size_bytes,
                        lag_bytes: f.lag_bytes,
                        archive_backlog: f.archive_backlog,
                    });
                }
                continue;
            }
            let usage = match source.running {
                true => cgroup::usage(&self.docker, &source.id).await,
                false => None,
            };
            if source.running && usage.is_none() {
                continue;
            }
            let now = Instant::now();
            let cpu_percent = usage.and_then(|usage| {
                seen.insert(source.id.clone());
                let before = cpu.insert(source.id.clone(), (usage.cpu_ns, now));
                before.and_then(|(ns, at)| {
                    let wall = now.duration_since(at).as_nanos() as f64;
                    (wall > 0.0).then(|| 100.0 * usage.cpu_ns.saturating_sub(ns) as f64 / wall)
                })
            });
            containers.push(ContainerFigures {
                app: source.app.clone(),
                env: source.env.clone(),
                process: source.process.clone(),
                replica: source.replica,
                cpu_percent,
                memory_bytes: usage.map(|u| u.memory_bytes),
                memory_limit_bytes: usage.and_then(|u| u.memory_limit_bytes),
                restarts: restarts.unwrap_or(0),
            });
        }
        cpu.retain(|id, _| seen.contains(id));
        let traffic = self.ingress.as_ref().map(IngressHandle::take_traffic).unwrap_or_default();
        NodeSample { interval_secs: interval, host: figures, containers, traffic, databases }
    }
}

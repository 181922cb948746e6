//! What metrics need from Docker: this node's running app and database containers with their
//! labels, Docker's data directory, and a container's usage through Docker's one-shot stats
//! (where its cgroup files cannot be read directly).

use super::{DockerClient, LABEL_JOB};
use crate::metrics::Usage;
use bollard::container::{MemoryStatsStats, StatsOptions};
use futures_util::StreamExt;
use protocol::labels;

/// A running container metrics are sampled from.
#[derive(Debug, Clone)]
pub struct MetricSource {
    pub id: String,
    pub name: String,
    pub app: String,
    pub env: String,
    /// `web`, `worker`... for an app process; `release` or `run` for a job.
    pub process: String,
    pub replica: u32,
    /// `primary` or `replica` for a database server.
    pub role: Option<String>,
    pub running: bool,
}

impl DockerClient {
    /// This node's app, job and database containers, running or not.
    pub async fn metric_sources(&self) -> anyhow::Result<Vec<MetricSource>> {
        let list = self.own_containers().await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let running = c.state.as_deref() == Some("running");
                let labels = c.labels.unwrap_or_default();
                let app = labels.get(labels::APP)?.clone();
                let role = labels.get(labels::ROLE).cloned();
                let job = labels.get(LABEL_JOB);
                // Static-file extraction containers are the platform's, not the app's.
                if job.is_some_and(|j| j == "extract")
                    || (role.is_none() && !labels.contains_key(labels::PROCESS) && job.is_none())
                {
                    return None;
                }
                Some(MetricSource {
                    id: c.id?,
                    name: c.names?.first()?.trim_start_matches('/').to_string(),
                    app,
                    env: labels.get(labels::ENV).cloned().unwrap_or_default(),
                    process: labels.get(labels::PROCESS).cloned().unwrap_or_else(|| "run".into()),
                    replica: labels.get(labels::REPLICA).and_then(|r| r.parse().ok()).unwrap_or(0),
                    role,
                    running,
                })
            })
            .collect())
    }

    /// Where Docker keeps its data (images, containers, volumes), to measure its file system.
    pub async fn root_dir(&self) -> Option<std::path::PathBuf> {
        self.docker.info().await.ok()?.docker_root_dir.map(Into::into)
    }

    /// Container `id`'s usage from Docker's one-shot stats.
    pub async fn usage(&self, id: &str) -> Option<Usage> {
        let opts = StatsOptions { stream: false, one_shot: true };
        let stats = self.docker.stats(id, Some(opts)).next().await?.ok()?;
        let memory = stats.memory_stats;
        let inactive = match memory.stats {
            Some(MemoryStatsStats::V1(v1)) => v1.total_inactive_file,
            Some(MemoryStatsStats::V2(v2)) => v2.inactive_file,
            None => 0,
        };
        Some(Usage {
            cpu_ns: stats.cpu_stats.cpu_usage.total_usage,
            memory_bytes: memory.usage?.saturating_sub(inactive),
            memory_limit_bytes: memory.limit.filter(|l| *l < 1 << 60),
        })
    }
}

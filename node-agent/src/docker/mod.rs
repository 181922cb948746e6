//! The agent's Docker boundary: `DockerClient` wraps bollard and is the only code in the agent
//! that speaks the Docker API. Every object it creates carries the paas labels, and every listing
//! is filtered by them. This file holds the client, the labels and the shared container settings;
//! the operations live by concern in `containers`, `images`, `transfer`, `databases`, `exec`,
//! `prune` and `stats`.

mod containers;
mod context;
mod databases;
pub mod exec;
mod images;
mod networks;
pub mod prune;
mod purge;
mod stats;
pub mod transfer;

use anyhow::Context;
use bollard::container::ListContainersOptions;
use bollard::models::{HostConfig, HostConfigLogConfig};
use bollard::Docker;
use protocol::labels;
use std::collections::HashMap;
use std::sync::Arc;

/// json-file caps: a chatty app can never fill the disk.
pub const LOG_MAX_SIZE: &str = "10m";
pub const LOG_MAX_FILE: &str = "3";

/// Memory limit of a PostgreSQL container (its shared memory included).
pub const DB_MEMORY: u64 = 2 << 30;

/// Agent-private labels: the process port, and how to retire the container.
pub const LABEL_PORT: &str = "paas.port";
pub const LABEL_DRAIN_MS: &str = "paas.drain_ms";
pub const LABEL_STOP_GRACE_MS: &str = "paas.stop_grace_ms";
/// Marks one-off job containers; the reconcile loop leaves them to the job runner.
pub const LABEL_JOB: &str = "paas.job";
/// Marks the job containers of joined runs, which nothing may keep once their run is over.
pub const LABEL_ATTACHED: &str = "paas.attached";

/// What the agent needs to know about one of its containers.
#[derive(Debug, Clone)]
pub struct Observed {
    pub name: String,
    pub state: String,
    pub labels: HashMap<String, String>,
    /// Host port published for the process port, on the node's private address.
    pub host_port: Option<u16>,
    /// Port the process listens on inside the container.
    pub port: Option<u16>,
    /// The container's address on its Docker network: health checks go there, past Docker's
    /// port proxy, which accepts connections even when the app does not listen.
    pub ip: Option<String>,
    /// The named volumes it mounts.
    pub volumes: Vec<String>,
}

impl Observed {
    /// Whether the container carries every one of the `expected` label values. The agent adopts
    /// a container of an assigned name only when it does: a container left by another app or
    /// release under that name is never taken over.
    pub fn labelled_as(&self, expected: &[(&str, String)]) -> bool {
        expected.iter().all(|(k, v)| self.labels.get(*k) == Some(v))
    }

    /// The sentence that says why an existing container of an assigned name is not adopted.
    pub fn foreign(&self) -> String {
        let label = |k: &str| self.labels.get(k).cloned().unwrap_or_else(|| "?".into());
        format!(
            "a container named {} already exists for {}/{} ({}); paas will not take it over: remove it to go on",
            self.name,
            label(labels::APP),
            label(labels::ENV),
            self.labels
                .get(labels::ROLE)
                .cloned()
                .unwrap_or_else(|| format!("{} v{}", label(labels::PROCESS), label(labels::RELEASE)))
        )
    }
}

/// A container whose output central logs collect, with the labels its lines carry.
#[derive(Debug, Clone)]
pub struct LogSource {
    pub id: String,
    pub name: String,
    pub running: bool,
    pub app: String,
    pub env: String,
    /// `web`, `worker`, ...; `release` or `run` for a job.
    pub process: String,
    pub release: u32,
    /// 0 for a job.
    pub replica: u32,
}

#[derive(Clone)]
pub struct DockerClient {
    docker: Docker,
    node: String,
    private_addr: String,
    /// Builds hold it shared, a prune exclusively: removing an image deletes its untagged parent
    /// layers, which a build running meanwhile may be about to reuse from its cache.
    builds: Arc<tokio::sync::RwLock<()>>,
    /// Fetches images this node lacks from the control plane (`transfer`).
    transfers: Option<Arc<transfer::Transfers>>,
    /// Counts only images under this node's own tag as here (`transfer`).
    scoped_images: bool,
}

impl DockerClient {
    /// Connects with local defaults and negotiates the API version, so engines as old as API
    /// 1.41 work.
    pub async fn connect(node: &str, private_addr: &str) -> anyhow::Result<Self> {
        let docker = Docker::connect_with_local_defaults()
            .context("connecting to the Docker engine")?
            .negotiate_version()
            .await
            .context("talking to the Docker engine; is it running and is its socket readable?")?;
        Ok(Self {
            docker,
            node: node.to_string(),
            private_addr: private_addr.to_string(),
            builds: Arc::default(),
            transfers: None,
            scoped_images: false,
        })
    }

    /// The labels every object of this node carries (images it builds for releases too, so a
    /// prune touches only what this node made), plus `extra`.
    pub fn node_labels(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        [(labels::MANAGED, "true"), (labels::NODE, self.node.as_str())]
            .iter()
            .chain(extra)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// This node's containers (every one the platform made here), running or not.
    async fn own_containers(&self) -> anyhow::Result<Vec<bollard::models::ContainerSummary>> {
        self.labelled(vec![format!("{}=true", labels::MANAGED), format!("{}={}", labels::NODE, self.node)])
            .await
    }

    /// Containers, running or not, carrying every one of `labels` (`key=value`).
    async fn labelled(&self, labels: Vec<String>) -> anyhow::Result<Vec<bollard::models::ContainerSummary>> {
        let filters = HashMap::from([("label".to_string(), labels)]);
        let opts = ListContainersOptions::<String> { all: true, filters, ..Default::default() };
        self.docker.list_containers(Some(opts)).await.context("listing containers")
    }
}

/// The only capabilities app containers keep (Docker's default set minus NET_RAW, MKNOD,
/// AUDIT_WRITE, SETFCAP, SETPCAP and SYS_CHROOT): enough for an image that starts as root to
/// bind a low port, chown its files and drop to its own user; not enough to forge packets,
/// make device nodes or hand capabilities on.
pub const CAP_ALLOW: &[&str] =
    &["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "NET_BIND_SERVICE"];

/// [`base_host_config`] with the process's memory (no swap on top), CPU and PID limits.
fn limited_host_config(limits: &protocol::manifest::Limits) -> HostConfig {
    let memory = i64::try_from(limits.memory_bytes).unwrap_or(i64::MAX);
    HostConfig {
        memory: Some(memory),
        memory_swap: Some(memory),
        nano_cpus: Some(i64::from(limits.millicpus) * 1_000_000),
        pids_limit: Some(i64::from(limits.pids)),
        ..base_host_config()
    }
}

/// What every paas container gets: capped json-file logs, no privilege escalation, every
/// capability dropped but [`CAP_ALLOW`], and a tiny init as PID 1 that forwards SIGTERM and
/// reaps zombies for apps that do not.
fn base_host_config() -> HostConfig {
    HostConfig {
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([
                ("max-size".to_string(), LOG_MAX_SIZE.to_string()),
                ("max-file".to_string(), LOG_MAX_FILE.to_string()),
            ])),
        }),
        security_opt: Some(vec!["no-new-privileges".into()]),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(CAP_ALLOW.iter().map(|c| c.to_string()).collect()),
        init: Some(true),
        ..Default::default()
    }
}

/// What the agent needs of a listed container. The process port comes from the `paas.port`
/// label, else `default_port` (databases listen on 5432).
fn observe(c: bollard::models::ContainerSummary, default_port: Option<u16>) -> Option<Observed> {
    let name = c.names?.first()?.trim_start_matches('/').to_string();
    let labels = c.labels.unwrap_or_default();
    let port = labels.get(LABEL_PORT).and_then(|p| p.parse().ok()).or(default_port);
    let host_port = c
        .ports
        .unwrap_or_default()
        .iter()
        .find(|p| Some(p.private_port) == port && p.public_port.is_some())
        .and_then(|p| p.public_port);
    let ip = c
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|nets| nets.into_values().find_map(|e| e.ip_address.filter(|ip| !ip.is_empty())));
    let volumes = c.mounts.unwrap_or_default().into_iter().filter_map(|m| m.name).collect();
    Some(Observed { name, state: c.state.unwrap_or_default(), labels, host_port, port, ip, volumes })
}

/// The engine's own message for an API error, without bollard's wrapping.
pub fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

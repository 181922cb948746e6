//! Shared state of the control plane's handlers and tasks: cheap clones only.

use crate::secrets::SecretBox;
use crate::store::Store;
use crate::Config;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    /// Seals config vars at rest.
    pub secrets: Arc<SecretBox>,
    pub backup_storage: crate::backups::BackupStorage,
    /// Serialises config changes (read, modify, seal, write) so none is lost.
    pub config_lock: Arc<tokio::sync::Mutex<()>>,
    api_url: Arc<std::sync::OnceLock<String>>,
    /// State index: bumped on every change of desired or observed state. Agents long-poll on it.
    index: Arc<watch::Sender<u64>>,
    /// Bumped whenever deploy events are appended; deploy followers long-poll on it.
    events: Arc<watch::Sender<u64>>,
    /// Per node, the highest state index it has applied (it asks to watch past it only after
    /// applying it). A deploy is reported live once every ingress node applied the switch.
    applied: Arc<watch::Sender<HashMap<String, u64>>>,
    /// Per node, when (agent clock, unix ms) its latest report looked at Docker.
    observed: Arc<watch::Sender<HashMap<String, u64>>>,
    /// Database containers as their agents last reported them, by container name.
    db_status: Arc<std::sync::Mutex<HashMap<String, (String, protocol::agent::ContainerStatus)>>>,
    /// Per ingress node, the static directories it has extracted.
    static_ready: Arc<watch::Sender<HashMap<String, Vec<String>>>>,
}

impl AppState {
    pub fn new(
        store: Store,
        config: Arc<Config>,
        secrets: SecretBox,
        backup_storage: crate::backups::BackupStorage,
    ) -> Self {
        // Start above any index a previous run handed out, so agents that kept an old index do
        // not block on a value this run has not reached yet.
        let start = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(1);
        Self {
            store,
            config,
            secrets: Arc::new(secrets),
            backup_storage,
            config_lock: Arc::default(),
            api_url: Arc::default(),
            index: Arc::new(watch::channel(start).0),
            events: Arc::new(watch::channel(0).0),
            applied: Arc::new(watch::channel(HashMap::new()).0),
            observed: Arc::new(watch::channel(HashMap::new()).0),
            static_ready: Arc::new(watch::channel(HashMap::new()).0),
            db_status: Arc::default(),
        }
    }

    /// An environment's config snapshot for a new release: the sealed vars and their names.
    pub fn config_snapshot(&self, env: &crate::store::EnvRow) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
        let vars = self.secrets.open_map(&env.config)?;
        Ok((env.config.clone(), vars.into_keys().collect()))
    }

    /// The control plane's own API URL (set once it listens), for hooks that call back.
    pub fn api_url(&self) -> String {
        self.api_url.get().cloned().unwrap_or_default()
    }

    pub fn set_api_url(&self, url: String) {
        let _ = self.api_url.set(url);
    }

    pub fn sources_dir(&self) -> PathBuf {
        self.config.data_dir.join("sources")
    }

    pub fn index(&self) -> u64 {
        *self.index.borrow()
    }

    /// Wakes every watcher: something in the desired or observed state changed.
    pub fn bump(&self) {
        self.index.send_modify(|i| *i += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }

    pub fn events_changed(&self) {
        self.events.send_modify(|i| *i += 1);
    }

    pub fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// Waits until the state index passes `index`, or `wait` elapses.
    pub async fn wait_past(&self, index: u64, wait: Duration) {
        let mut rx = self.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|v| *v > index)).await;
    }

    pub fn node_observed(&self, node: &str, at_ms: u64) {
        self.observed.send_if_modified(|m| {
            let entry = m.entry(node.to_string()).or_default();
            let newer = at_ms > *entry;
            *entry = (*entry).max(at_ms);
            newer
        });
    }

    /// Records a node's database servers; returns those whose published port is new.
    pub fn set_db_status(
        &self,
        node: &str,
        statuses: Vec<protocol::agent::ContainerStatus>,
    ) -> Vec<protocol::agent::ContainerStatus> {
        let mut m = self.db_status.lock().unwrap_or_else(|p| p.into_inner());
        let new_port = |s: &protocol::agent::ContainerStatus| {
            s.host_port.is_some() && m.get(&s.name).is_none_or(|(_, old)| old.host_port != s.host_port)
        };
        let changed: Vec<_> = statuses.iter().filter(|s| new_port(s)).cloned().collect();
        m.retain(|_, (n, _)| n != node);
        for s in statuses {
            m.insert(s.name.clone(), (node.to_string(), s));
        }
        changed
    }

    pub fn db_status(&self, name: &str) -> Option<protocol::agent::ContainerStatus> {
        self.db_status.lock().unwrap_or_else(|p| p.into_inner()).get(name).map(|(_, s)| s.clone())
    }

    pub fn node_static_ready(&self, node: &str, keys: Vec<String>) {
        self.static_ready.send_if_modified(|m| {
            let changed = m.get(node) != Some(&keys);
            m.insert(node.to_string(), keys);
            changed
        });
    }

    /// Waits until every node in `nodes` can serve the static files `key`; returns the ones
    /// that cannot after `wait`.
    pub async fn wait_static(&self, nodes: &[String], key: &str, wait: Duration) -> Vec<String> {
        let mut rx = self.static_ready.subscribe();
        let has = |m: &HashMap<String, Vec<String>>, n: &String| {
            m.get(n).is_some_and(|k| k.iter().any(|k| k == key))
        };
        let _ = tokio::time::timeout(wait, rx.wait_for(|m| nodes.iter().all(|n| has(m, n)))).await;
        let m = rx.borrow();
        nodes.iter().filter(|n| !has(&m, n)).cloned().collect()
    }

    /// Waits until every node in `nodes` reported an observation made at or after `at_ms`;
    /// returns the ones that did not within `wait`.
    pub async fn wait_observed(&self, nodes: &[String], at_ms: u64, wait: Duration) -> Vec<String> {
        let mut rx = self.observed.subscribe();
        let all = |m: &HashMap<String, u64>| nodes.iter().all(|n| m.get(n).is_some_and(|t| *t >= at_ms));
        let _ = tokio::time::timeout(wait, rx.wait_for(all)).await;
        let m = rx.borrow();
        nodes.iter().filter(|n| m.get(*n).is_none_or(|t| *t < at_ms)).cloned().collect()
    }

    /// Records that `node` applied the state at `index`.
    pub fn node_applied(&self, node: &str, index: u64) {
        self.applied.send_if_modified(|m| {
            let entry = m.entry(node.to_string()).or_default();
            let newer = index > *entry;
            *entry = (*entry).max(index);
            newer
        });
    }

    /// Waits until every node in `nodes` applied the state at `index`; returns the ones that
    /// did not within `wait`.
    pub async fn wait_applied(&self, nodes: &[String], index: u64, wait: Duration) -> Vec<String> {
        let mut rx = self.applied.subscribe();
        let all = |m: &HashMap<String, u64>| nodes.iter().all(|n| m.get(n).is_some_and(|i| *i >= index));
        let _ = tokio::time::timeout(wait, rx.wait_for(all)).await;
        let m = rx.borrow();
        nodes.iter().filter(|n| m.get(*n).is_none_or(|i| *i < index)).cloned().collect()
    }

    pub fn url_for(&self, app: &str, env: &str) -> String {
        let host = protocol::hostname(app, env, &self.config.base_domain);
        match self.config.ingress_http_port {
            80 => format!("http://{host}/"),
            port => format!("http://{host}:{port}/"),
        }
    }

    /// Appends deploy progress lines and wakes followers.
    pub async fn deploy_event(&self, app: &str, env: &str, version: u32, kind: &str, lines: &[String]) {
        if let Err(e) = self.store.append_events(app, env, version, kind, lines).await {
            tracing::error!(app, env, release = version, error = %e, "recording deploy progress failed");
        }
        self.events_changed();
    }
}

//! Shared state of the control plane's handlers and tasks: cheap clones only. Also the one
//! place background work is spawned, so shutdown can wait for it and the next start can tell
//! work in flight from work a crash abandoned.

use crate::secrets::SecretBox;
use crate::store::Store;
use crate::Config;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// Central logs, in their own database file.
    pub logs: crate::logs::LogStore,
    /// Nodes' samples as series, and the newest figures for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    pub config: Arc<Config>,
    /// Seals config vars at rest.
    pub secrets: Arc<SecretBox>,
    pub backup_storage: crate::backups::BackupStorage,
    /// Signs node certificates; its certificate is what agents trust.
    pub ca: Arc<crate::ca::Ca>,
    /// Signs the apps' HTTPS certificates where none was uploaded or obtained.
    pub ingress_ca: Arc<crate::edge::local_ca::LocalCa>,
    /// Obtains custom domains' certificates, when the platform has an ACME server.
    pub acme: Option<Arc<crate::edge::acme::Acme>>,
    /// Serialises config changes (read, modify, seal, write) so none is lost.
    pub config_lock: Arc<tokio::sync::Mutex<()>>,
    api_url: Arc<std::sync::OnceLock<String>>,
    /// The state index and whom its changes wake. Agents long-poll on it.
    wakes: Arc<crate::wakes::Wakes>,
    /// Bumped whenever deploy events are appended; deploy followers long-poll on it.
    events: Arc<watch::Sender<u64>>,
    /// Per node, the highest state index it has applied (it asks to watch past it only after
    /// applying it). A deploy is reported live once every ingress node applied the switch.
    pub applied: NodeMarks,
    /// Per node, when (agent clock, unix ms) its latest report looked at Docker.
    pub observed: NodeMarks,
    /// Database containers as their agents last reported them, by container name.
    db_status: Arc<std::sync::Mutex<HashMap<String, (String, protocol::agent::ContainerStatus)>>>,
    /// When each replica last reported WAL streaming in (the freshness a failover trusts when
    /// its primary's lag figure is missing).
    streamed_at: Arc<std::sync::Mutex<HashMap<String, std::time::Instant>>>,
    /// Database containers of a new database, with the state index of the first assignment
    /// that holds them: a report worked from an older assignment speaks of an earlier
    /// database of that name (one its agent may be stopping right now), so it is not heard.
    db_fresh: Arc<std::sync::Mutex<HashMap<String, u64>>>,
    /// Per node, the database volumes its agent last listed (kept ones of deleted databases too).
    db_volumes: Arc<watch::Sender<HashMap<String, Vec<String>>>>,
    /// Per ingress node, the static directories it has extracted.
    static_ready: Arc<watch::Sender<HashMap<String, Vec<String>>>>,
    /// Every background task (deploys, backup steps, the scheduler), drained on shutdown.
    tasks: TaskTracker,
    /// Cancelled when the control plane begins to shut down.
    shutdown: CancellationToken,
    /// Work this process is doing right now (`backup:<id>`, `verify:<id>`): what is in the store
    /// as running but not here was abandoned by a crash or a failed step.
    busy: Arc<Mutex<HashSet<String>>>,
    /// Per open database task, when its agent last said it is working on it.
    task_progress: Arc<Mutex<HashMap<String, Instant>>>,
    /// Nodes' disk use and prunes asked of them.
    pub upkeep: Arc<crate::upkeep::NodeUpkeep>,
    /// Recent failed sign-ins, to refuse guessing.
    pub signin_throttle: Arc<crate::access::signin::Throttle>,
    /// Given to this process's console only, so it may say whose address a sign-in comes from.
    pub console_key: Arc<String>,
    /// Runs the user joins, waiting for their other side.
    pub attach: crate::attach::Rendezvous,
    /// When each node was last heard from (`nodes`).
    pub liveness: Arc<crate::nodes::Liveness>,
    /// Release images kept for nodes that lack them (`images`).
    pub images: Arc<crate::images::ImageStore>,
    /// What the watching nodes' assignments share, and what each was last sent.
    pub watches: Arc<crate::assign_view::Watches>,
    /// Whether this control plane leads (`leader`); one on SQLite always does.
    leading: Arc<std::sync::atomic::AtomicBool>,
    /// It led and lost the lead (`leader`).
    deposed: Arc<std::sync::atomic::AtomicBool>,
}

/// Per node, a mark that only grows (a state index applied, an observation time), with waiters.
#[derive(Clone, Default)]
pub struct NodeMarks(Arc<watch::Sender<HashMap<String, u64>>>);

impl NodeMarks {
    /// `node`'s mark (0 before its first).
    pub fn get(&self, node: &str) -> u64 {
        self.0.borrow().get(node).copied().unwrap_or(0)
    }

    /// Raises `node`'s mark to `at`; waiters wake only when it grew.
    pub fn raise(&self, node: &str, at: u64) {
        self.0.send_if_modified(|m| {
            let entry = m.entry(node.to_string()).or_default();
            let newer = at > *entry;
            *entry = (*entry).max(at);
            newer
        });
    }

    /// Waits until the mark of every node in `nodes` reached `at`; returns the ones whose mark
    /// did not within `wait`.
    pub async fn wait_all(&self, nodes: &[String], at: u64, wait: Duration) -> Vec<String> {
        let mut rx = self.0.subscribe();
        let all = |m: &HashMap<String, u64>| nodes.iter().all(|n| m.get(n).is_some_and(|v| *v >= at));
        let _ = tokio::time::timeout(wait, rx.wait_for(all)).await;
        let m = rx.borrow();
        nodes.iter().filter(|n| m.get(*n).is_none_or(|v| *v < at)).cloned().collect()
    }
}

/// Marks a piece of work busy while it lives (dropped on success, error and panic alike).
pub struct Busy {
    key: String,
    set: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

impl AppState {
    pub fn new(
        store: Store,
        logs: crate::logs::LogStore,
        config: Arc<Config>,
        secrets: SecretBox,
        backup_storage: crate::backups::BackupStorage,
        ca: crate::ca::Ca,
        ingress_ca: crate::edge::local_ca::LocalCa,
    ) -> Self {
        // Start above any index a previous run handed out, so agents that kept an old index do
        // not block on a value this run has not reached yet.
        let images = Arc::new(crate::images::ImageStore::new(config.data_dir.join("images")));
        let store_shared = store.is_shared();
        let start = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(1);
        Self {
            store,
            logs,
            metrics: Arc::default(),
            config,
            secrets: Arc::new(secrets),
            backup_storage,
            ca: Arc::new(ca),
            ingress_ca: Arc::new(ingress_ca),
            acme: None,
            config_lock: Arc::default(),
            api_url: Arc::default(),
            wakes: Arc::new(crate::wakes::Wakes::new(start)),
            events: Arc::new(watch::channel(0).0),
            applied: NodeMarks::default(),
            observed: NodeMarks::default(),
            static_ready: Arc::new(watch::channel(HashMap::new()).0),
            db_status: Arc::default(),
            streamed_at: Arc::default(),
            db_fresh: Arc::default(),
            db_volumes: Arc::new(watch::channel(HashMap::new()).0),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            busy: Arc::default(),
            task_progress: Arc::default(),
            upkeep: Arc::default(),
            signin_throttle: Arc::default(),
            console_key: Arc::new(crate::tokens::generate()),
            attach: Default::default(),
            liveness: Arc::default(),
            images,
            watches: Arc::default(),
            leading: Arc::new((!store_shared).into()),
            deposed: Arc::default(),
        }
    }

    /// This state with another store (a leader's loops get one fenced to its term).
    pub fn with_store(&self, store: Store) -> Self {
        Self { store, ..self.clone() }
    }

    /// Whether this control plane leads: serves the API and runs the loops that run once.
    pub fn leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, std::sync::atomic::Ordering::Release);
    }

    /// This control plane led and lost the lead: it stops serving and exits with an error.
    pub fn depose(&self) {
        self.set_leading(false);
        self.deposed.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn deposed(&self) -> bool {
        self.deposed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A state on a fresh store in a temporary directory (returned, for removal) holding app
    /// `shop` with its production environment.
    #[cfg(test)]
    pub async fn for_tests() -> (Self, PathBuf) {
        let dir = std::env::temp_dir().join(format!("paas-state-{}", crate::tokens::generate()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let store = Store::open(&dir.join("state.db")).await.expect("a store");
        store.create_app("shop").await.expect("an app");
        let config = Config::for_tests(&dir, "example.test");
        let secrets = SecretBox::load_or_create(&dir).expect("a key");
        let storage = crate::backups::BackupStorage::new(dir.join("backups"), None);
        let ca = crate::ca::Ca::load_or_create(&dir, crate::ca::NODE_CERT_LIFETIME).expect("a CA");
        let logs = crate::logs::LogStore::open(&dir.join("logs")).await.expect("a log store");
        let local_ca = crate::edge::local_ca::LocalCa::load_or_create(&dir).expect("a local CA");
        (Self::new(store, logs, Arc::new(config), secrets, storage, ca, local_ca), dir)
    }

    /// Runs `work` in the background, tracked so shutdown waits for it (within a bound).
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(work)
    }

    /// Cancelled once shutdown begins; long-running tasks stop and record where they were.
    pub fn shutting_down(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Begins shutdown and waits up to `bound` for background tasks; returns how many were
    /// still running (what they were doing is in the store, and the next start ends it).
    pub async fn drain(&self, bound: Duration) -> usize {
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(bound, self.tasks.wait()).await;
        self.tasks.len()
    }

    /// Records a platform event. A failure is logged, not passed on: the event tells of work
    /// that happened either way.
    pub async fn record_event(&self, event: &crate::store::NewEvent<'_>) {
        if let Err(e) = self.store.record_event(event).await {
            tracing::error!(error = %e, kind = event.kind, "recording a platform event failed");
        }
        // Deploys and rollbacks go to the notification targets that asked for them, in the
        // background: a slow webhook must not hold up the deploy.
        if crate::notify::is_deploy(event.kind) {
            let note = crate::notify::deploy_note(event);
            let state = self.clone();
            self.spawn(async move { crate::notify::send(&state, &note).await });
        }
    }

    /// Marks `key` busy until the guard is dropped; `None` when it is busy already.
    pub fn busy(&self, key: String) -> Option<Busy> {
        let mut set = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(key.clone()).then(|| Busy { key, set: self.busy.clone() })
    }

    /// Marks `key` busy, waiting while someone else holds it (holders keep it for a store
    /// write or a check, or for a step that ends within its own timeouts).
    pub async fn busy_wait(&self, key: String) -> Busy {
        loop {
            if let Some(b) = self.busy(key.clone()) {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn is_busy(&self, key: &str) -> bool {
        self.busy.lock().unwrap_or_else(|p| p.into_inner()).contains(key)
    }

    /// An agent says it is working on database task `id`.
    pub fn task_progressed(&self, id: &str) {
        self.task_progress.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), Instant::now());
    }

    /// How long database task `id` has gone without a sign of progress: counted from the first
    /// time this process asks, so a restart gives every task a fresh allowance.
    pub fn task_silence(&self, id: &str) -> Duration {
        let mut m = self.task_progress.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(id.to_string()).or_insert_with(Instant::now).elapsed()
    }

    /// Pretends the agent of task `id` was last heard of `ago`.
    #[cfg(test)]
    pub fn backdate_task_progress(&self, id: &str, ago: Duration) {
        let when = Instant::now().checked_sub(ago).expect("the clock reaches back that far");
        self.task_progress.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), when);
    }

    /// Forgets progress of tasks that are no longer open.
    pub fn keep_task_progress(&self, open: &HashSet<&str>) {
        self.task_progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| open.contains(id.as_str()));
    }

    /// An environment's config snapshot for a new release: the sealed vars and their names.
    pub fn config_snapshot(&self, env: &crate::store::EnvRow) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
        let vars = self.secrets.open_map(&env.config)?;
        Ok((env.config.clone(), protocol::secrets::app_keys(&vars)))
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
        self.wakes.index()
    }

    /// Wakes every watcher: something every node may see changed.
    pub fn bump(&self) {
        self.wakes.bump()
    }

    /// Wakes the ingress nodes and whoever waits on the index, not the other nodes: what
    /// changed (a replica's observed state, a route) reaches route tables only, and a thousand
    /// worker nodes need not compute their unchanged assignments again for it.
    pub fn bump_routes(&self) {
        self.wakes.bump_routes()
    }

    /// Reports changed replicas of these environments: wakes the ingress nodes and whoever
    /// waits on one of them (`wait_env_past`).
    pub fn bump_envs(&self, envs: &[(String, String)]) {
        self.wakes.bump_nodes(&[], envs)
    }

    /// A change of what these nodes run (replicas placed on them or retired, a build for one of
    /// them) in these environments: wakes those nodes, the ingress nodes and whoever waits on
    /// the environments, not the hundreds of other nodes whose assignments it leaves alone.
    pub fn bump_nodes(&self, nodes: &[String], envs: &[(String, String)]) {
        self.wakes.bump_nodes(nodes, envs)
    }

    /// Waits until a change every node may see, or a report on a replica of `app`/`env`, comes
    /// after state index `index`, or `wait` runs out. A deploy waiting on its replicas is not
    /// woken by every other environment's health changes.
    pub async fn wait_env_past(&self, app: &str, env: &str, index: u64, wait: Duration) {
        self.wakes.wait_env_past(&(app.to_string(), env.to_string()), index, wait).await
    }

    /// Waits until the index passes `index` (`routes`: for an ingress node), or only for a
    /// change every node may see or one for `node` (`bump_nodes`), or `wait` runs out.
    pub async fn wait_past_for(&self, node: &str, index: u64, wait: Duration, routes: bool) {
        self.wakes.wait_node_past(node, index, wait, routes).await
    }

    /// The index of the last change that concerns a node other than an ingress node.
    pub fn last_for(&self, node: &str) -> u64 {
        self.wakes.last_for(node)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.wakes.subscribe()
    }

    pub fn events_changed(&self) {
        self.events.send_modify(|i| *i += 1);
    }

    pub fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// A new database's containers, already in the store: what is known of containers of those
    /// names belongs to an earlier database, forgotten now and in reports worked from an
    /// assignment older than the next index (every assignment served from then on is read
    /// from the store after this, so it holds them).
    pub fn new_database_servers(&self, names: &[String]) {
        let mut status = self.db_status.lock().unwrap_or_else(|p| p.into_inner());
        for name in names {
            status.remove(name);
        }
        self.changed_database_servers(names);
    }

    /// Database servers whose spec changed in the store: reports worked from an older
    /// assignment no longer count, and [`Self::db_reported_since_change`] says when one that
    /// holds the change arrived.
    pub fn changed_database_servers(&self, names: &[String]) {
        let mut fresh = self.db_fresh.lock().unwrap_or_else(|p| p.into_inner());
        let first = self.index() + 1;
        for name in names {
            fresh.insert(name.clone(), first);
        }
    }

    /// Whether server `name` reported from its changed spec since [`Self::changed_database_servers`].
    pub fn db_reported_since_change(&self, name: &str) -> bool {
        !self.db_fresh.lock().unwrap_or_else(|p| p.into_inner()).contains_key(name)
    }

    /// Records a node's database servers as a pass worked from the assignment of
    /// `assignment_index` reported them; returns those whose published port is new.
    pub fn set_db_status(
        &self,
        node: &str,
        mut statuses: Vec<protocol::agent::ContainerStatus>,
        assignment_index: u64,
    ) -> Vec<protocol::agent::ContainerStatus> {
        {
            let mut fresh = self.db_fresh.lock().unwrap_or_else(|p| p.into_inner());
            // 0: an agent of an earlier release, which does not say; heard as before.
            let current = |first: &u64| assignment_index == 0 || assignment_index >= *first;
            statuses.retain(|s| fresh.get(&s.name).is_none_or(current));
            for s in &statuses {
                fresh.remove(&s.name);
            }
        }
        let mut m = self.db_status.lock().unwrap_or_else(|p| p.into_inner());
        let new_port = |s: &protocol::agent::ContainerStatus| {
            s.host_port.is_some() && m.get(&s.name).is_none_or(|(_, old)| old.host_port != s.host_port)
        };
        let changed: Vec<_> = statuses.iter().filter(|s| new_port(s)).cloned().collect();
        {
            let mut streamed = self.streamed_at.lock().unwrap_or_else(|p| p.into_inner());
            for s in statuses.iter().filter(|s| s.db.as_ref().and_then(|f| f.streaming) == Some(true)) {
                streamed.insert(s.name.clone(), std::time::Instant::now());
            }
        }
        m.retain(|_, (n, _)| n != node);
        for s in statuses {
            m.insert(s.name.clone(), (node.to_string(), s));
        }
        changed
    }

    /// Forgets what a lost node last reported of its database servers: they may be gone, and a
    /// server of the same name may start elsewhere (a failover).
    pub fn forget_db_status(&self, node: &str) {
        self.db_status.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, (n, _)| n != node);
    }

    /// Whether replica `name` reported streaming within `within`.
    pub fn streamed_within(&self, name: &str, within: Duration) -> bool {
        let streamed = self.streamed_at.lock().unwrap_or_else(|p| p.into_inner());
        streamed.get(name).is_some_and(|at| at.elapsed() <= within)
    }

    pub fn db_status(&self, name: &str) -> Option<protocol::agent::ContainerStatus> {
        self.db_status.lock().unwrap_or_else(|p| p.into_inner()).get(name).map(|(_, s)| s.clone())
    }

    pub fn set_db_volumes(&self, node: &str, volumes: Vec<String>) {
        self.db_volumes.send_if_modified(|m| m.insert(node.to_string(), volumes.clone()) != Some(volumes));
    }

    /// The database volumes `node` holds, waiting up to `wait` for a node that has not listed
    /// them since this control plane started; `None` if it still has not.
    pub async fn db_volumes(&self, node: &str, wait: Duration) -> Option<Vec<String>> {
        let mut rx = self.db_volumes.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|m| m.contains_key(node))).await;
        let volumes = rx.borrow().get(node).cloned();
        volumes
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

    /// The URL an environment is served at (after any `envs swap`).
    pub fn url_for(&self, env: &crate::store::EnvRow) -> String {
        let host = env.hostname(&self.config.base_domain);
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

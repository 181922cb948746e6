//! The reconcile loop: the one task that owns this node's app containers. It compares the
//! assignment (desired) with what Docker runs (observed), creates, restarts with backoff and
//! retires containers (draining them first), runs their health checks, and publishes the node
//! report.

use crate::docker::transfer::Availability;
use crate::docker::{DockerClient, Observed, LABEL_DRAIN_MS, LABEL_STOP_GRACE_MS};
use crate::health;
use crate::ingress::IngressHandle;
use protocol::agent::{Assignment, ContainerSpec, ContainerStatus, NodeReport};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How often the loop looks at Docker even when nothing tells it to.
const TICK: Duration = Duration::from_secs(1);
/// While a freshly started container is not healthy yet, probe this often, so a deploy
/// switches as soon as the app answers rather than a whole interval later.
const FAST_PROBE: Duration = Duration::from_millis(100);
/// How long after a (re)start the fast probing applies.
const FAST_WINDOW: Duration = Duration::from_secs(60);
/// A retired container keeps running at least this long after it left the assignment, for
/// requests other ingress nodes routed to it just before their switch.
const MIN_DRAIN: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A container that ran healthy this long is no longer considered crash-looping.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);
/// What a report carries of an unhealthy container's output: its last lines, each cut short,
/// so reports stay small whatever the container prints.
const LOG_TAIL_LINES: usize = 20;
const LOG_TAIL_LINE_BYTES: usize = 1024;
/// Networks of environments this node no longer runs are looked for when the assigned networks
/// change, then this often while a retiring container still holds one, else now and then.
const NETWORK_RETRY: Duration = Duration::from_secs(5);
const NETWORK_SWEEP: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Tracked {
    restarts: u32,
    backoff_level: u32,
    retry_at: Option<Instant>,
    started_at: Option<Instant>,
    healthy: bool,
    passes: u32,
    failures: u32,
    healthy_since: Option<Instant>,
    next_probe: Option<Instant>,
    last_failure: Option<String>,
    log_tail: Vec<String>,
    tail_fetched: Option<Instant>,
    /// The exit code of the container's last stop (a crash), reported so users see it.
    exit_code: Option<i64>,
    /// Whether the current stop's exit code was read (once per stop).
    exit_read: bool,
    /// Its image is on its way from the control plane.
    fetching: bool,
}

pub struct Reconciler {
    docker: DockerClient,
    /// This node's ingress, to see when a retiring replica has no requests left.
    ingress: Option<IngressHandle>,
    private_addr: String,
    assignment: watch::Receiver<Option<Assignment>>,
    /// The state index of `assignment` (at least), for reports to say what they worked from.
    assignment_index: Arc<AtomicU64>,
    reports: watch::Sender<NodeReport>,
    tracked: HashMap<String, Tracked>,
    retiring_since: HashMap<String, Instant>,
    removing: HashSet<String>,
    removed_tx: mpsc::UnboundedSender<String>,
    removed_rx: mpsc::UnboundedReceiver<String>,
    dbs: crate::databases::Databases,
    /// The networks the assignment used at the last sweep, and when the next one is due.
    networks: HashSet<String>,
    sweep_at: Instant,
    /// Told when a container starts, and asked before one is removed (central logs).
    logs: crate::logs::LogHandle,
    /// The assignment generation this node last worked from.
    generation: Generation,
}

/// The assignment generation this node last worked from, kept in the state directory. A newer
/// one means the control plane declared the node lost meanwhile and placed its replicas
/// elsewhere: no ingress routes to what it still runs, so its unassigned containers stop at
/// once instead of draining. Without a file (a first start) nothing counts as fenced.
#[derive(Default)]
struct Generation {
    path: Option<std::path::PathBuf>,
    seen: u64,
}

impl Generation {
    fn load(path: std::path::PathBuf) -> Self {
        let seen = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        Self { path: Some(path), seen }
    }

    /// Takes the assignment's generation; returns whether it fences what this node ran before.
    fn advance(&mut self, generation: u64) -> bool {
        if generation <= self.seen {
            return false;
        }
        let fenced = self.seen > 0;
        if fenced {
            tracing::warn!(
                generation,
                "this node was declared lost while away; stopping what was placed elsewhere"
            );
        }
        self.seen = generation;
        if let Some(path) = &self.path {
            if let Err(e) = protocol::files::write_private(path, generation.to_string().as_bytes()) {
                tracing::warn!(error = %e, "could not keep the assignment generation");
            }
        }
        fenced
    }
}

impl Reconciler {
    pub fn new(
        docker: DockerClient,
        ingress: Option<IngressHandle>,
        private_addr: String,
        (assignment, assignment_index): (watch::Receiver<Option<Assignment>>, Arc<AtomicU64>),
        reports: watch::Sender<NodeReport>,
        build_network: Option<String>,
        paused: crate::dbtasks::Paused,
    ) -> Self {
        let (removed_tx, removed_rx) = mpsc::unbounded_channel();
        Self {
            dbs: crate::databases::Databases::new(docker.clone(), build_network, paused),
            docker,
            ingress,
            private_addr,
            assignment,
            assignment_index,
            reports,
            tracked: HashMap::new(),
            retiring_since: HashMap::new(),
            networks: HashSet::new(),
            sweep_at: Instant::now(),
            removing: HashSet::new(),
            removed_tx,
            removed_rx,
            logs: crate::logs::LogHandle::default(),
            generation: Generation::default(),
        }
    }

    /// Keeps the assignment generation in `path` across restarts (see [`Generation`]).
    pub fn with_generation_file(mut self, path: std::path::PathBuf) -> Self {
        self.generation = Generation::load(path);
        self
    }

    /// Shares when the control plane was last heard (the lease of database primaries).
    pub fn with_contact(mut self, contact: crate::databases::Contact) -> Self {
        self.dbs.contact = contact;
        self
    }

    /// Tells central logs about the containers it starts and removes.
    pub fn with_logs(mut self, logs: crate::logs::LogHandle) -> Self {
        self.logs = logs;
        self
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let fetched = self.docker.transfers_done();
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %format!("{e:#}"), "reconcile pass failed");
            }
            let tick = self.next_tick();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = self.assignment.changed() => if changed.is_err() { break },
                // A container waiting for its image is created as soon as it is here.
                _ = fetched.notified() => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    /// Sleep until the next probe is due (or the regular tick), and poll quickly while
    /// retiring containers wait for their last requests.
    fn next_tick(&self) -> Duration {
        let now = Instant::now();
        let mut tick = TICK;
        for t in self.tracked.values() {
            if let Some(at) = t.next_probe {
                tick = tick.min(at.saturating_duration_since(now));
            }
        }
        if !self.retiring_since.is_empty() {
            tick = tick.min(FAST_PROBE);
        }
        tick.max(Duration::from_millis(20))
    }

    async fn pass(&mut self) -> anyhow::Result<()> {
        while let Ok(name) = self.removed_rx.try_recv() {
            self.removing.remove(&name);
        }
        let observed_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut observed: HashMap<String, Observed> =
            self.docker.list().await?.into_iter().map(|o| (o.name.clone(), o)).collect();
        // Read before the assignment, which is then at least this new (see `sync`).
        let assignment_index = self.assignment_index.load(Ordering::Acquire);
        // Until the first assignment arrives, only observe: after a restart the agent adopts
        // what runs instead of removing or recreating it.
        let Some(desired) = self.assignment.borrow().clone() else {
            return Ok(());
        };
        let wanted: HashMap<&str, &ContainerSpec> =
            desired.containers.iter().map(|c| (c.name.as_str(), c)).collect();
        // A container of an assigned name whose labels say it is something else is left alone
        // (neither adopted, probed, nor removed) and reported.
        let mut foreign = HashMap::new();
        for spec in &desired.containers {
            self.logs.config(&spec.name, &spec.config);
        }
        for spec in &desired.containers {
            if let Some(o) = observed.get(&spec.name).filter(|o| !o.labelled_as(&expected_labels(spec))) {
                foreign.insert(spec.name.clone(), o.foreign());
                observed.remove(&spec.name);
            }
        }

        for spec in &desired.containers {
            match foreign.get(&spec.name) {
                Some(why) => {
                    let t = self.tracked.entry(spec.name.clone()).or_default();
                    if t.log_tail.first() != Some(why) {
                        tracing::warn!(app = %spec.app, env = %spec.env, release = spec.release, "{why}");
                    }
                    (t.healthy, t.log_tail) = (false, vec![why.clone()]);
                }
                None => self.converge(spec, observed.get(&spec.name)).await,
            }
        }
        let fenced = self.generation.advance(desired.generation);
        self.retire_unwanted(&observed, &wanted, fenced);
        self.check_health(&desired.containers, &observed).await;
        self.tracked.retain(|name, _| wanted.contains_key(name.as_str()));

        let containers = desired
            .containers
            .iter()
            .map(|spec| {
                let t = self.tracked.get(&spec.name);
                let o = observed.get(&spec.name);
                let state = match (o, foreign.contains_key(&spec.name)) {
                    (_, true) => "name conflict".to_string(),
                    (Some(o), false) => o.state.clone(),
                    (None, false) if t.is_some_and(|t| t.fetching) => "fetching image".to_string(),
                    (None, false) => "creating".to_string(),
                };
                ContainerStatus {
                    name: spec.name.clone(),
                    state,
                    healthy: t.is_some_and(|t| t.healthy),
                    host_port: o.and_then(|o| o.host_port),
                    restarts: t.map_or(0, |t| t.restarts),
                    log_tail: t.map(|t| t.log_tail.clone()).unwrap_or_default(),
                    db: None,
                    exit_code: t.and_then(|t| t.exit_code),
                }
            })
            .collect();
        let databases = self.dbs.pass(&desired.databases).await;
        let volumes = self.dbs.volumes().await;
        self.sweep_networks(&desired).await;

        let report = NodeReport {
            containers,
            observed_at_ms,
            assignment_index,
            databases,
            volumes,
            generation: desired.generation,
            ..Default::default()
        };
        // Only a change wakes the reporter at once; the fresh observation time goes out with
        // the next heartbeat.
        self.reports.send_if_modified(|r| {
            let changed = r.containers != report.containers
                || r.databases != report.databases
                || r.volumes != report.volumes;
            *r = report;
            changed
        });
        Ok(())
    }

    /// Removes the networks of environments this node no longer runs (deleted, or moved away).
    async fn sweep_networks(&mut self, desired: &Assignment) {
        let wanted = networks_of(desired);
        let now = Instant::now();
        if wanted == self.networks && now < self.sweep_at {
            return;
        }
        self.networks = wanted;
        // And what the latest assignment uses: the job runner may be acting on it already.
        let latest = self.assignment.borrow().as_ref().map(networks_of).unwrap_or_default();
        let left =
            self.docker.remove_unwanted_networks(|n| self.networks.contains(n) || latest.contains(n)).await;
        self.sweep_at = now
            + match left {
                Ok(0) => NETWORK_SWEEP,
                Ok(_) => NETWORK_RETRY,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "looking for networks to remove failed");
                    NETWORK_RETRY
                }
            };
    }

    /// Makes one assigned container exist and run, restarting it with exponential backoff.
    async fn converge(&mut self, spec: &ContainerSpec, observed: Option<&Observed>) {
        let now = Instant::now();
        let t = self.tracked.entry(spec.name.clone()).or_default();
        if observed.is_some_and(|o| o.state == "running") {
            return;
        }
        t.healthy = false;
        t.passes = 0;
        t.healthy_since = None;
        if let Some(o) = observed.filter(|o| matches!(o.state.as_str(), "exited" | "dead") && !t.exit_read) {
            // Read once per stop, while it waits for its restart: the crash event shows it.
            t.exit_code = self.docker.exit_code(&o.name).await.ok();
            t.exit_read = true;
        }
        if t.retry_at.is_some_and(|at| now < at) {
            return;
        }
        let span = tracing::info_span!("container", app = %spec.app, env = %spec.env, release = spec.release, container = %spec.name);
        if observed.is_none() {
            // An image this node lacks comes from the control plane first; the container
            // waits (without backing off) until it is here.
            t.fetching = false;
            match self.docker.availability(&spec.image).await {
                Availability::Here(_) => {}
                Availability::Fetching => {
                    t.fetching = true;
                    t.log_tail = vec![format!(
                        "[paas] fetching image {} from the control plane",
                        crate::docker::transfer::short(&spec.image)
                    )];
                    return;
                }
                Availability::Failed(e) => {
                    span.in_scope(
                        || tracing::warn!(error = %e, "the container's image could not be fetched"),
                    );
                    t.log_tail = vec![crate::lines::cut(format!("[paas] {e}"), LOG_TAIL_LINE_BYTES)];
                    return;
                }
            }
        }
        let result = match observed {
            None => {
                span.in_scope(|| tracing::info!("creating container"));
                self.docker.create_and_start(spec).instrument(span.clone()).await
            }
            Some(o) => {
                t.restarts += 1;
                span.in_scope(|| tracing::warn!(state = %o.state, restarts = t.restarts, "container is not running; restarting it"));
                // The network may have been removed since the container was created.
                let network = if spec.network.is_empty() {
                    Ok(())
                } else {
                    self.docker.ensure_network(&spec.network, &spec.app, &spec.env, &spec.subnet).await
                };
                match network {
                    Ok(()) => self.docker.start(&spec.name).instrument(span.clone()).await,
                    Err(e) => Err(e),
                }
            }
        };
        // Back off on every (re)start, so a crash-looping app costs little; the delay resets
        // once the container has been healthy for a while.
        let delay = Duration::from_secs(1u64 << t.backoff_level.min(6)).min(MAX_BACKOFF);
        t.backoff_level += 1;
        t.retry_at = Some(now + delay);
        t.started_at = Some(now);
        t.next_probe = Some(now + Duration::from_millis(spec.healthcheck.start_period_ms).max(FAST_PROBE));
        if result.is_ok() {
            self.logs.started();
            t.exit_read = false;
        }
        if let Err(e) = result {
            let msg = format!("{e:#}");
            span.in_scope(|| tracing::warn!(error = %msg, "starting container failed"));
            t.log_tail = vec![crate::lines::cut(msg, LOG_TAIL_LINE_BYTES)];
        }
    }

    /// Retires containers that left the assignment: once the ingress has no request left on
    /// them (or their drain timeout ran out), SIGTERM, stop grace, removal.
    fn retire_unwanted(
        &mut self,
        observed: &HashMap<String, Observed>,
        wanted: &HashMap<&str, &ContainerSpec>,
        fenced: bool,
    ) {
        let now = Instant::now();
        self.retiring_since
            .retain(|name, _| observed.contains_key(name) && !wanted.contains_key(name.as_str()));
        for (name, o) in observed {
            if wanted.contains_key(name.as_str()) || self.removing.contains(name) {
                continue;
            }
            let since = *self.retiring_since.entry(name.clone()).or_insert(now);
            let waited = now.duration_since(since);
            let label_ms = |key: &str, default: u64| {
                Duration::from_millis(o.labels.get(key).and_then(|v| v.parse().ok()).unwrap_or(default))
            };
            let drain = label_ms(LABEL_DRAIN_MS, 30_000);
            let busy = match (&self.ingress, o.host_port) {
                (Some(ingress), Some(port)) => ingress.in_flight(&format!("{}:{port}", self.private_addr)),
                // Without a local ingress the requests other nodes send cannot be seen: wait
                // the whole drain timeout.
                _ => usize::MAX,
            };
            let running = o.state == "running";
            if running && !fenced && waited < drain && (waited < MIN_DRAIN || busy > 0) {
                continue;
            }
            self.removing.insert(name.clone());
            self.retiring_since.remove(name);
            let grace = label_ms(LABEL_STOP_GRACE_MS, 10_000).as_secs().max(1) as i64;
            let (docker, name, done) = (self.docker.clone(), name.clone(), self.removed_tx.clone());
            let logs = self.logs.clone();
            // Stopping waits for the container to exit; do it aside so the loop keeps going.
            tokio::spawn(async move {
                tracing::info!(container = %name, drained_ms = waited.as_millis() as u64, "stopping retired container");
                docker.stop(&name, grace).await;
                // Its last lines are read before they go with it.
                logs.drained(&name).await;
                if let Err(e) = docker.remove(&name).await {
                    tracing::warn!(container = %name, error = %format!("{e:#}"), "removing container failed");
                }
                let _ = done.send(name);
            });
        }
    }

    /// Runs the probes that are due, concurrently, and applies the thresholds.
    async fn check_health(&mut self, specs: &[ContainerSpec], observed: &HashMap<String, Observed>) {
        let now = Instant::now();
        let mut due = Vec::new();
        for spec in specs {
            let t = self.tracked.entry(spec.name.clone()).or_default();
            let target = observed
                .get(&spec.name)
                .filter(|o| o.state == "running")
                .and_then(|o| o.ip.clone())
                .map(|ip| format!("{ip}:{}", spec.port));
            match target {
                Some(addr) if t.next_probe.is_none_or(|at| now >= at) => due.push((spec, addr)),
                Some(_) => {}
                None => {
                    t.healthy = false;
                    t.passes = 0;
                }
            }
        }
        let docker = &self.docker;
        let results = futures_util::future::join_all(due.into_iter().map(|(spec, addr)| async move {
            (spec, health::probe(docker, &spec.name, &addr, &spec.healthcheck).await)
        }))
        .await;
        let now = Instant::now();
        for (spec, result) in results {
            let check = &spec.healthcheck;
            let t = self.tracked.entry(spec.name.clone()).or_default();
            match result {
                Ok(()) => {
                    t.passes += 1;
                    t.failures = 0;
                    t.last_failure = None;
                    if !t.healthy && t.passes >= check.healthy_threshold {
                        tracing::info!(container = %spec.name, "container is healthy");
                        t.healthy = true;
                        // After a crash the tail says why it crashed: a report that comes only
                        // once the restarted container is healthy again still carries it (a
                        // deploy's stability window fails on the restart and quotes it).
                        if t.restarts == 0 {
                            t.log_tail.clear();
                        }
                    }
                    if t.healthy {
                        let since = *t.healthy_since.get_or_insert(now);
                        if now.duration_since(since) >= BACKOFF_RESET_AFTER {
                            t.backoff_level = 0;
                        }
                    }
                }
                Err(why) => {
                    t.failures += 1;
                    t.passes = 0;
                    if t.healthy && t.failures >= check.unhealthy_threshold {
                        tracing::warn!(container = %spec.name, reason = %why, "container is unhealthy; out of rotation");
                        t.healthy = false;
                        t.healthy_since = None;
                    }
                    t.last_failure = Some(why);
                }
            }
            let starting = !t.healthy && t.started_at.is_some_and(|at| now.duration_since(at) < FAST_WINDOW);
            let interval = Duration::from_millis(check.interval_ms);
            t.next_probe = Some(now + if starting { FAST_PROBE.min(interval) } else { interval });
        }
        // Keep the last log lines of unhealthy containers, so a failed deploy can say why.
        for spec in specs {
            let Some(t) = self.tracked.get_mut(&spec.name) else { continue };
            let stale = t.tail_fetched.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(2));
            if t.healthy || !stale || !observed.contains_key(&spec.name) {
                continue;
            }
            t.tail_fetched = Some(now);
            let mut tail = self.docker.log_tail(&spec.name, LOG_TAIL_LINES).await;
            if let Some(why) = &t.last_failure {
                tail.push(format!("[paas] health check: {why}"));
            }
            // Masked before cut, so a cut never leaves part of a secret unmasked.
            let keep = tail.len().saturating_sub(LOG_TAIL_LINES + 1);
            let secrets = protocol::secrets::secret_texts(&spec.config);
            t.log_tail = tail[keep..]
                .iter()
                .map(|line| {
                    crate::lines::cut(
                        protocol::secrets::mask_texts(line, &secrets).into_owned(),
                        LOG_TAIL_LINE_BYTES,
                    )
                })
                .collect();
        }
    }
}

/// The Docker networks an assignment's containers, jobs and databases are on.
fn networks_of(a: &Assignment) -> HashSet<String> {
    let containers = a.containers.iter().map(|c| &c.network);
    let jobs = a.jobs.iter().map(|j| &j.network);
    let databases = a.databases.iter().chain(a.db_tasks.iter().map(|t| &t.server)).map(|d| &d.network);
    containers.chain(jobs).chain(databases).filter(|n| !n.is_empty()).cloned().collect()
}

/// The labels an app container made for `spec` carries.
fn expected_labels(spec: &ContainerSpec) -> [(&'static str, String); 5] {
    use protocol::labels::{APP, ENV, PROCESS, RELEASE, REPLICA};
    [
        (APP, spec.app.clone()),
        (ENV, spec.env.clone()),
        (PROCESS, spec.process.clone()),
        (RELEASE, spec.release.to_string()),
        (REPLICA, spec.replica.to_string()),
    ]
}

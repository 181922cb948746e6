//! The reconcile loop: the one task that owns this node's app containers. It compares the
//! assignment (desired) with what Docker runs (observed), creates, restarts with backoff and
//! removes containers, health-checks them, and publishes the node report.

use crate::docker::{DockerClient, Observed};
use protocol::agent::{Assignment, ContainerSpec, ContainerStatus, NodeReport};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How often the loop looks at Docker even when nothing tells it to.
const TICK: Duration = Duration::from_secs(1);
/// While a freshly started container is not healthy yet, look this often, so a deploy switches
/// as soon as the app listens rather than up to a whole tick later.
const FAST_TICK: Duration = Duration::from_millis(100);
/// How long after a (re)start the fast tick applies.
const FAST_WINDOW: Duration = Duration::from_secs(30);
/// Unassigned containers keep running this long after the route switch, so requests the
/// ingress already sent them can finish.
const DRAIN: Duration = Duration::from_secs(3);
/// SIGTERM grace before Docker kills a container being removed.
const STOP_GRACE_SECS: i64 = 10;
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A container that ran healthy this long is no longer considered crash-looping.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);
/// Consecutive failed checks before a healthy replica is declared unhealthy.
const UNHEALTHY_AFTER: u32 = 2;
const LOG_TAIL_LINES: usize = 20;

#[derive(Default)]
struct Tracked {
    restarts: u32,
    backoff_level: u32,
    retry_at: Option<Instant>,
    healthy: bool,
    failures: u32,
    healthy_since: Option<Instant>,
    log_tail: Vec<String>,
    tail_fetched: Option<Instant>,
    started_at: Option<Instant>,
}

pub struct Reconciler {
    docker: DockerClient,
    assignment: watch::Receiver<Option<Assignment>>,
    reports: watch::Sender<NodeReport>,
    tracked: HashMap<String, Tracked>,
    undesired_since: HashMap<String, Instant>,
    removing: HashSet<String>,
    removed_tx: tokio::sync::mpsc::UnboundedSender<String>,
    removed_rx: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Reconciler {
    pub fn new(
        docker: DockerClient,
        assignment: watch::Receiver<Option<Assignment>>,
        reports: watch::Sender<NodeReport>,
    ) -> Self {
        let (removed_tx, removed_rx) = tokio::sync::mpsc::unbounded_channel();
        Self {
            docker,
            assignment,
            reports,
            tracked: HashMap::new(),
            undesired_since: HashMap::new(),
            removing: HashSet::new(),
            removed_tx,
            removed_rx,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %format!("{e:#}"), "reconcile pass failed");
            }
            let tick = self.next_tick();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = self.assignment.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(tick) => {}
            }
        }
    }

    fn next_tick(&self) -> Duration {
        let now = Instant::now();
        let starting = self
            .tracked
            .values()
            .any(|t| !t.healthy && t.started_at.is_some_and(|at| now.duration_since(at) < FAST_WINDOW));
        if starting {
            FAST_TICK
        } else {
            TICK
        }
    }

    async fn pass(&mut self) -> anyhow::Result<()> {
        while let Ok(name) = self.removed_rx.try_recv() {
            self.removing.remove(&name);
        }
        let observed: HashMap<String, Observed> =
            self.docker.list().await?.into_iter().map(|o| (o.name.clone(), o)).collect();
        // Until the first assignment arrives, only observe: after a restart the agent adopts
        // what runs instead of removing or recreating it.
        let Some(desired) = self.assignment.borrow().clone() else {
            return Ok(());
        };
        let wanted: HashMap<&str, &ContainerSpec> =
            desired.containers.iter().map(|c| (c.name.as_str(), c)).collect();

        for spec in &desired.containers {
            self.converge(spec, observed.get(&spec.name)).await;
        }
        self.remove_unwanted(&observed, &wanted);
        self.check_health(&desired.containers, &observed).await;
        self.tracked.retain(|name, _| wanted.contains_key(name.as_str()));

        let report = NodeReport {
            containers: desired
                .containers
                .iter()
                .map(|spec| {
                    let t = self.tracked.get(&spec.name);
                    let o = observed.get(&spec.name);
                    ContainerStatus {
                        name: spec.name.clone(),
                        state: o.map(|o| o.state.clone()).unwrap_or_else(|| "creating".into()),
                        healthy: t.is_some_and(|t| t.healthy),
                        host_port: o.and_then(|o| o.host_port),
                        restarts: t.map_or(0, |t| t.restarts),
                        log_tail: t.map(|t| t.log_tail.clone()).unwrap_or_default(),
                    }
                })
                .collect(),
        };
        self.reports.send_if_modified(|r| {
            let changed = r.containers != report.containers;
            *r = report;
            changed
        });
        Ok(())
    }

    /// Makes one assigned container exist and run, restarting it with exponential backoff.
    async fn converge(&mut self, spec: &ContainerSpec, observed: Option<&Observed>) {
        let now = Instant::now();
        let t = self.tracked.entry(spec.name.clone()).or_default();
        if observed.is_some_and(|o| o.state == "running") {
            return;
        }
        if t.retry_at.is_some_and(|at| now < at) {
            return;
        }
        let span = tracing::info_span!("container", app = %spec.app, env = %spec.env, release = spec.release, container = %spec.name);
        let result = match observed {
            None => {
                span.in_scope(|| tracing::info!("creating container"));
                self.docker.create_and_start(spec).instrument(span.clone()).await
            }
            Some(o) => {
                t.restarts += 1;
                span.in_scope(|| tracing::warn!(state = %o.state, restarts = t.restarts, "container is not running; restarting it"));
                self.docker.start(&spec.name).instrument(span.clone()).await
            }
        };
        // Back off on every (re)start, so a crash-looping app costs little; the delay resets
        // once the container has been healthy for a while.
        let delay = Duration::from_secs(1u64 << t.backoff_level.min(6)).min(MAX_BACKOFF);
        t.backoff_level += 1;
        t.retry_at = Some(now + delay);
        t.healthy = false;
        t.healthy_since = None;
        t.started_at = Some(now);
        if let Err(e) = result {
            let msg = format!("{e:#}");
            span.in_scope(|| tracing::warn!(error = %msg, "starting container failed"));
            t.log_tail = vec![msg];
        }
    }

    fn remove_unwanted(
        &mut self,
        observed: &HashMap<String, Observed>,
        wanted: &HashMap<&str, &ContainerSpec>,
    ) {
        let now = Instant::now();
        self.undesired_since
            .retain(|name, _| observed.contains_key(name) && !wanted.contains_key(name.as_str()));
        for name in observed.keys() {
            if wanted.contains_key(name.as_str()) || self.removing.contains(name) {
                continue;
            }
            let since = *self.undesired_since.entry(name.clone()).or_insert(now);
            if now.duration_since(since) < DRAIN {
                continue;
            }
            self.removing.insert(name.clone());
            let (docker, name, done) = (self.docker.clone(), name.clone(), self.removed_tx.clone());
            // Stopping waits for the container to exit; do it aside so the loop keeps going.
            tokio::spawn(async move {
                tracing::info!(container = %name, "stopping and removing unassigned container");
                if let Err(e) = docker.stop_and_remove(&name, STOP_GRACE_SECS).await {
                    tracing::warn!(container = %name, error = %format!("{e:#}"), "removing container failed");
                }
                let _ = done.send(name);
            });
        }
    }

    async fn check_health(&mut self, specs: &[ContainerSpec], observed: &HashMap<String, Observed>) {
        let checks = specs.iter().map(|spec| {
            let target = observed
                .get(&spec.name)
                .filter(|o| o.state == "running")
                .and_then(|o| o.ip.clone())
                .map(|ip| format!("{ip}:{}", spec.port));
            async move {
                let ok = match target {
                    Some(addr) => {
                        matches!(
                            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(&addr)).await,
                            Ok(Ok(_))
                        )
                    }
                    None => false,
                };
                (spec.name.clone(), ok)
            }
        });
        let results = futures_util::future::join_all(checks).await;
        let now = Instant::now();
        for (name, ok) in results {
            let running = observed.get(&name).is_some_and(|o| o.state == "running");
            let t = self.tracked.entry(name.clone()).or_default();
            if ok {
                t.failures = 0;
                if !t.healthy {
                    tracing::info!(container = %name, "container is healthy");
                    t.log_tail.clear();
                }
                t.healthy = true;
                let since = *t.healthy_since.get_or_insert(now);
                if now.duration_since(since) >= BACKOFF_RESET_AFTER {
                    t.backoff_level = 0;
                }
            } else {
                t.failures += 1;
                if t.healthy && (!running || t.failures >= UNHEALTHY_AFTER) {
                    tracing::warn!(container = %name, "container is unhealthy");
                    t.healthy = false;
                    t.healthy_since = None;
                }
                let stale = t.tail_fetched.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(2));
                if !t.healthy && stale && observed.contains_key(&name) {
                    t.tail_fetched = Some(now);
                    t.log_tail = self.docker.log_tail(&name, LOG_TAIL_LINES).await;
                }
            }
        }
    }
}

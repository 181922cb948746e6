//! Nodes' life cycle: which nodes are alive (heard from recently, kept in memory), a node
//! suspected when silent for a quarter of the loss timeout (ingresses stop routing to it), lost
//! after the timeout (its generation raised, so what it still runs is fenced, and its replicas
//! placed on other nodes), drains that move replicas away blue/green, and nodes as users see
//! them.

use crate::assign;
use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::{NewEvent, NodeRow};
use protocol::agent::RegisterNode;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A node silent this long is lost, unless `--node-lost-after` says otherwise.
pub const DEFAULT_LOST_AFTER: Duration = Duration::from_secs(20);

/// How long a drain waits for replicas it cannot move yet (a deploy in flight) to go.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// When each node was last heard from, in this process's memory: a restarted control plane
/// counts every node's silence from its own start, and a standby from the moment it takes the
/// lead (agents talk to the leader only), so neither suspects anybody.
pub struct Liveness {
    boot: Mutex<Instant>,
    heard: Mutex<HashMap<String, Instant>>,
    /// When each node's `last_seen` was last written to the store.
    stored: Mutex<HashMap<String, Instant>>,
    /// Per node, a digest of its last report that counted and the state index after it.
    reports: Mutex<HashMap<String, (u64, u64)>>,
}

/// How often a node's `last_seen` is written to the store (readiness allows 30 s): each write
/// is a commit, and a thousand nodes each report every second.
const STORE_SEEN_EVERY: Duration = Duration::from_secs(10);

impl Default for Liveness {
    fn default() -> Self {
        Self {
            boot: Mutex::new(Instant::now()),
            heard: Mutex::default(),
            stored: Mutex::default(),
            reports: Mutex::default(),
        }
    }
}

impl Liveness {
    fn heard(&self, node: &str) {
        self.heard.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_string(), Instant::now());
    }

    /// Whether `node`'s `last_seen` is due to be written (and counts it as written).
    fn store_due(&self, node: &str) -> bool {
        let mut stored = self.stored.lock().unwrap_or_else(|p| p.into_inner());
        let due = stored.get(node).is_none_or(|at| at.elapsed() >= STORE_SEEN_EVERY);
        if due {
            stored.insert(node.to_string(), Instant::now());
        }
        due
    }

    /// Counts every node as heard now: the silence was this process's own (it was paused, or
    /// starved of CPU), not the nodes'.
    fn forgive_all(&self) {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        heard.values_mut().for_each(|t| *t = now);
    }

    /// How long `node` has been silent.
    pub fn silence(&self, node: &str) -> Duration {
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let boot = || *self.boot.lock().unwrap_or_else(|p| p.into_inner());
        heard.get(node).copied().unwrap_or_else(boot).elapsed()
    }

    /// Counts every node's silence from now and forgets what was heard: this control plane
    /// takes the lead, and the nodes talked to another one until now.
    pub fn start_leading(&self) {
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        *self.boot.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        heard.clear();
        self.reports.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// A node's status as the scheduler and the ingresses see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ready,
    Draining,
    Suspect,
    Lost,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Draining => "draining",
            Status::Suspect => "suspect",
            Status::Lost => "lost",
        }
    }
}

/// Silence after which a node is suspected: a quarter of the loss timeout, at least 2 s (agents
/// report every second).
pub fn suspect_after(state: &AppState) -> Duration {
    (state.config.node_lost_after / 4).max(Duration::from_secs(2))
}

pub fn status(state: &AppState, node: &NodeRow) -> Status {
    if node.state == "lost" {
        return Status::Lost;
    }
    if state.liveness.silence(&node.name) >= suspect_after(state) {
        return Status::Suspect;
    }
    if node.state == "draining" {
        Status::Draining
    } else {
        Status::Ready
    }
}

/// A node asked for its assignment or reported: its `last_seen` in the store is kept within
/// [`STORE_SEEN_EVERY`] (the first time in this process, a node not registered is refused).
pub async fn seen(state: &AppState, node: &str) -> Result<()> {
    if state.liveness.store_due(node) {
        if let Err(e) = state.store.touch_node(node).await {
            state.liveness.stored.lock().unwrap_or_else(|p| p.into_inner()).remove(node);
            return Err(e.into());
        }
    }
    Ok(())
}

/// A heartbeat: a report whose containers (digest `report`) are those of the node's last one
/// that counted, with no replica placed on it since (a placement may reset the observed
/// state of a replica of the same name) and the node not suspected. It is alive, and nothing needs reading: most of a thousand nodes'
/// reports each second are these. False when the report must be handled in full.
pub fn heard_again(state: &AppState, node: &str, report: u64) -> bool {
    let same = state.liveness.reports.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied()
        == Some((report, state.store.placements(node)));
    if same && state.liveness.silence(node) < suspect_after(state) {
        state.liveness.heard(node);
        return true;
    }
    false
}

/// A report (digest `report`) counted and is in the store, compared with it after
/// `placements` (read before the report was handled).
pub fn report_counted(state: &AppState, node: &str, report: u64, placements: u64) {
    let mut reports = state.liveness.reports.lock().unwrap_or_else(|p| p.into_inner());
    reports.insert(node.to_string(), (report, placements));
}

/// A node's report arrived: it is alive. A lost node that reports again is ready again (its
/// assignment no longer holds what was placed elsewhere). Returns whether the report's
/// containers count: only a report from the node's current generation, so a node that comes
/// back cannot put what it still runs back into service (agents before generations send 0).
pub async fn reported(state: &AppState, node: &str, generation: u64) -> Result<bool> {
    let was_suspect = state.liveness.silence(node) >= suspect_after(state);
    state.liveness.heard(node);
    let row = state.store.node(node).await?;
    if row.state == "lost" && state.store.node_returned(node).await? {
        tracing::warn!(node, "a lost node reports again; it stops what was placed elsewhere");
        state.bump();
    } else if was_suspect && !state.store.instances_for_node(node).await?.is_empty() {
        // Its replicas go back into the route table. (A node heard for the first time counts
        // as silent since this control plane started, but has none to put back.)
        tracing::info!(node, "a suspected node reports again");
        state.bump_routes();
    }
    Ok(generation == 0 || generation as i64 >= row.generation)
}

/// Every half second: suspects silent nodes (the route table leaves their replicas out) and
/// declares lost the ones silent for the loss timeout.
pub async fn watch(state: AppState) {
    let mut suspected: HashSet<String> = HashSet::new();
    let stop = state.shutting_down();
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        // A control plane that was itself paused (a suspended machine, SIGSTOP, a starved CPU)
        // heard nobody meanwhile: that declares no node lost.
        if last.elapsed() > Duration::from_secs(3) {
            tracing::warn!(
                paused_secs = last.elapsed().as_secs(),
                "the node watch did not run for a while; counting every node as heard now"
            );
            state.liveness.forgive_all();
        }
        last = Instant::now();
        if let Err(e) = check(&state, &mut suspected).await {
            tracing::warn!(error = %format!("{e:#}"), "checking the nodes failed");
        }
    }
}

async fn check(state: &AppState, suspected: &mut HashSet<String>) -> anyhow::Result<()> {
    let mut changed = false;
    for n in state.store.list_nodes().await? {
        let silence = state.liveness.silence(&n.name);
        let suspect = silence >= suspect_after(state) && n.state != "lost";
        if suspect && suspected.insert(n.name.clone()) {
            tracing::warn!(node = %n.name, silent_secs = silence.as_secs(), "node suspected: ingresses stop routing to it");
            changed = true;
        } else if !suspect && suspected.remove(&n.name) {
            changed = true;
        }
        if silence >= state.config.node_lost_after && n.state != "lost" {
            lose(state, &n.name, silence).await?;
            suspected.remove(&n.name);
        } else if n.state == "lost" {
            // A failover refused at the loss (the replica still streamed a moment ago, say)
            // is tried again while the node stays lost; tasks given to it meanwhile end at once.
            fail_db_tasks(state, &n.name).await?;
            if let Err(e) = crate::failover::primary_node_lost(state, &n.name).await {
                tracing::warn!(node = %n.name, error = %format!("{e:#}"), "failing databases over from the lost node failed");
            }
        }
    }
    // Suspicion changes the route table only: a thousand nodes need not compute their
    // assignments again because one of them is late.
    if changed {
        state.bump_routes();
    }
    Ok(())
}

/// Ends the open database tasks of a lost node, which would otherwise wait out the silence
/// timeout (a `paas db psql` against a primary whose node died, say).
async fn fail_db_tasks(state: &AppState, node: &str) -> anyhow::Result<()> {
    for t in state.store.open_db_tasks().await?.into_iter().filter(|t| t.node == node) {
        let why = format!("node {node} stopped reporting and was declared lost");
        let result = protocol::agent::DbTaskResult { error: Some(why), ..Default::default() };
        crate::backups::task_finished(state, &t, &result).await?;
    }
    Ok(())
}

/// Declares `node` lost and places its replicas on other nodes; a replica that fits nowhere
/// stays assigned to it (it may come back) and the environment's events say so.
async fn lose(state: &AppState, node: &str, silence: Duration) -> anyhow::Result<()> {
    let Some(generation) = state.store.lose_node(node).await? else { return Ok(()) };
    tracing::warn!(
        node,
        generation,
        silent_secs = silence.as_secs(),
        "node lost: placing its replicas on other nodes"
    );
    // A build there would otherwise hold its deploy until the build timeout.
    for r in state.store.pending_builds(node).await? {
        let why = format!(
            "the build node {node} stopped reporting for {} s and was declared lost; deploy again",
            silence.as_secs()
        );
        state.store.set_build_result(&r.app, &r.env, r.version, None, Some(&why)).await?;
    }
    state.bump();
    fail_db_tasks(state, node).await?;
    if let Err(e) = crate::failover::primary_node_lost(state, node).await {
        tracing::error!(node, error = %format!("{e:#}"), "failing databases over from the lost node failed");
    }
    for old in state.store.instances_for_node(node).await? {
        let env = state.store.get_env(&old.app, &old.env).await?;
        // Replicas of a release being retired simply go.
        if Some(old.release) != env.current_release && Some(old.release) != env.target_release {
            state.store.delete_instance(&old.name).await?;
            continue;
        }
        let what = format!("{}.{}", old.process, old.replica);
        let (kind, severity, message) = match assign::place_replacement(state, &env, &old).await {
            Ok(mut fresh) => {
                fresh.name = crate::restarts::replacement_name(&env, &old, 'm');
                if !state.store.replace_instance(&old.name, &fresh).await? {
                    continue;
                }
                let to = &fresh.node;
                ("replica.moved", "warning", format!("Replica {what} moved from lost node {node} to {to}"))
            }
            Err(e) => ("replica.unplaced", "error", format!("Replica {what} stays on lost node {node}: {e}")),
        };
        tracing::warn!(app = %old.app, env = %old.env, release = old.release, node, "{message}");
        let event = NewEvent::new(&old.app, &old.env, kind, &message).severity(severity).release(old.release);
        state.record_event(&event).await;
    }
    state.bump();
    Ok(())
}

/// `paas nodes drain`: nothing new goes to `node`, and each replica of a serving release there
/// is replaced on another node, healthy before the old one leaves the route table and drains.
/// Replicas of a deploy in flight are waited for (the deploy places its new ones elsewhere and
/// retires the old). Databases stay (they move with failover). Answers once the node is empty
/// of replicas.
pub async fn drain(state: &AppState, node: &str) -> Result<protocol::api::NodeDrain> {
    state.store.node(node).await?;
    if !assign::ready_nodes(state).await?.iter().any(|n| n.name != node) {
        return Err(DomainError::Conflict(format!(
            "{node} is the only ready node: its replicas would have nowhere to go; join another node first"
        )));
    }
    state.store.set_node_state(node, "draining").await?;
    state.bump();
    let Some(only) = state.busy(format!("drain:{node}")) else {
        return Err(DomainError::Conflict(format!("a drain of {node} is in progress; wait for it")));
    };
    let work = {
        let (state, node) = (state.clone(), node.to_string());
        state.clone().spawn(async move {
            let _only = only;
            move_away(&state, &node).await
        })
    };
    let moved = work
        .await
        .map_err(|e| DomainError::Internal(anyhow::anyhow!("the drain stopped: {e}")))?
        .map_err(|e| {
            DomainError::Conflict(format!(
                "the drain of {node} stopped: {e:#}; it stays draining (`paas nodes undrain {node}` lets it take replicas again)"
            ))
        })?;
    let databases = state
        .store
        .all_databases()
        .await?
        .into_iter()
        .filter(|d| d.node == node || (d.replicas > 0 && d.replica_node == node))
        .map(|d| format!("{}/{}", d.app, d.env))
        .collect();
    Ok(protocol::api::NodeDrain { node: node.to_string(), moved, databases })
}

/// `paas nodes undrain`: the node takes new replicas again.
pub async fn undrain(state: &AppState, node: &str) -> Result<()> {
    let was = state.store.set_node_state(node, "ready").await?;
    if was == "lost" {
        state.store.set_node_state(node, "lost").await?;
        return Err(DomainError::Conflict(format!("{node} is lost; it is ready again once it reports")));
    }
    state.bump();
    Ok(())
}

async fn move_away(state: &AppState, node: &str) -> anyhow::Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    let mut moved = Vec::new();
    let mut rx = state.subscribe();
    loop {
        let here = state.store.instances_for_node(node).await?;
        if here.is_empty() {
            return Ok(moved);
        }
        let mut progressed = false;
        for old in &here {
            let env = state.store.get_env(&old.app, &old.env).await?;
            // A deploy in flight replaces these itself; an old release's replica is retiring.
            if env.target_release.is_some() || env.current_release != Some(old.release) {
                continue;
            }
            let release = state.store.get_release(&old.app, &old.env, old.release).await?;
            if let Some(fresh) = crate::restarts::replace(
                state,
                &env,
                &release,
                old,
                crate::restarts::replacement_name(&env, old, 'm'),
            )
            .await?
            {
                tracing::info!(app = %old.app, env = %old.env, node, to = %fresh, "replica moved off a draining node");
                moved.push(fresh);
                progressed = true;
            }
        }
        if !progressed {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} replica(s) are still on {node} after {} s: {}",
                here.len(),
                DRAIN_TIMEOUT.as_secs(),
                here.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            );
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.changed()).await;
        }
    }
}

/// The nodes as users see them.
pub async fn views(state: &AppState) -> Result<Vec<protocol::api::Node>> {
    let allocations = state.store.allocations().await?;
    let nodes = state.store.list_nodes().await?;
    let view = |n: NodeRow| {
        let alloc = allocations.get(&n.name).copied().unwrap_or_default();
        protocol::api::Node {
            status: status(state, &n).as_str().to_string(),
            disk: state.upkeep.disk(&n.name),
            capacity: n.capacity(),
            allocated: alloc.reserved,
            replicas: alloc.replicas,
            last_report_secs: Some(state.liveness.silence(&n.name).as_secs_f64()),
            name: n.name,
            private_addr: n.private_addr,
            ingress: n.ingress,
            last_seen: n.last_seen,
        }
    };
    Ok(nodes.into_iter().map(view).collect())
}

/// Tells the agents about a node that joined or registered again (`before`: its row until
/// now), when that changes anything but its own assignment, which it fetches at once: its
/// address or roles changed, or the platform just grew to two nodes (images start to travel).
/// A new node that runs nothing yet changes no other node's assignment, so a thousand joins do
/// not each make a thousand watchers compute theirs again.
pub async fn registered(state: &AppState, before: Option<NodeRow>, node: &RegisterNode) -> Result<()> {
    // Registering is a sign of life: a node that joins long after this control plane started
    // is not silent since that start (the watch would declare it lost before its first report).
    state.liveness.heard(&node.name);
    let others_see = match before {
        None => node.ingress || state.store.list_nodes().await?.len() <= 2,
        Some(b) => b.private_addr != node.private_addr || b.ingress != node.ingress,
    };
    if others_see {
        state.bump();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::agent::Capacity;

    const MIB: u64 = 1 << 20;

    async fn node(state: &AppState, name: &str, addr: &str, memory_mib: u64) {
        state.store.register_node(name, addr, false, name).await.unwrap();
        let capacity = Capacity { millicpus: 2000, memory_bytes: memory_mib * MIB };
        state.store.set_node_capacity(name, capacity).await.unwrap();
    }

    async fn release(state: &AppState, reserve_mib: u64) -> u32 {
        let mut manifest = protocol::manifest::Manifest::default();
        manifest.processes.get_mut("web").unwrap().reserve.memory_bytes = reserve_mib * MIB;
        let new = crate::store::NewRelease {
            source: "build".into(),
            created_by: "test".into(),
            build_node: "a".into(),
            manifest,
            description: String::new(),
            image_id: None,
            config: Vec::new(),
            config_keys: Vec::new(),
            manifest_text: String::new(),
        };
        state.store.create_release("shop", "production", &new).await.unwrap().version
    }

    #[tokio::test]
    async fn replicas_spread_over_nodes_with_room_and_a_replica_that_fits_nowhere_names_the_shortfall() {
        let (state, dir) = AppState::for_tests().await;
        node(&state, "a", "10.0.0.1", 1024).await;
        node(&state, "b", "10.0.0.2", 1024).await;
        node(&state, "small", "10.0.0.3", 64).await;
        let env = state.store.get_env("shop", "production").await.unwrap();
        let v = release(&state, 100).await;
        let placed = assign::place(&state, &env, "web", v, 1..=4).await.unwrap();
        let on: Vec<&str> = placed.iter().map(|i| i.node.as_str()).collect();
        assert_eq!(on, ["a", "b", "a", "b"], "spread over the nodes with room, none on the small one");
        assert!(placed.iter().all(|i| i.reserve_memory_bytes == (100 * MIB) as i64));

        // A draining node takes nothing new.
        state.store.set_node_state("b", "draining").await.unwrap();
        let placed = assign::place(&state, &env, "web", v, 1..=2).await.unwrap();
        assert!(placed.iter().all(|i| i.node == "a"), "{placed:?}");

        let failed = protocol::api::ReleaseStatus::Failed;
        state.store.set_release_status("shop", "production", v, failed, Some("test")).await.unwrap();
        let v2 = release(&state, 2048).await;
        let why = assign::place(&state, &env, "web", v2, 1..=1).await.unwrap_err().to_string();
        assert!(
            why.contains("reserves 2.00 GiB of memory") && why.contains("the most is 1.00 GiB on a"),
            "{why}"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn the_only_ready_node_is_not_drained_and_an_unknown_one_is_not_found() {
        let (state, dir) = AppState::for_tests().await;
        node(&state, "a", "10.0.0.1", 1024).await;
        let why = drain(&state, "a").await.unwrap_err().to_string();
        assert!(why.contains("the only ready node"), "{why}");
        assert_eq!(state.store.node("a").await.unwrap().state, "ready", "refused before anything changed");
        assert!(matches!(drain(&state, "nope").await, Err(DomainError::NotFound(_))));
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn a_lost_node_gets_a_new_generation_and_is_ready_again_when_it_reports() {
        let (state, dir) = AppState::for_tests().await;
        node(&state, "a", "10.0.0.1", 1024).await;
        assert_eq!(state.store.lose_node("a").await.unwrap(), Some(2));
        assert_eq!(state.store.lose_node("a").await.unwrap(), None, "lost once");
        let row = state.store.node("a").await.unwrap();
        assert_eq!(status(&state, &row), Status::Lost);
        // A report from the generation before the loss does not count; the current one does.
        assert!(!reported(&state, "a", 1).await.unwrap());
        assert_eq!(status(&state, &state.store.node("a").await.unwrap()), Status::Ready);
        assert!(reported(&state, "a", 2).await.unwrap());
        std::fs::remove_dir_all(dir).ok();
    }
}

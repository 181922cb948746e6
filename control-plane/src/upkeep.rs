//! Node upkeep as the control plane sees it, in memory only: the disk use each agent last
//! reported, prunes asked of agents (`paas nodes prune`) and purges of deleted apps' objects
//! (`paas apps delete --purge`), with their outcomes. In memory because the one asking waits
//! for the answer: after a restart nobody is waiting, and what a purge left stays labelled.

use protocol::agent::{DiskUsage, PruneOutcome, Purge, PurgeOutcome};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

#[derive(Default)]
pub struct NodeUpkeep {
    disk: Mutex<HashMap<String, DiskUsage>>,
    /// Per node, the latest prune asked for (sent in its assignment).
    requests: Mutex<HashMap<String, u64>>,
    /// Per node, the outcome of the latest prune it reported.
    outcomes: watch::Sender<HashMap<String, PruneOutcome>>,
    /// Per node, the purges asked of it and not answered yet (sent in its assignment).
    purges: Mutex<HashMap<String, Vec<Purge>>>,
    /// Answered purges by (node, id), until their asker takes them.
    purged: watch::Sender<HashMap<(String, u64), PurgeOutcome>>,
}

impl NodeUpkeep {
    /// Records what a node's report says about its disk and its latest prune.
    pub fn reported(&self, node: &str, disk: Option<DiskUsage>, pruned: Option<PruneOutcome>) {
        if let Some(disk) = disk {
            self.disk.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_string(), disk);
        }
        if let Some(outcome) = pruned.filter(|o| o.request > 0) {
            self.outcomes.send_if_modified(|m| m.insert(node.to_string(), outcome.clone()) != Some(outcome));
        }
    }

    /// Takes in the purges a node's report answers (only ones still asked of it).
    pub fn reported_purges(&self, node: &str, outcomes: Vec<PurgeOutcome>) {
        let mut asked = self.purges.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pending) = asked.get_mut(node) else { return };
        for outcome in outcomes {
            if let Some(i) = pending.iter().position(|p| p.id == outcome.id) {
                pending.remove(i);
                self.purged.send_modify(|m| {
                    m.insert((node.to_string(), outcome.id), outcome);
                });
            }
        }
    }

    /// The purges `node`'s assignment carries.
    pub fn purges(&self, node: &str) -> Vec<Purge> {
        self.purges.lock().unwrap_or_else(|p| p.into_inner()).get(node).cloned().unwrap_or_default()
    }

    /// Whether objects of `app` are being purged on some node (a new app of that name waits).
    pub fn purging(&self, app: &str) -> bool {
        self.purges.lock().unwrap_or_else(|p| p.into_inner()).values().flatten().any(|p| p.app == app)
    }

    /// Asks `nodes` to purge `app`'s objects; the caller bumps the state index.
    fn request_purge(&self, nodes: &[String], app: &str) -> u64 {
        let id = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        let mut asked = self.purges.lock().unwrap_or_else(|p| p.into_inner());
        for node in nodes {
            asked.entry(node.clone()).or_default().push(Purge { id, app: app.to_string() });
        }
        id
    }

    /// Waits until `node` answers purge `id` or `wait` elapses; a purge not answered by then is
    /// no longer asked.
    async fn wait_purged(&self, node: &str, id: u64, wait: Duration) -> Option<PurgeOutcome> {
        let key = (node.to_string(), id);
        let mut rx = self.purged.subscribe();
        let _ = tokio::time::timeout(wait, rx.wait_for(|m| m.contains_key(&key))).await;
        if let Some(pending) = self.purges.lock().unwrap_or_else(|p| p.into_inner()).get_mut(node) {
            pending.retain(|p| p.id != id);
        }
        let mut outcome = None;
        self.purged.send_if_modified(|m| {
            outcome = m.remove(&key);
            false
        });
        outcome
    }

    pub fn disk(&self, node: &str) -> Option<DiskUsage> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
    }

    /// The prune request id for `node`'s assignment (0: none asked since this process started).
    pub fn prune_request(&self, node: &str) -> u64 {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied().unwrap_or(0)
    }

    /// Asks `node` to prune; the caller bumps the state index so its agent hears of it. Ids
    /// are wall-clock milliseconds (and grow), so they stay above what an agent served for a
    /// control plane that ran before this one.
    pub fn request_prune(&self, node: &str) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(1);
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let id = now.max(requests.get(node).map_or(0, |r| r + 1));
        requests.insert(node.to_string(), id);
        id
    }

    /// Waits until `node` reports the outcome of prune `id`, or `wait` elapses.
    pub async fn wait_pruned(&self, node: &str, id: u64, wait: Duration) -> Option<PruneOutcome> {
        let mut rx = self.outcomes.subscribe();
        let done = |m: &HashMap<String, PruneOutcome>| m.get(node).is_some_and(|o| o.request >= id);
        let _ = tokio::time::timeout(wait, rx.wait_for(done)).await;
        let outcome = rx.borrow().get(node).filter(|o| o.request >= id).cloned();
        outcome
    }
}

/// Asks a ready node to prune now and answers what it removed. The agent waits for builds
/// running there to end first, so this can take as long as a build.
pub async fn prune(state: &crate::AppState, node: &str) -> crate::error::Result<PruneOutcome> {
    use crate::error::DomainError;
    let nodes = state.store.list_nodes().await?;
    let row = nodes
        .iter()
        .find(|n| n.name == node)
        .ok_or_else(|| DomainError::NotFound(format!("no node {node:?}")))?;
    if !crate::assign::node_is_ready(row) {
        return Err(DomainError::Unavailable(format!(
            "node {node} is down; it can prune once its agent is back"
        )));
    }
    let id = state.upkeep.request_prune(node);
    state.bump();
    match state.upkeep.wait_pruned(node, id, Duration::from_secs(600)).await {
        Some(PruneOutcome { error: Some(e), .. }) => {
            Err(DomainError::Unavailable(format!("node {node} could not prune: {e}")))
        }
        Some(outcome) => Ok(outcome),
        None => Err(DomainError::Unavailable(format!("node {node} did not prune within ten minutes"))),
    }
}

/// How long a purge waits for a node: its agent first waits for the app's containers to go
/// (they drain and stop on their own), at most a minute and a half.
const PURGE_WAIT: Duration = Duration::from_secs(150);

/// Asks every ready node to remove what deleted app `app` left there (database volumes,
/// networks, images) and gathers what each removed; a node that does not answer in time is
/// named in `left`.
pub async fn purge(state: &crate::AppState, app: &str) -> crate::error::Result<Vec<(String, PurgeOutcome)>> {
    let nodes: Vec<String> = crate::assign::ready_nodes(state).await?.into_iter().map(|n| n.name).collect();
    let id = state.upkeep.request_purge(&nodes, app);
    state.bump();
    let waits = nodes.iter().map(|node| state.upkeep.wait_purged(node, id, PURGE_WAIT));
    let answers = futures_util::future::join_all(waits).await;
    Ok(nodes
        .into_iter()
        .zip(answers)
        .map(|(node, answer)| {
            let outcome = answer.unwrap_or_else(|| PurgeOutcome {
                id,
                left: vec![format!(
                    "whatever node {node} holds: it did not answer within {} s",
                    PURGE_WAIT.as_secs()
                )],
                ..Default::default()
            });
            (node, outcome)
        })
        .collect())
}

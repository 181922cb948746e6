//! Node upkeep as the control plane sees it, in memory only: the disk use each agent last
//! reported, and prunes asked of agents (`paas nodes prune`) with their outcomes.

use protocol::agent::{DiskUsage, PruneOutcome};
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

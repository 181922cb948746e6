//! The state index and whom a change of it wakes: a change every node may see wakes every
//! watcher; a change of what some nodes run wakes only those nodes (and the ingress nodes); a
//! report on an environment's replicas wakes only whoever waits on that environment.
//!
//! Each node and each environment has a channel of its own, holding the index of the last
//! change that concerned it. With one shared channel and a filter, every change woke every
//! waiting task to test its filter: a thousand watching nodes made each report on one replica
//! cost a thousand task wake-ups, most of the control plane's CPU while deploys were placed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

type EnvKey = (String, String);

pub struct Wakes {
    /// Bumped on every change of desired or observed state.
    index: watch::Sender<u64>,
    /// The index of the last change every node may see (not route tables only).
    all: watch::Sender<u64>,
    /// Per node, the index of the last change to what that node alone is assigned.
    nodes: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Per environment, the index of the last report that changed one of its replicas.
    envs: Mutex<HashMap<EnvKey, watch::Sender<u64>>>,
}

impl Wakes {
    pub fn new(start: u64) -> Self {
        Self {
            index: watch::channel(start).0,
            all: watch::channel(start).0,
            nodes: Mutex::default(),
            envs: Mutex::default(),
        }
    }

    pub fn index(&self) -> u64 {
        *self.index.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }

    /// Wakes every watcher: something every node may see changed.
    pub fn bump(&self) {
        self.index.send_modify(|i| {
            *i += 1;
            self.all.send_replace(*i);
        });
    }

    /// Wakes the ingress nodes and whoever waits on the index, not the other nodes.
    pub fn bump_routes(&self) {
        self.index.send_modify(|i| *i += 1);
    }

    /// Wakes these nodes, these environments' waiters and the ingress nodes. The marks are set
    /// while the index is held, so a waiter that read the index before sees them past it.
    pub fn bump_nodes(&self, nodes: &[String], envs: &[EnvKey]) {
        self.index.send_modify(|i| {
            for node in nodes {
                mark(&self.nodes, node, *i + 1);
            }
            for env in envs {
                mark(&self.envs, env, *i + 1);
            }
            *i += 1;
        });
    }

    /// The index of the last change that concerns `node` (one for it, or one every node may
    /// see): a view of the store as of that index shows it all, however far the index moved
    /// since for others. Not for ingress nodes, whom every change concerns.
    pub fn last_for(&self, node: &str) -> u64 {
        let mine = lock(&self.nodes).get(node).map_or(0, |tx| *tx.borrow());
        mine.max(*self.all.borrow())
    }

    /// Waits until a change every node may see, or a report on a replica of `env`, comes after
    /// `index`, or `wait` runs out.
    pub async fn wait_env_past(&self, env: &EnvKey, index: u64, wait: Duration) {
        let mine = channel(&self.envs, env).subscribe();
        self.wait_all_or(mine, index, wait).await
    }

    /// Waits until the index passes `index` (`routes`: for an ingress node), or only for a
    /// change every node may see or one for `node`, or `wait` runs out.
    pub async fn wait_node_past(&self, node: &str, index: u64, wait: Duration, routes: bool) {
        if routes {
            let mut rx = self.subscribe();
            let _ = tokio::time::timeout(wait, rx.wait_for(|v| *v > index)).await;
            return;
        }
        let mine = channel(&self.nodes, node).subscribe();
        self.wait_all_or(mine, index, wait).await
    }

    async fn wait_all_or(&self, mut mine: watch::Receiver<u64>, index: u64, wait: Duration) {
        let mut all = self.all.subscribe();
        let either = async {
            tokio::select! {
                _ = all.wait_for(|v| *v > index) => {}
                _ = mine.wait_for(|v| *v > index) => {}
            }
        };
        let _ = tokio::time::timeout(wait, either).await;
    }
}

fn lock<K>(
    map: &Mutex<HashMap<K, watch::Sender<u64>>>,
) -> std::sync::MutexGuard<'_, HashMap<K, watch::Sender<u64>>> {
    map.lock().unwrap_or_else(|p| p.into_inner())
}

/// The channel of one node or environment (one that never had a change holds 0).
fn channel<K, Q>(map: &Mutex<HashMap<K, watch::Sender<u64>>>, key: &Q) -> watch::Sender<u64>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
{
    let mut map = lock(map);
    match map.get(key) {
        Some(tx) => tx.clone(),
        None => map.entry(key.to_owned()).or_insert_with(|| watch::channel(0).0).clone(),
    }
}

fn mark<K, Q>(map: &Mutex<HashMap<K, watch::Sender<u64>>>, key: &Q, index: u64)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
{
    channel(map, key).send_replace(index);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_wakes_for_its_own_marks_and_for_changes_every_node_sees_only() {
        let wakes = Wakes::new(10);
        let wait = Duration::from_secs(5);
        // Another node's change passes the index but does not wake this node.
        wakes.bump_nodes(&["other".into()], &[]);
        let quick = Duration::from_millis(50);
        let start = std::time::Instant::now();
        wakes.wait_node_past("mine", 10, quick, false).await;
        assert!(start.elapsed() >= quick, "woken by another node's change");
        // Its own change, made while it waits, wakes it.
        tokio::join!(wakes.wait_node_past("mine", 11, wait, false), async {
            tokio::task::yield_now().await;
            wakes.bump_nodes(&["mine".into()], &[]);
        });
        assert_eq!(wakes.index(), 12);
        // A change made before the wait began counts too.
        let start = std::time::Instant::now();
        wakes.wait_node_past("mine", 11, wait, false).await;
        wakes.bump();
        wakes.wait_node_past("mine", 12, wait, false).await;
        wakes.wait_node_past("never-marked", 12, wait, false).await;
        assert!(start.elapsed() < Duration::from_secs(4));
        assert_eq!(wakes.last_for("mine"), 13);
        // An ingress node wakes for any change.
        wakes.bump_routes();
        assert_eq!(wakes.last_for("mine"), 13);
        wakes.wait_node_past("mine", 13, wait, true).await;
        assert!(start.elapsed() < Duration::from_secs(4));
    }

    #[tokio::test]
    async fn an_environment_wakes_for_its_reports_only() {
        let wakes = Wakes::new(1);
        let env = ("a".to_string(), "production".to_string());
        wakes.bump_nodes(&[], &[("b".into(), "production".into())]);
        let quick = Duration::from_millis(50);
        let start = std::time::Instant::now();
        wakes.wait_env_past(&env, 1, quick).await;
        assert!(start.elapsed() >= quick, "woken by another environment's report");
        wakes.bump_nodes(&[], std::slice::from_ref(&env));
        let start = std::time::Instant::now();
        wakes.wait_env_past(&env, 2, Duration::from_secs(5)).await;
        assert!(start.elapsed() < Duration::from_secs(4));
    }
}

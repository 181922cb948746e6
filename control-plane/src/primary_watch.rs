//! Failover of a primary whose container cannot be restarted on a node that is alive (its data
//! directory is damaged, its disk is full, PostgreSQL refuses to start): once a primary that
//! answered before has not answered for the loss timeout (`--node-lost-after`) and its agent
//! tried to restart it meanwhile, it is fenced (withheld from its node, which removes the
//! container; its volume is kept) and the replica is promoted, under the same rules as a lost
//! node's (`failover::refusal`). A lost node's primaries are the node watch's (`nodes`).

use crate::failover::{promote, refusal, refused};
use crate::state::AppState;
use crate::store::DatabaseRow;
use protocol::agent::DbRole;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

type Key = (String, String);

/// What the watch remembers between passes.
#[derive(Default)]
struct Memory {
    /// Primaries seen answering since this control plane started (a new or starting server is
    /// not a failed one).
    answered: HashSet<Key>,
    /// Since when each primary has not answered, and its agent's restart count then.
    down: HashMap<Key, (Instant, u32)>,
}

/// Every second until shutdown.
pub async fn watch(state: AppState) {
    let stop = state.shutting_down();
    let mut memory = Memory::default();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Err(e) = pass(&state, &mut memory).await {
            tracing::warn!(error = %format!("{e:#}"), "checking the database primaries failed");
        }
    }
}

async fn pass(state: &AppState, memory: &mut Memory) -> anyhow::Result<()> {
    let dbs = state.store.all_databases().await?;
    memory.answered.retain(|k| dbs.iter().any(|d| (&d.app, &d.env) == (&k.0, &k.1)));
    for db in dbs.into_iter().filter(|d| d.replicas > 0 && !d.fenced) {
        let key = (db.app.clone(), db.env.clone());
        let primary = db.docker_names().database(DbRole::Primary.as_str());
        // Only what a node that reports right now says of it counts.
        let status =
            state.db_status(&primary).filter(|_| state.liveness.silence(&db.node) < Duration::from_secs(5));
        let Some(status) = status else {
            memory.down.remove(&key);
            continue;
        };
        if status.healthy {
            memory.answered.insert(key.clone());
            memory.down.remove(&key);
            continue;
        }
        if !memory.answered.contains(&key) {
            continue;
        }
        let (since, restarts) = *memory.down.entry(key.clone()).or_insert((Instant::now(), status.restarts));
        if since.elapsed() < state.config.node_lost_after || status.restarts <= restarts {
            continue;
        }
        let last = status.log_tail.last().map(|l| format!(" (it said: {})", l.trim())).unwrap_or_default();
        let down = format!(
            "the primary of {}/{} on {} has not answered for {} s and could not be restarted{last}",
            db.app,
            db.env,
            db.node,
            since.elapsed().as_secs()
        );
        if let Some(why) = refusal(state, &db, false) {
            refused(state, &db, &format!("{down}; it was NOT failed over: {why}")).await?;
            continue;
        }
        if fail_over(state, &db, &down).await? {
            memory.down.remove(&key);
            memory.answered.remove(&key);
        }
    }
    Ok(())
}

/// Fences the primary, waits until its node no longer runs it, then promotes the replica; true
/// when it did.
async fn fail_over(state: &AppState, db: &DatabaseRow, down: &str) -> anyhow::Result<bool> {
    let (app, env) = (db.app.as_str(), db.env.as_str());
    let primary = db.docker_names().database(DbRole::Primary.as_str());
    tracing::warn!(app, env, node = %db.node, "{down}: fencing it to promote the replica");
    state.store.set_database_fenced(app, env, true).await?;
    state.bump();
    let deadline = Instant::now() + Duration::from_secs(60);
    while state.db_status(&primary).is_some() {
        if Instant::now() > deadline {
            tracing::error!(app, env, node = %db.node, "the failed primary's node did not remove it within 60 s; not failing over");
            state.store.set_database_fenced(app, env, false).await?;
            state.bump();
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let db = state.store.get_database(app, env).await?;
    let msg = format!(
        "Failover: {down}; the replica on {} is the primary; a new replica is cloned on {} (the old primary's volume {} is kept and never started again)",
        db.replica_node,
        db.node,
        db.volume(DbRole::Primary)
    );
    promote(state, &db, &msg).await
}

//! Switchover: the streaming replica becomes the primary with no committed write lost. The
//! primary is fenced first (withheld from its node's assignment, so the agent stops it; a clean
//! shutdown sends all of its WAL to the replica), then the replica's volume becomes the
//! primary's: its container is replaced by the primary's on that volume, which ends recovery on
//! a new timeline, and a new replica is cloned on a fresh volume on the old primary's node. The
//! `db-primary` alias moves with it, so `DATABASE_URL` needs no change. The old primary's volume
//! is kept (never deleted implicitly) and never started again.

use crate::backups::refuse_while_running;
use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::DatabaseRow;
use protocol::agent::DbRole;
use std::time::{Duration, Instant};

/// How long the fenced primary may take to stop (its agent's shutdown waits 30 s at most).
const STOP_WAIT: Duration = Duration::from_secs(60);
/// How long the promoted server may take to answer.
const PROMOTE_WAIT: Duration = Duration::from_secs(120);

fn healthy(state: &AppState, name: &str) -> bool {
    state.db_status(name).is_some_and(|s| s.healthy)
}

/// `paas db failover`: hands the primary's role to the replica, both healthy, losing nothing.
/// Returns once the new primary answers; the new replica follows in the background. It runs in
/// a task of its own, so a client that goes away mid-way does not leave the primary fenced.
pub async fn switchover(state: &AppState, user: &str, app: &str, env: &str) -> Result<DatabaseRow> {
    let (bg, user, app, env) = (state.clone(), user.to_string(), app.to_string(), env.to_string());
    tokio::spawn(async move { switch(&bg, &user, &app, &env).await })
        .await
        .map_err(|e| DomainError::Internal(anyhow::anyhow!("the switchover task failed: {e}")))?
}

async fn switch(state: &AppState, user: &str, app: &str, env: &str) -> Result<DatabaseRow> {
    let db = state.store.get_database(app, env).await?;
    if db.replicas == 0 {
        return Err(DomainError::Invalid(format!(
            "{app}/{env}'s database has no replica to hand the primary's role to"
        )));
    }
    if db.fenced {
        return Err(DomainError::Conflict(format!("a switchover of {app}/{env}'s database is under way")));
    }
    let names = db.docker_names();
    let (primary, replica) =
        (names.database(DbRole::Primary.as_str()), names.database(DbRole::Replica.as_str()));
    for (name, what) in [(&primary, "primary"), (&replica, "replica")] {
        if !healthy(state, name) {
            return Err(DomainError::Conflict(format!(
                "the {what} of {app}/{env} is not healthy, and a switchover needs both (`paas db info` shows why)"
            )));
        }
    }
    // Only a replica that streams has everything the primary sends as it shuts down.
    let streaming = state.db_status(&replica).and_then(|s| s.db).and_then(|f| f.streaming);
    if streaming == Some(false) {
        return Err(DomainError::Conflict(format!(
            "the replica of {app}/{env} is not streaming from the primary right now, so a switchover could lose writes; try again when it is"
        )));
    }
    refuse_while_running(state, &db, "switch over once it has finished").await?;
    // psql sessions are the user's own and short; any other task (a restore, a base backup, a
    // recovery) would be cut off or run against the demoted server.
    let open = state.store.open_db_tasks().await?;
    let busy = |t: &&crate::store::DbTaskRow| {
        t.app == app && t.env == env && t.kind != protocol::agent::DbTaskKind::Psql
    };
    if let Some(t) = open.iter().find(busy) {
        return Err(DomainError::Conflict(format!(
            "database task {} of {app}/{env} is still running; switch over once it has finished",
            t.id
        )));
    }
    tracing::info!(app, env, user, from = %db.node, to = %db.replica_node, "switchover: stopping the primary");
    state.store.set_database_fenced(app, env, true).await?;
    state.bump();
    let deadline = Instant::now() + STOP_WAIT;
    while state.db_status(&primary).is_some_and(|s| s.state == "running") {
        if Instant::now() > deadline {
            state.store.set_database_fenced(app, env, false).await?;
            state.bump();
            return Err(DomainError::Unavailable(format!(
                "the primary of {app}/{env} did not stop within {} s, so nothing changed and it runs again",
                STOP_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = fresh_volume(state, &db.node, &replica).await;
    let old_primary_volume = db.volume(DbRole::Primary);
    if !state.store.promote_replica(&db, &db.volume(DbRole::Replica), &fresh).await? {
        return Err(DomainError::Conflict(format!("{app}/{env}'s database changed during the switchover")));
    }
    state.bump();
    tracing::info!(app, env, primary_node = %db.replica_node, kept_volume = %old_primary_volume, "switchover: the replica takes over");
    let deadline = Instant::now() + PROMOTE_WAIT;
    while !healthy(state, &primary) || state.db_status(&primary).is_some_and(|s| s.db.is_none()) {
        if Instant::now() > deadline {
            return Err(DomainError::Unavailable(format!(
                "the new primary of {app}/{env} did not answer within {} s; `paas db info` shows its state",
                PROMOTE_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let msg = format!(
        "Switchover: the replica on {} is the primary; a new replica is cloned on {} (the old primary's volume {old_primary_volume} is kept)",
        db.replica_node, db.node
    );
    state.store.add_event(app, env, "db.switchover", "info", &msg).await?;
    state.events_changed();
    after_promotion(state, app, env);
    Ok(state.store.get_database(app, env).await?)
}

/// How long a primary with a replica keeps running while its agent hears nothing from the control
/// plane and no replica streams from it: two thirds of the loss timeout, so it has stopped before
/// its node is declared lost and its replica promoted.
pub fn lease(node_lost_after: Duration) -> Duration {
    (node_lost_after * 2 / 3).max(Duration::from_secs(2))
}

/// A replica further behind than this (WAL its primary wrote that it had not flushed, as last
/// reported) is not promoted: the loss would be larger than a failover should silently take.
pub const MAX_PROMOTE_LAG: u64 = 16 << 20;

/// `node` was declared lost: each database whose primary ran there fails over to its replica
/// when that one is healthy, no longer receives WAL (a primary still streaming to it is alive,
/// cut off from the control plane only) and was not too far behind; otherwise the event says
/// why not. The lost node's agent, should it return, finds its primary gone from its assignment
/// and stops it; a new replica is cloned there on a fresh volume.
pub async fn primary_node_lost(state: &AppState, node: &str) -> anyhow::Result<()> {
    for db in state.store.all_databases().await?.into_iter().filter(|d| d.node == node && d.replicas > 0) {
        let primary = db.docker_names().database(DbRole::Primary.as_str());
        if let Some(why) = refusal(state, &db, true) {
            refused(
                state,
                &db,
                &format!("The primary's node {node} is lost, and it was NOT failed over: {why}"),
            )
            .await?;
            continue;
        }
        let behind = state.db_status(&primary).and_then(|s| s.db).and_then(|f| f.replica_behind_bytes);
        let lag = behind.map_or_else(|| "unknown".to_string(), protocol::bytes_human);
        let msg = format!(
            "Failover: the primary's node {node} is lost; the replica on {} is the primary (it was {lag} behind); a new replica is cloned on {node} when it returns (the old primary's volume {} is kept and never started again)",
            db.replica_node,
            db.volume(DbRole::Primary)
        );
        promote(state, &db, &msg).await?;
    }
    // What the lost node last said of its servers no longer holds (and must not stand for a new
    // primary of the same name elsewhere).
    state.forget_db_status(node);
    Ok(())
}

/// Promotes the replica of `db` (as read) to primary after a failure, saying `msg`; false when
/// the database changed meanwhile.
pub(crate) async fn promote(state: &AppState, db: &DatabaseRow, msg: &str) -> anyhow::Result<bool> {
    let (app, env) = (db.app.as_str(), db.env.as_str());
    REFUSED.lock().unwrap_or_else(|p| p.into_inner()).remove(&(app.to_string(), env.to_string()));
    let replica = db.docker_names().database(DbRole::Replica.as_str());
    let fresh = fresh_volume(state, &db.node, &replica).await;
    if !state.store.promote_replica(db, &db.volume(DbRole::Replica), &fresh).await? {
        return Ok(false);
    }
    tracing::warn!(app, env, node = %db.node, "{msg}");
    state.store.add_event(app, env, "db.failover", "warning", msg).await?;
    state.events_changed();
    state.bump();
    after_promotion(state, app, env);
    Ok(true)
}

/// Why the replica of `db` may not be promoted now, if it may not: it ran on the primary's lost
/// node, it is not healthy, it still receives WAL (its primary is alive), or it may be too far
/// behind (by the primary's last figure, or unknown while it has not streamed lately).
pub(crate) fn refusal(state: &AppState, db: &DatabaseRow, node_lost: bool) -> Option<String> {
    let names = db.docker_names();
    let (primary, replica) =
        (names.database(DbRole::Primary.as_str()), names.database(DbRole::Replica.as_str()));
    let figures = state.db_status(&replica).filter(|s| s.healthy).and_then(|s| s.db);
    let behind = state.db_status(&primary).and_then(|s| s.db).and_then(|f| f.replica_behind_bytes);
    if node_lost && db.replica_node == db.node {
        Some("its replica ran on the same node".to_string())
    } else if figures.is_none() {
        Some(format!("its replica on {} is not healthy", db.replica_node))
    } else if figures.as_ref().and_then(|f| f.streaming) == Some(true) {
        Some("its replica still receives WAL from it, so it is alive".to_string())
    } else if behind.is_none() && !state.streamed_within(&replica, state.config.node_lost_after * 3) {
        // No lag figure (the replica had just connected) and no streaming lately: it may have
        // been cut off for long, and promoting it would drop all that.
        Some(
            "its lag is unknown and it has not streamed from the primary lately, so the loss could be large"
                .to_string(),
        )
    } else if behind.is_some_and(|b| b > MAX_PROMOTE_LAG) {
        Some(format!(
            "its replica was {} behind (more than {}), so promoting it would lose that much",
            protocol::bytes_human(behind.unwrap_or(0)),
            protocol::bytes_human(MAX_PROMOTE_LAG)
        ))
    } else {
        None
    }
}

/// Says (an error log, a critical event) why `db` was not failed over, once per reason while
/// it is asked again.
pub(crate) async fn refused(state: &AppState, db: &DatabaseRow, msg: &str) -> anyhow::Result<()> {
    let (app, env) = (db.app.as_str(), db.env.as_str());
    let key = (app.to_string(), env.to_string());
    if REFUSED.lock().unwrap_or_else(|p| p.into_inner()).insert(key, msg.to_string()).as_deref() != Some(msg)
    {
        tracing::error!(app, env, node = %db.node, "{msg}");
        state.store.add_event(app, env, "db.failover.refused", "critical", msg).await?;
    }
    Ok(())
}

/// Why each database whose primary's node is lost was not failed over, last time it was asked.
static REFUSED: std::sync::Mutex<std::collections::BTreeMap<(String, String), String>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Once the promoted primary answers: the environment's app rolls out again as a release
/// (blue/green), so every container's `DATABASE_URL` reaches the new primary (an app on
/// another node than the primary's has its node's published address in it, not the
/// `db-primary` name); and a base backup of the new primary starts point-in-time recovery
/// afresh from the promotion on (it archives on a new timeline; the old one's last segments may
/// never have been shipped).
fn after_promotion(state: &AppState, app: &str, env: &str) {
    let (bg, app, env) = (state.clone(), app.to_string(), env.to_string());
    state.spawn(async move {
        let deadline = Instant::now() + PROMOTE_WAIT;
        while Instant::now() < deadline {
            let Ok(db) = bg.store.get_database(&app, &env).await else { return };
            let primary = db.docker_names().database(DbRole::Primary.as_str());
            if healthy(&bg, &primary) {
                reconnect_app(&bg, &app, &env).await;
                if let Err(e) =
                    crate::backups::start_base_backup(&bg, &db, protocol::api::BackupTrigger::Scheduled).await
                {
                    tracing::warn!(app, env, error = %e, "the base backup after a promotion could not start");
                }
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// The serving release again, as a new release whose containers get the new primary's address.
async fn reconnect_app(state: &AppState, app: &str, env: &str) {
    let serving = state.store.get_env(app, env).await.ok().and_then(|e| e.current_release);
    if serving.is_none() {
        return; // nothing runs yet; the first deploy gets the current address
    }
    let why = |v| format!("Database failover: v{v} again, connected to the new primary");
    match crate::releases::restart_described(state, "platform", app, env, why).await {
        Ok(r) => tracing::info!(app, env, release = r.version, "the app rolls out to reach the new primary"),
        Err(e) => {
            let msg =
                format!("The app could not roll out to reach the new primary ({e}); `paas restart` does it");
            tracing::warn!(app, env, "{msg}");
            let _ = state.store.add_event(app, env, "db.failover.app", "warning", &msg).await;
        }
    }
}

/// A new volume name for a replica cloned afresh on `node`: never one the node holds (a replica
/// started on an old server's data would not be a clone of the primary).
async fn fresh_volume(state: &AppState, node: &str, replica: &str) -> String {
    let taken = state.db_volumes(node, Duration::ZERO).await.unwrap_or_default();
    loop {
        let name = format!("{replica}-{}", crate::tokens::random_hex(8));
        if !taken.contains(&name) {
            return name;
        }
    }
}

/// A switchover cut short by a restart left the primary fenced before the replica took over:
/// nothing changed, so the primary runs again.
pub async fn recover(state: &AppState) -> anyhow::Result<()> {
    for db in state.store.all_databases().await?.into_iter().filter(|d| d.fenced) {
        tracing::warn!(app = %db.app, env = %db.env, "a switchover was cut short; the primary runs again");
        state.store.set_database_fenced(&db.app, &db.env, false).await?;
        state.bump();
    }
    Ok(())
}

//! Nothing about a backup stays running: the sweep gives up database tasks whose agent went
//! silent, ends backups and verifications nothing works on any more (the control plane was
//! killed or a step failed halfway), and settles restores whose safety backup has ended. It runs
//! once at start, before anything is served, and then every 10 s beside the backup schedule.
//!
//! What a restart does to work in flight: a task an agent holds stays with the agent (it
//! reports, or a restarted agent runs it again, or the silence rule ends it); a backup the
//! control plane was storing (writing the manifest, copying to S3) fails with the reason and
//! the next one starts from scratch, since resuming would mean trusting a half-written copy; an
//! interrupted verification runs again, since it changes nothing.

use super::{
    alarm, backup_failed, next_due, safety_backup_ended, start_backup, start_verify, task_finished, unix_now,
    verify_in_background,
};
use crate::state::AppState;
use crate::store::StoreError;
use protocol::agent::{DbTaskKind, DbTaskResult};
use std::collections::HashSet;
use std::time::Duration;

/// Agents say every 10 s that they are still working on a task, whether bytes are moving or
/// PostgreSQL is busy; a task not heard of for this long is given up (its agent died, lost the
/// control plane or hung), so nothing waits on a lost node.
pub const TASK_SILENCE: Duration = Duration::from_secs(90);
/// How often the sweep and the schedule run.
const PASS_EVERY: Duration = Duration::from_secs(10);

/// Ends what the last run of the control plane left unfinished; called before serving.
pub async fn recover(state: &AppState) -> anyhow::Result<()> {
    sweep(state, true).await
}

/// Sweeps and starts the backups each database's schedule says are due, every 10 s until
/// shutdown.
pub async fn scheduler(state: AppState) {
    let stop = state.shutting_down();
    loop {
        if let Err(e) = sweep(&state, false).await {
            tracing::warn!(error = %format!("{e:#}"), "the backup sweep failed");
        }
        if let Err(e) = schedule_pass(&state).await {
            tracing::warn!(error = %format!("{e:#}"), "the backup schedule pass failed");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PASS_EVERY) => {}
        }
    }
}

/// One pass; `restarted` says the work was interrupted by a restart (for the reasons given).
pub(super) async fn sweep(state: &AppState, restarted: bool) -> anyhow::Result<()> {
    give_up_silent_tasks(state).await?;
    end_abandoned(state, restarted).await?;
    settle_waiting_restores(state, restarted).await
}

async fn give_up_silent_tasks(state: &AppState) -> anyhow::Result<()> {
    let open = state.store.open_db_tasks().await?;
    state.keep_task_progress(&open.iter().map(|t| t.id.as_str()).collect::<HashSet<_>>());
    for t in &open {
        let gone = matches!(state.store.get_database(&t.app, &t.env).await, Err(StoreError::NotFound(_)));
        // Waiting tasks are held back from agents: they end with their safety backup.
        let silent = t.status == "pending" && state.task_silence(&t.id) >= TASK_SILENCE;
        let error = if gone {
            format!("the database of {}/{} was deleted", t.app, t.env)
        } else if silent {
            format!(
                "node {} stopped working on the {} task: nothing was heard from it for {} seconds (is its agent running?)",
                t.node,
                t.kind.as_str(),
                TASK_SILENCE.as_secs()
            )
        } else {
            continue;
        };
        tracing::warn!(app = %t.app, env = %t.env, task = %t.id, "{error}");
        task_finished(state, t, &DbTaskResult { error: Some(error), ..Default::default() }).await?;
    }
    Ok(())
}

/// Backups and verifications marked running that no task and no step of this process works on.
/// Each is checked again under its busy mark, which every step holds while it changes one.
async fn end_abandoned(state: &AppState, restarted: bool) -> anyhow::Result<()> {
    for b in state.store.unfinished_backups().await? {
        let has_task = |open: &[crate::store::DbTaskRow], kind: DbTaskKind| {
            open.iter().any(|t| t.backup == b.id && t.kind == kind)
        };
        if b.status == "running" {
            let Some(_busy) = state.busy(format!("backup:{}", b.id)) else { continue };
            if has_task(&state.store.open_db_tasks().await?, DbTaskKind::Backup) {
                continue; // an agent holds it
            }
            let why = if restarted {
                "the control plane restarted before this backup was stored; nothing was kept; `paas db backup` takes another"
            } else {
                "storing this backup stopped before it ended; nothing was kept; `paas db backup` takes another"
            };
            if state.store.fail_running_backup(&b.id, why).await? {
                state.backup_storage.discard(&b).await;
                tracing::warn!(app = %b.app, env = %b.env, backup = %b.id, "{why}");
                backup_failed(state, &state.store.get_backup(&b.id).await?).await?;
                state.bump();
            }
        } else if b.verification == "running" {
            let Some(busy) = state.busy(format!("verify:{}", b.id)) else { continue };
            if has_task(&state.store.open_db_tasks().await?, DbTaskKind::Verify) {
                continue; // an agent holds it
            }
            let b = state.store.get_backup(&b.id).await?;
            if b.verification == "running" {
                tracing::warn!(app = %b.app, env = %b.env, backup = %b.id, "a verification was interrupted; running it again");
                verify_in_background(state, &b, busy);
            }
        } else if b.status == "stored" && b.verification == "pending" {
            // Stored, but the step that starts its verification never ran.
            let Some(_busy) = state.busy(format!("backup:{}", b.id)) else { continue };
            if state.store.get_backup(&b.id).await?.verification == "pending" {
                tracing::warn!(app = %b.app, env = %b.env, backup = %b.id, "a stored backup was never verified; verifying it now");
                start_verify(state, &b).await?;
            }
        }
    }
    Ok(())
}

/// Restores held back for a safety backup that has ended (or never started).
async fn settle_waiting_restores(state: &AppState, restarted: bool) -> anyhow::Result<()> {
    for t in state.store.open_db_tasks().await?.into_iter().filter(|t| t.status == "waiting") {
        let Some(_busy) = state.busy(format!("restore:{}", t.id)) else { continue };
        let t = state.store.get_db_task(&t.id).await?;
        if t.status != "waiting" {
            continue;
        }
        let why = match t.result.get("safety_backup").and_then(|v| v.as_str()) {
            Some(id) => match state.store.get_backup(id).await {
                Ok(b) if b.status == "running" => continue,
                Ok(b) => {
                    safety_backup_ended(state, &b).await?;
                    state.bump();
                    continue;
                }
                Err(StoreError::NotFound(_)) => {
                    format!("its safety backup {id} is gone, so nothing was restored; run the restore again")
                }
                Err(e) => return Err(e.into()),
            },
            None if restarted => "the control plane restarted before this restore's safety backup started, so nothing was restored; run the restore again".to_string(),
            None => "this restore's safety backup never started, so nothing was restored; run the restore again".to_string(),
        };
        tracing::warn!(app = %t.app, env = %t.env, task = %t.id, "{why}");
        state.store.finish_db_task(&t.id, "failed", Some(&why), &t.result).await?;
        state.bump();
    }
    Ok(())
}

async fn schedule_pass(state: &AppState) -> anyhow::Result<()> {
    let now = unix_now();
    for db in state.store.all_databases().await? {
        let Some(due) = next_due(&db) else { continue };
        if due > now {
            continue;
        }
        state.store.set_last_scheduled(&db.app, &db.env, now).await?;
        if let Err(e) = start_backup(state, &db, "scheduled").await {
            let msg = format!("the scheduled backup of {}/{} could not start: {e}", db.app, db.env);
            alarm(state, &db.app, &db.env, "db.backup.failed", &msg).await;
        }
    }
    Ok(())
}

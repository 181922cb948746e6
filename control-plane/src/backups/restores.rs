//! Restores: into the environment's database after a safety backup, or into a new database
//! beside it; a restore waits, held back from the agent, until every backup it needs (its safety
//! backup, the recovered backup of a `--to-time` restore, an imported dump and its proof) is
//! stored, and fails when one is not.

use super::{begin_backup, dump_source, env_backup, refuse_while_running, restore_to_time, task};
use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::{DatabaseRow, DbTaskRow};
use protocol::agent::{DbRole, DbTaskKind, DbTaskParams, DbTaskStatus};
use protocol::api::{Backup, BackupKind, BackupStatus, BackupTrigger, StartRestore, Verification};
use serde_json::json;

/// Starts a restore. Into the environment's database it first takes a safety backup; the
/// restore waits until that is stored ([`awaited_backup_ended`]), and until `b` is when it is
/// a recovered backup still being made. `to_new` restores into a new database beside it.
pub async fn start_restore(
    state: &AppState,
    db: &DatabaseRow,
    b: &Backup,
    to_new: bool,
) -> Result<DbTaskRow> {
    // Retention holds this while it decides, so it never deletes a backup a restore refers to.
    let _use = state.busy_wait(format!("use:{}", b.id)).await;
    state.store.get_backup(&b.id).await?;
    let database = db.database_name();
    let short: String = b.id.chars().rev().take(4).collect::<String>().chars().rev().collect();
    let target = if to_new { format!("{database}_restore_{short}") } else { database.clone() };
    let params =
        DbTaskParams { target_database: target.clone(), create_target: to_new, ..Default::default() };
    let recovering = b.trigger == BackupTrigger::Recovered && b.status == BackupStatus::Running;
    // An import is restored only once a drill proved that it restores.
    let importing = b.trigger == BackupTrigger::Imported && b.verification != Verification::Ok;
    let held = !to_new || recovering || importing;
    let t = task(state, db, DbTaskKind::Restore, DbRole::Primary, &b.id, params, held).await?;
    // Busy until its safety backup is named, so the sweep does not fail it in between.
    let _busy = state.busy_wait(format!("restore:{}", t.id)).await;
    let mut result = if to_new {
        json!({ "target_url": format!("postgres://{database}:****@db-primary:5432/{target}") })
    } else {
        // The caller checked that no other backup runs (a recovered one may, for this restore).
        let role = dump_source(state, db);
        let safety = begin_backup(state, db, BackupTrigger::Safety, role, BackupKind::Dump, None).await?;
        json!({ "safety_backup": safety.id })
    };
    if recovering {
        result["recovered_backup"] = json!(b.id);
    }
    if importing {
        result["imported_backup"] = json!(b.id);
    }
    state.store.set_db_task_result(&t.id, &result).await?;
    tracing::info!(app = %db.app, env = %db.env, backup = %b.id, to_new, "restore requested");
    Ok(state.store.get_db_task(&t.id).await?)
}

/// The backups a waiting restore waits for: its safety backup, the recovered backup it
/// restores, the imported dump it restores (which must also pass its restore drill), as
/// (what, id, whether it must be verified).
fn awaited(t: &DbTaskRow) -> Vec<(&'static str, String, bool)> {
    [
        ("safety backup", "safety_backup", false),
        ("recovered backup", "recovered_backup", false),
        ("imported dump", "imported_backup", true),
    ]
    .into_iter()
    .filter_map(|(what, key, proof)| Some((what, t.result.get(key)?.as_str()?.to_string(), proof)))
    .collect()
}

/// A backup ended: restores waiting for it go ahead once every backup they wait for is stored,
/// and fail, restoring nothing, when one was not. Kept in the store, so a restart loses nothing.
pub(super) async fn awaited_backup_ended(state: &AppState, b: &Backup) -> anyhow::Result<()> {
    let open = state.store.open_db_tasks().await?;
    let waiting = open
        .into_iter()
        .filter(|t| t.status == DbTaskStatus::Waiting && awaited(t).iter().any(|(_, id, _)| *id == b.id));
    for t in waiting {
        settle_waiting(state, &t).await?;
    }
    Ok(())
}

/// Releases a waiting restore whose awaited backups are all stored, fails it when one failed
/// or is gone; true when it is settled either way.
pub(super) async fn settle_waiting(state: &AppState, t: &DbTaskRow) -> anyhow::Result<bool> {
    let mut stored = 0;
    let awaited = awaited(t);
    for (what, id, proof) in &awaited {
        let why = match state.store.get_backup(id).await {
            Ok(b) if b.status == BackupStatus::Running => continue,
            Ok(b) if b.status == BackupStatus::Stored && *proof && b.verification == Verification::Failed => {
                format!(
                    "the {what} {id} did not restore in a throwaway database, so nothing was restored: {}",
                    b.verification_error.as_deref().unwrap_or("unknown error")
                )
            }
            Ok(b) if b.status == BackupStatus::Stored && *proof && b.verification != Verification::Ok => {
                continue
            }
            Ok(b) if b.status == BackupStatus::Stored => {
                stored += 1;
                continue;
            }
            Ok(b) => format!(
                "the {what} {id} failed, so nothing was restored: {}",
                b.error.as_deref().unwrap_or_default()
            ),
            Err(crate::store::StoreError::NotFound(_)) => {
                format!("its {what} {id} is gone, so nothing was restored; run the restore again")
            }
            Err(e) => return Err(e.into()),
        };
        tracing::warn!(app = %t.app, env = %t.env, task = %t.id, "{why}");
        state.store.finish_db_task(&t.id, DbTaskStatus::Failed, Some(&why), &t.result).await?;
        return Ok(true);
    }
    if stored == awaited.len() && stored > 0 {
        state.store.release_db_task(&t.id).await?;
        return Ok(true);
    }
    Ok(false)
}

/// Restores a backup of `app`/`env`, into its database (`confirm`) or a new one (`to_new`).
pub async fn restore(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    req: &StartRestore,
) -> Result<DbTaskRow> {
    let db = state.store.get_database(app, env).await?;
    if req.confirm == req.to_new {
        return Err(DomainError::Invalid(
            "restoring into the environment's database replaces its data: pass --confirm (a safety backup is taken first), or --to-new to restore into a new database".into(),
        ));
    }
    if let Some(at) = &req.to_time {
        if !req.backup.is_empty() {
            return Err(DomainError::Invalid(
                "give a backup or --to-time, not both: --to-time picks its base backup itself".into(),
            ));
        }
        let t = restore_to_time(state, &db, at, req.to_new).await?;
        tracing::info!(app, env, at = %at, to_new = req.to_new, user, "point-in-time restore requested");
        return Ok(t);
    }
    let b = env_backup(state, app, env, &req.backup).await?;
    if b.kind == BackupKind::Base {
        return Err(DomainError::Invalid(format!(
            "{} is a base backup, which restores only to a moment: `paas db restore --to-time <time>`",
            b.id
        )));
    }
    if b.status != BackupStatus::Stored {
        return Err(DomainError::Invalid(format!(
            "backup {} is {}, so it cannot be restored",
            b.id, b.status
        )));
    }
    if req.confirm && b.verification == Verification::Failed {
        return Err(DomainError::Invalid(format!(
            "backup {} failed verification ({}); restore it with --to-new to inspect it",
            b.id,
            b.verification_error.as_deref().unwrap_or("unknown error")
        )));
    }
    refuse_while_running(state, &db, "restore once it has finished").await?;
    let t = start_restore(state, &db, &b, req.to_new).await?;
    tracing::info!(app, env, backup = %b.id, to_new = req.to_new, user, "restore requested");
    Ok(t)
}

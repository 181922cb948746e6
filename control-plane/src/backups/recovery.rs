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
    alarm, backup_failed, next_due, settle_waiting, start_backup, start_verify, task_finished, unix_now,
    verify_in_background,
};
use crate::state::AppState;
use crate::store::StoreError;
use protocol::agent::{DbTaskKind, DbTaskResult, DbTaskStatus};
use protocol::api::{BackupStatus, BackupTrigger, Verification};
use std::collections::HashSet;
use std::time::Duration;

/// Agents say every 10 s that they are still working on a task, whether bytes are moving or
/// PostgreSQL is busy; a task not heard of for this long is given up (its agent died, lost the
/// control plane or hung), so nothing waits on a lost node.
pub const TASK_SILENCE: Duration = Duration::from_secs(90);
/// A backstop for work that is alive but stuck (an agent that still heartbeats while a
/// statement waits on a lock forever): no task runs longer than this.
const TASK_DEADLINE: Duration = Duration::from_secs(12 * 3600);
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
        if let Err(e) = super::pitr::base_backup_pass(&state).await {
            tracing::warn!(error = %format!("{e:#}"), "the base backup pass failed");
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
        let silent = t.status == DbTaskStatus::Pending && state.task_silence(&t.id) >= TASK_SILENCE;
        let age = unix_now() - crate::store::unix_seconds(&t.created_at).unwrap_or_else(unix_now);
        let error = if gone {
            format!("the database of {}/{} was deleted", t.app, t.env)
        } else if age > TASK_DEADLINE.as_secs() as i64 {
            let hours = TASK_DEADLINE.as_secs() / 3600;
            format!("node {} did not finish the {} task within {hours} hours", t.node, t.kind.as_str())
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
        if b.status == BackupStatus::Running {
            let Some(_busy) = state.busy(format!("backup:{}", b.id)) else { continue };
            let open = state.store.open_db_tasks().await?;
            if [DbTaskKind::Backup, DbTaskKind::BaseBackup, DbTaskKind::Recover]
                .into_iter()
                .any(|k| has_task(&open, k))
            {
                continue; // an agent holds it
            }
            let why = match (restarted, b.trigger == BackupTrigger::Imported) {
                (true, false) => "the control plane restarted before this backup was stored; nothing was kept; `paas db backup` takes another",
                (false, false) => "storing this backup stopped before it ended; nothing was kept; `paas db backup` takes another",
                (true, true) => "the control plane restarted before this imported dump was stored; nothing was kept or restored; run `paas db import` again",
                (false, true) => "storing this imported dump stopped before it ended; nothing was kept or restored; run `paas db import` again",
            };
            if state.store.fail_running_backup(&b.id, why).await? {
                state.backup_storage.discard(&b).await;
                tracing::warn!(app = %b.app, env = %b.env, backup = %b.id, "{why}");
                backup_failed(state, &state.store.get_backup(&b.id).await?).await?;
                state.bump();
            }
        } else if b.verification == Verification::Running {
            let Some(busy) = state.busy(format!("verify:{}", b.id)) else { continue };
            let open = state.store.open_db_tasks().await?;
            if has_task(&open, DbTaskKind::Verify) || has_task(&open, DbTaskKind::Recover) {
                continue; // an agent holds it
            }
            let b = state.store.get_backup(&b.id).await?;
            if b.verification == Verification::Running {
                tracing::warn!(app = %b.app, env = %b.env, backup = %b.id, "a verification was interrupted; running it again");
                verify_in_background(state, &b, busy);
            }
        } else if b.status == BackupStatus::Stored && b.verification == Verification::Pending {
            // Stored, but the step that starts its verification never ran.
            let Some(_busy) = state.busy(format!("backup:{}", b.id)) else { continue };
            if state.store.get_backup(&b.id).await?.verification == Verification::Pending {
                tracing::warn!(app = %b.app, env = %b.env, backup = %b.id, "a stored backup was never verified; verifying it now");
                start_verify(state, &b).await?;
            }
        }
    }
    Ok(())
}

/// Restores held back for backups that have ended (or never started).
async fn settle_waiting_restores(state: &AppState, restarted: bool) -> anyhow::Result<()> {
    for t in state.store.open_db_tasks().await?.into_iter().filter(|t| t.status == DbTaskStatus::Waiting) {
        let Some(_busy) = state.busy(format!("restore:{}", t.id)) else { continue };
        let t = state.store.get_db_task(&t.id).await?;
        if t.status != DbTaskStatus::Waiting {
            continue;
        }
        if ["safety_backup", "recovered_backup", "imported_backup"].iter().any(|k| t.result.get(k).is_some())
        {
            if settle_waiting(state, &t).await? {
                state.bump();
            }
            continue;
        }
        let why = if restarted {
            "the control plane restarted before this restore's safety backup started, so nothing was restored; run the restore again"
        } else {
            "this restore's safety backup never started, so nothing was restored; run the restore again"
        };
        tracing::warn!(app = %t.app, env = %t.env, task = %t.id, "{why}");
        state.store.finish_db_task(&t.id, DbTaskStatus::Failed, Some(why), &t.result).await?;
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
        if let Err(e) = start_backup(state, &db, BackupTrigger::Scheduled).await {
            let msg = format!("the scheduled backup of {}/{} could not start: {e}", db.app, db.env);
            alarm(state, &db.app, &db.env, "db.backup.failed", &msg).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backups::{retention, start_psql, start_restore};
    use crate::store::DatabaseRow;
    use protocol::api::{Backup, PsqlCommand};
    use serde_json::json;
    use std::time::Instant;

    /// A control plane state with app `shop` and the database of its production environment.
    async fn state() -> (AppState, std::path::PathBuf) {
        let (state, dir) = AppState::for_tests().await;
        state
            .store
            .create_database(&DatabaseRow {
                app: "shop".into(),
                env: "production".into(),
                version: 15,
                node: "n1".into(),
                password: Vec::new(),
                max_connections: 100,
                replicas: 0,
                replica_node: String::new(),
                backup_schedule: "off".into(),
                keep_count: 1,
                keep_days: 30,
                last_scheduled_at: 0,
                created_at: crate::store::now(),
                host_port: 0,
                legacy_names: false,
                primary_volume: String::new(),
                replica_volume: String::new(),
                fenced: false,
                superuser_password: Vec::new(),
                replication_password: Vec::new(),
            })
            .await
            .unwrap();
        (state, dir)
    }

    async fn db(state: &AppState) -> DatabaseRow {
        state.store.get_database("shop", "production").await.unwrap()
    }

    async fn open_task(state: &AppState, backup: &str, kind: DbTaskKind) -> crate::store::DbTaskRow {
        let open = state.store.open_db_tasks().await.unwrap();
        open.into_iter().find(|t| t.backup == backup && t.kind == kind).expect("an open task")
    }

    /// Waits for background steps (they run in spawned tasks) to bring the backup to `done`.
    async fn until(state: &AppState, id: &str, done: impl Fn(&Backup) -> bool) -> Backup {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let b = state.store.get_backup(id).await.unwrap();
            if done(&b) {
                return b;
            }
            assert!(Instant::now() < deadline, "backup {id} never got there: {b:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_restart_fails_the_backup_it_interrupted_and_the_restore_waiting_for_it() {
        let (state, dir) = state().await;
        let db = db(&state).await;
        let old = start_backup(&state, &db, BackupTrigger::Manual).await.unwrap();
        state.store.finish_backup(&Backup { status: BackupStatus::Stored, ..old.clone() }).await.unwrap();
        state
            .store
            .finish_db_task(
                &open_task(&state, &old.id, DbTaskKind::Backup).await.id,
                DbTaskStatus::Done,
                None,
                &json!({}),
            )
            .await
            .unwrap();
        state.store.set_verification(&old.id, Verification::Ok, None).await.unwrap();
        // A restore took its safety backup; the dump arrived and the agent reported, then the
        // control plane died while storing it.
        let restore =
            start_restore(&state, &db, &state.store.get_backup(&old.id).await.unwrap(), false).await.unwrap();
        let safety = restore.result["safety_backup"].as_str().unwrap().to_string();
        let task = open_task(&state, &safety, DbTaskKind::Backup).await;
        state.store.finish_db_task(&task.id, DbTaskStatus::Done, None, &json!({})).await.unwrap();

        recover(&state).await.unwrap();
        let b = state.store.get_backup(&safety).await.unwrap();
        assert_eq!(b.status, BackupStatus::Failed);
        assert!(b.error.as_deref().unwrap().contains("restarted before this backup was stored"), "{b:?}");
        let r = state.store.get_db_task(&restore.id).await.unwrap();
        assert_eq!(r.status, DbTaskStatus::Failed);
        assert!(r.error.as_deref().unwrap().contains("nothing was restored"), "{r:?}");
        // The next backup is not refused as "still running".
        start_backup(&state, &db, BackupTrigger::Manual).await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_task_whose_agent_went_silent_is_given_up_and_one_that_reports_is_not() {
        let (state, dir) = state().await;
        let db = db(&state).await;
        let b = start_backup(&state, &db, BackupTrigger::Manual).await.unwrap();
        let silent = open_task(&state, &b.id, DbTaskKind::Backup).await;
        let talking = start_psql(&state, &db, PsqlCommand::default()).await.unwrap();

        sweep(&state, false).await.unwrap();
        assert_eq!(
            state.store.get_backup(&b.id).await.unwrap().status,
            BackupStatus::Running,
            "given up too early"
        );
        state.backdate_task_progress(&silent.id, TASK_SILENCE);
        state.backdate_task_progress(&talking.id, TASK_SILENCE);
        state.task_progressed(&talking.id);
        sweep(&state, false).await.unwrap();

        let b = until(&state, &b.id, |b| b.status != BackupStatus::Running).await;
        assert_eq!(b.status, BackupStatus::Failed);
        let why = b.error.unwrap();
        assert!(
            why.contains("node n1 stopped working on the backup task") && why.contains("90 seconds"),
            "{why}"
        );
        assert_eq!(state.store.get_db_task(&talking.id).await.unwrap().status, DbTaskStatus::Pending);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_interrupted_verification_runs_again() {
        let (state, dir) = state().await;
        let db = db(&state).await;
        let b = start_backup(&state, &db, BackupTrigger::Manual).await.unwrap();
        state
            .store
            .finish_db_task(
                &open_task(&state, &b.id, DbTaskKind::Backup).await.id,
                DbTaskStatus::Done,
                None,
                &json!({}),
            )
            .await
            .unwrap();
        // Stored with a local copy, and verification marked running by a run that then died.
        let path = state.backup_storage.local_path(&b);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"dump").unwrap();
        let (size, sha) = crate::backups::storage::digest_file(&path).await.unwrap();
        let stored = Backup {
            status: BackupStatus::Stored,
            size_bytes: Some(size),
            sha256: Some(sha),
            locations: vec![format!("local:{}", path.display())],
            ..b.clone()
        };
        state.store.finish_backup(&stored).await.unwrap();
        state.store.set_verification(&b.id, Verification::Running, None).await.unwrap();

        recover(&state).await.unwrap();
        // Its copy checked out, so the restore drill is handed to the agent again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !state
            .store
            .open_db_tasks()
            .await
            .unwrap()
            .iter()
            .any(|t| t.backup == b.id && t.kind == DbTaskKind::Verify)
        {
            assert!(Instant::now() < deadline, "the verification did not run again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(state.store.get_backup(&b.id).await.unwrap().verification, Verification::Running);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn retention_keeps_a_backup_a_restore_still_needs() {
        let (state, dir) = state().await;
        let db = db(&state).await;
        let mut ids = Vec::new();
        for started_at in ["2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z"] {
            let b = start_backup(&state, &db, BackupTrigger::Manual).await.unwrap();
            let task = open_task(&state, &b.id, DbTaskKind::Backup).await;
            state.store.finish_db_task(&task.id, DbTaskStatus::Done, None, &json!({})).await.unwrap();
            let b = Backup { status: BackupStatus::Stored, started_at: started_at.into(), ..b };
            state.store.delete_backup(&b.id).await.unwrap();
            state.store.insert_backup(&b).await.unwrap();
            state.store.finish_backup(&b).await.unwrap();
            state.store.set_verification(&b.id, Verification::Ok, None).await.unwrap();
            ids.push(b.id);
        }
        // keep_count is 1: the older one goes, unless a restore refers to it.
        let older = state.store.get_backup(&ids[0]).await.unwrap();
        let restore = start_restore(&state, &db, &older, true).await.unwrap();
        retention(&state, "shop", "production").await.unwrap();
        assert!(state.store.get_backup(&ids[0]).await.is_ok(), "deleted while a restore needs it");
        state.store.finish_db_task(&restore.id, DbTaskStatus::Done, None, &json!({})).await.unwrap();
        retention(&state, "shop", "production").await.unwrap();
        assert!(state.store.get_backup(&ids[0]).await.is_err(), "kept after the restore ended");
        assert!(state.store.get_backup(&ids[1]).await.is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The answers users get: each refusal is of the kind that says what to do about it.
    #[tokio::test]
    async fn refusals_say_what_kind_they_are() {
        use crate::error::DomainError;
        use protocol::api::StartRestore;
        let (state, dir) = state().await;
        let missing = crate::backups::verify(&state, "shop", "production", "nope").await;
        assert!(matches!(missing, Err(DomainError::NotFound(_))), "{missing:?}");
        let b = start_backup(&state, &db(&state).await, BackupTrigger::Manual).await.unwrap();
        let busy = start_backup(&state, &db(&state).await, BackupTrigger::Manual).await;
        assert!(matches!(busy, Err(DomainError::Conflict(_))), "{busy:?}");
        let unstored = crate::backups::verify(&state, "shop", "production", &b.id).await;
        assert!(matches!(unstored, Err(DomainError::Invalid(_))), "{unstored:?}");
        let other_env = crate::backups::verify(&state, "shop", "staging", &b.id).await;
        assert!(matches!(other_env, Err(DomainError::NotFound(_))), "{other_env:?}");
        let req = StartRestore { backup: b.id.clone(), confirm: true, to_new: true, to_time: None };
        let both = crate::backups::restore(&state, "u", "shop", "production", &req).await;
        assert!(matches!(both, Err(DomainError::Invalid(_))), "{both:?}");
        let psql = PsqlCommand { args: vec![], input: String::new(), replica: true };
        let no_replica = crate::backups::psql(&state, "shop", "production", psql).await;
        assert!(matches!(no_replica, Err(DomainError::Invalid(_))), "{no_replica:?}");
        let stranger = crate::backups::checked_copy(&state, "n2", &b.id).await;
        assert!(matches!(stranger, Err(DomainError::Forbidden(_))), "{:?}", stranger.err());
        let _ = std::fs::remove_dir_all(dir);
    }
}

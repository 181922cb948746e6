//! Backups of managed databases, end to end: starting one (from the replica when there is one),
//! turning the agent's upload into a stored backup with a manifest, proving it by a restore into
//! a throwaway container, restores, retention, the schedule, and loud events when any of it fails.
//! `recovery` makes sure none of it stays running after a crash, a lost agent or a hung store.

mod import;
mod pitr;
mod recovery;
mod restores;
pub mod storage;

use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::unix_now;
use crate::store::{DatabaseRow, DbTaskRow};
use anyhow::Context;
use protocol::agent::{DbRole, DbTaskKind, DbTaskParams, DbTaskResult, DbTaskStatus};
use protocol::api::{Backup, BackupKind, BackupStatus, BackupTrigger, PsqlCommand, Verification};
use serde_json::json;
use std::collections::BTreeMap;

pub use import::import;
pub use pitr::{archive, delete_app_archive, receive_wal, restore_to_time, start_base_backup, wal_for_task};
pub use recovery::{recover, scheduler};
use restores::{awaited_backup_ended, settle_waiting};
pub use restores::{restore, start_restore};
pub use storage::{receive_file, BackupStorage, CheckedCopy};

/// Default schedule of a new database: daily at 03:00 UTC.
pub const DEFAULT_SCHEDULE: &str = "0 3 * * *";

/// When a backup started, in unix seconds (retention and schedule arithmetic).
pub fn unix_of(b: &Backup) -> i64 {
    crate::store::unix_seconds(&b.started_at).unwrap_or(0)
}

fn rfc3339(unix: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).ok()?;
    t.format(&time::format_description::well_known::Rfc3339).ok()
}

/// Backup ids sort by time and are short enough to type: `20261126-130501-k3f9` (state
/// backups' file names too).
pub(crate) fn new_id() -> String {
    let t = time::OffsetDateTime::now_utc();
    let tag: String = crate::tokens::random_hex(4);
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}-{tag}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Validates a schedule: a cron expression or `off`.
pub fn parse_schedule(s: &str) -> Result<Option<crate::cron::Schedule>, String> {
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    s.parse::<crate::cron::Schedule>().map(Some)
}

/// When a database's next scheduled backup is due (unix seconds), if it has a schedule.
pub fn next_due(db: &DatabaseRow) -> Option<i64> {
    let schedule = parse_schedule(&db.backup_schedule).ok()??;
    let from = if db.last_scheduled_at > 0 {
        db.last_scheduled_at
    } else {
        crate::store::unix_seconds(&db.created_at).unwrap_or_else(unix_now)
    };
    schedule.next_after(from)
}

pub fn next_due_text(db: &DatabaseRow) -> Option<String> {
    next_due(db).and_then(rfc3339)
}

/// A task for the agent of `role`'s node; `waiting` holds it back from the agent until
/// [`Store::release_db_task`](crate::store::Store::release_db_task).
async fn task(
    state: &AppState,
    db: &DatabaseRow,
    kind: DbTaskKind,
    role: DbRole,
    backup: &str,
    params: DbTaskParams,
    waiting: bool,
) -> anyhow::Result<DbTaskRow> {
    let node = if role == DbRole::Replica { db.replica_node.clone() } else { db.node.clone() };
    let t = DbTaskRow {
        id: format!("{}-{}", kind.as_str(), new_id()),
        kind,
        app: db.app.clone(),
        env: db.env.clone(),
        node,
        role,
        backup: backup.to_string(),
        params,
        status: if waiting { DbTaskStatus::Waiting } else { DbTaskStatus::Pending },
        error: None,
        result: json!({}),
        created_at: crate::store::now(),
        finished_at: None,
    };
    state.store.insert_db_task(&t).await?;
    state.bump();
    Ok(t)
}

/// One dump of a database at a time (a base backup, which pauses nothing and only copies the
/// primary's files, runs beside anything); the conflict says what to do (`then`).
pub async fn refuse_while_running(state: &AppState, db: &DatabaseRow, then: &str) -> Result<()> {
    refuse_while_running_of(state, db, BackupKind::Dump, then).await
}

/// [`refuse_while_running`] for backups of `kind`.
async fn refuse_while_running_of(
    state: &AppState,
    db: &DatabaseRow,
    kind: BackupKind,
    then: &str,
) -> Result<()> {
    let backups = state.store.list_backups(&db.app, &db.env).await?;
    match backups.into_iter().find(|b| b.status == BackupStatus::Running && b.kind == kind) {
        Some(b) => Err(DomainError::Conflict(format!(
            "backup {} of {}/{} is still running; {then}",
            b.id, db.app, db.env
        ))),
        None => Ok(()),
    }
}

/// Starts a backup: from the replica when it is healthy (the primary is not loaded), else from
/// the primary, saying so in the log and the backup's `source`.
pub async fn start_backup(state: &AppState, db: &DatabaseRow, trigger: BackupTrigger) -> Result<Backup> {
    refuse_while_running(state, db, "wait for it or follow it with `paas db backups`").await?;
    let role = dump_source(state, db);
    let row = begin_backup(state, db, trigger, role, BackupKind::Dump, None).await?;
    tracing::info!(app = %db.app, env = %db.env, backup = %row.id, source = %role, %trigger, "backup started");
    Ok(row)
}

/// Where a dump is taken: the replica when it is healthy, else the primary (logged).
fn dump_source(state: &AppState, db: &DatabaseRow) -> DbRole {
    let replica = db.docker_names().database(DbRole::Replica.as_str());
    let replica_ok = db.replicas > 0 && state.db_status(&replica).is_some_and(|s| s.healthy);
    if !replica_ok {
        let why = if db.replicas > 0 { "its replica is not healthy" } else { "it has no replica" };
        tracing::warn!(app = %db.app, env = %db.env, "backing up from the primary: {why}");
    }
    if replica_ok {
        DbRole::Replica
    } else {
        DbRole::Primary
    }
}

/// Records a running backup of `kind` from the server of `role` and hands its task to that
/// node: a dump, a base backup, or (`recover` given) the recovery whose dump it is. No check
/// that another backup runs: the callers make it.
async fn begin_backup(
    state: &AppState,
    db: &DatabaseRow,
    trigger: BackupTrigger,
    role: DbRole,
    kind: BackupKind,
    recover: Option<DbTaskParams>,
) -> Result<Backup> {
    let row = new_backup(db, trigger, role, kind);
    // Busy until its task exists, so the sweep never takes the new row for abandoned work.
    let _busy = state.busy_wait(format!("backup:{}", row.id)).await;
    state.store.insert_backup(&row).await?;
    let (task_kind, params) = match (recover, kind) {
        (Some(params), _) => (DbTaskKind::Recover, params),
        (None, BackupKind::Base) => (DbTaskKind::BaseBackup, DbTaskParams::default()),
        (None, BackupKind::Dump) => (DbTaskKind::Backup, DbTaskParams::default()),
    };
    task(state, db, task_kind, role, &row.id, params, false).await?;
    Ok(row)
}

/// A running backup of `db` of `kind`, from the server of `role`, not yet in the store.
fn new_backup(db: &DatabaseRow, trigger: BackupTrigger, role: DbRole, kind: BackupKind) -> Backup {
    Backup {
        id: new_id(),
        app: db.app.clone(),
        env: db.env.clone(),
        trigger,
        source: role,
        node: if role == DbRole::Replica { db.replica_node.clone() } else { db.node.clone() },
        status: BackupStatus::Running,
        error: None,
        size_bytes: None,
        sha256: None,
        tables: BTreeMap::new(),
        locations: Vec::new(),
        started_at: crate::store::now(),
        finished_at: None,
        verification: Verification::Pending,
        verification_error: None,
        verified_at: None,
        kind,
        wal_start: String::new(),
    }
}

/// Something failed that a person must hear about: an error log and a platform event.
async fn alarm(state: &AppState, app: &str, env: &str, kind: &str, message: &str) {
    tracing::error!(app, env, event = kind, "{message}");
    if let Err(e) = state.store.add_event(app, env, kind, "critical", message).await {
        tracing::error!(app, env, error = %e, "recording an event failed");
    }
}

/// Something went as it should, worth a line in the app's log: a platform event.
async fn note(state: &AppState, app: &str, env: &str, kind: &str, message: &str) {
    if let Err(e) = state.store.add_event(app, env, kind, "info", message).await {
        tracing::error!(app, env, error = %e, "recording an event failed");
    }
}

/// A task ended (its agent reported, or it was given up on): records it and moves the backup,
/// verification or restore along in the background (storing a backup copies it to S3, which may
/// take minutes, and must not hang on the agent's request).
pub async fn task_finished(state: &AppState, t: &DbTaskRow, r: &DbTaskResult) -> anyhow::Result<()> {
    if !t.status.is_open() {
        return Ok(()); // a retried report
    }
    let status = if r.error.is_none() { DbTaskStatus::Done } else { DbTaskStatus::Failed };
    let mut result = t.result.clone();
    result["output"] = json!(r.output);
    result["exit_code"] = json!(r.exit_code);
    // Busy before the task ends in the store, so the sweep never takes the step for abandoned.
    let busy = match t.kind {
        DbTaskKind::Backup | DbTaskKind::BaseBackup => {
            Some(state.busy_wait(format!("backup:{}", t.backup)).await)
        }
        DbTaskKind::Recover if t.params.dump => Some(state.busy_wait(format!("backup:{}", t.backup)).await),
        DbTaskKind::Verify | DbTaskKind::Recover => {
            Some(state.busy_wait(format!("verify:{}", t.backup)).await)
        }
        DbTaskKind::Restore | DbTaskKind::Psql => None,
    };
    if !state.store.finish_db_task(&t.id, status, r.error.as_deref(), &result).await? {
        return Ok(()); // a retried report
    }
    state.bump();
    state.events_changed();
    let (bg, t, r) = (state.clone(), t.clone(), r.clone());
    state.spawn(async move {
        let _busy = busy;
        if let Err(e) = task_follow_up(&bg, &t, &r).await {
            let error = format!("{e:#}");
            tracing::error!(app = %t.app, env = %t.env, task = %t.id, error, "moving a finished database task along failed; the sweep ends what it left");
        }
        bg.bump();
        bg.events_changed();
    });
    Ok(())
}

async fn task_follow_up(state: &AppState, t: &DbTaskRow, r: &DbTaskResult) -> anyhow::Result<()> {
    match t.kind {
        DbTaskKind::Backup | DbTaskKind::BaseBackup => backup_finished(state, &t.backup, r).await,
        DbTaskKind::Recover if t.params.dump => backup_finished(state, &t.backup, r).await,
        DbTaskKind::Verify | DbTaskKind::Recover => verify_finished(state, &t.backup, r).await,
        DbTaskKind::Restore => {
            let outcome = r.error.as_deref().unwrap_or("ok");
            tracing::info!(app = %t.app, env = %t.env, backup = %t.backup, outcome, "restore finished");
            match &r.error {
                Some(e) => {
                    let msg = format!("restoring backup {} failed: {e}", t.backup);
                    alarm(state, &t.app, &t.env, "db.restore.failed", &msg).await;
                }
                None => {
                    let msg = format!("Backup {} restored", t.backup);
                    note(state, &t.app, &t.env, "db.restore.done", &msg).await;
                }
            }
            Ok(())
        }
        DbTaskKind::Psql => Ok(()),
    }
}

async fn backup_finished(state: &AppState, id: &str, r: &DbTaskResult) -> anyhow::Result<()> {
    let mut b = state.store.get_backup(id).await?;
    b.tables = r.tables.clone();
    b.wal_start = r.wal_start.clone();
    // Retention deletes WAL before it: only `<system id>/<segment>` is taken.
    let sound = |w: &str| {
        w.split_once('/').is_some_and(|(id, seg)| {
            !id.is_empty()
                && id.bytes().all(|c| c.is_ascii_digit())
                && seg.len() == 24
                && seg.bytes().all(|c| c.is_ascii_hexdigit())
        })
    };
    if b.kind == BackupKind::Base && !sound(&b.wal_start) {
        b.wal_start = String::new();
    }
    let stored = match &r.error {
        Some(e) => Err(anyhow::anyhow!("{e}")),
        None => {
            async {
                anyhow::ensure!(
                    b.size_bytes.is_some(),
                    "the agent reported success but its upload never arrived"
                );
                anyhow::ensure!(
                    b.kind == BackupKind::Dump || !b.wal_start.is_empty(),
                    "the agent did not say where the base backup's WAL starts"
                );
                let format = match b.kind {
                    BackupKind::Dump => "pg_dump custom format (-Fc, zlib-compressed)",
                    BackupKind::Base => {
                        "pg_basebackup tar of the data directory (gzip), WAL from the archive"
                    }
                };
                let manifest = json!({
                    "id": b.id, "app": b.app, "env": b.env, "trigger": b.trigger, "source": b.source,
                    "node": b.node, "started_at": b.started_at, "finished_at": crate::store::now(),
                    "format": format, "kind": b.kind, "wal_start": b.wal_start,
                    "size_bytes": b.size_bytes, "sha256": b.sha256,
                    "tables": b.tables, "total_rows": b.tables.values().sum::<u64>(),
                });
                state.backup_storage.finalize(&b, &manifest).await
            }
            .await
        }
    };
    match stored {
        Ok(locations) => {
            b.status = BackupStatus::Stored;
            b.locations = locations;
            state.store.finish_backup(&b).await?;
            tracing::info!(app = %b.app, env = %b.env, backup = %b.id, size = b.size_bytes, "backup stored");
            let (size, trigger) = (b.size_bytes.unwrap_or(0), b.trigger.as_str());
            let msg = format!("Backup {} stored ({trigger}, {size} bytes)", b.id);
            note(state, &b.app, &b.env, "db.backup.done", &msg).await;
            awaited_backup_ended(state, &b).await?;
            // Prove it before anything old is let go.
            start_verify(state, &b).await?;
        }
        Err(e) => {
            state.backup_storage.discard(&b).await;
            b.status = BackupStatus::Failed;
            b.error = Some(format!("{e:#}"));
            state.store.finish_backup(&b).await?;
            backup_failed(state, &b).await?;
        }
    }
    Ok(())
}

/// A backup ended without being stored: a loud event, and restores waiting for it fail.
async fn backup_failed(state: &AppState, b: &Backup) -> anyhow::Result<()> {
    let why = b.error.as_deref().unwrap_or("unknown error");
    let msg = format!("backup {} of {}/{} FAILED: {why}", b.id, b.app, b.env);
    alarm(state, &b.app, &b.env, "db.backup.failed", &msg).await;
    awaited_backup_ended(state, b).await
}

/// Proves a backup: checks every copy's checksum, then restores it into a throwaway container
/// and compares the row counts with the manifest. Returns once it is marked running; the checks
/// (which read the S3 copy whole) go on in the background.
pub async fn start_verify(state: &AppState, b: &Backup) -> Result<()> {
    let busy = state.busy_wait(format!("verify:{}", b.id)).await;
    {
        // Retention holds this while it decides, so it never deletes a backup being verified.
        let _use = state.busy_wait(format!("use:{}", b.id)).await;
        state.store.get_backup(&b.id).await?;
        state.store.set_verification(&b.id, Verification::Running, None).await?;
    }
    state.bump();
    verify_in_background(state, b, busy);
    Ok(())
}

/// Runs a verification marked running (holding its busy mark) in the background.
fn verify_in_background(state: &AppState, b: &Backup, busy: crate::state::Busy) {
    let (bg, b) = (state.clone(), b.clone());
    state.spawn(async move {
        let _busy = busy;
        if let Err(e) = run_verify(&bg, &b).await {
            tracing::error!(app = %b.app, env = %b.env, backup = %b.id, error = %format!("{e:#}"), "starting a verification failed; the sweep runs it again");
        }
    });
}

/// The checks before the restore drill; whatever stops them fails the verification with why.
async fn run_verify(state: &AppState, b: &Backup) -> anyhow::Result<()> {
    let started = async {
        state.backup_storage.check_all(b).await?;
        let db = state.store.get_database(&b.app, &b.env).await?;
        // The restore drill costs CPU and disk: on the replica's node, like the backup, when
        // there is one (the throwaway server only borrows the spec's image and names).
        if b.kind == BackupKind::Base {
            return pitr::start_drill(state, &db, b).await;
        }
        let role = if db.replicas > 0 { DbRole::Replica } else { DbRole::Primary };
        task(state, &db, DbTaskKind::Verify, role, &b.id, DbTaskParams::default(), false).await
    }
    .await;
    match started {
        Ok(_) => Ok(()),
        Err(e) => verification_failed(state, b, &format!("{e:#}")).await,
    }
}

async fn verification_failed(state: &AppState, b: &Backup, why: &str) -> anyhow::Result<()> {
    state.store.set_verification(&b.id, Verification::Failed, Some(why)).await?;
    let msg = format!("backup {} of {}/{} FAILED verification: {why}", b.id, b.app, b.env);
    alarm(state, &b.app, &b.env, "db.verify.failed", &msg).await;
    // An import's restore waits for this proof.
    awaited_backup_ended(state, b).await?;
    state.bump();
    Ok(())
}

/// What differs between the manifest's row counts and a restored copy's, if anything.
pub fn compare_counts(manifest: &BTreeMap<String, u64>, restored: &BTreeMap<String, u64>) -> Option<String> {
    let mut problems = Vec::new();
    for (table, rows) in manifest {
        match restored.get(table) {
            None => problems.push(format!("table {table} is missing")),
            Some(n) if n != rows => {
                problems.push(format!("table {table} has {n} rows, the manifest says {rows}"))
            }
            Some(_) => {}
        }
    }
    for table in restored.keys().filter(|t| !manifest.contains_key(*t)) {
        problems.push(format!("table {table} is not in the manifest"));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

async fn verify_finished(state: &AppState, id: &str, r: &DbTaskResult) -> anyhow::Result<()> {
    let b = state.store.get_backup(id).await?;
    let problem = match &r.error {
        Some(e) => Some(format!("the restore failed: {e}")),
        // A base backup is fuzzy (taken while the server writes): its proof is a recovery that
        // reaches a consistent state and answers queries.
        None if b.kind == BackupKind::Base => None,
        // A dump from elsewhere came with no manifest: the drill's counts become it.
        None if b.trigger == BackupTrigger::Imported => None,
        None => compare_counts(&b.tables, &r.tables),
    };
    match problem {
        Some(why) => verification_failed(state, &b, &why).await?,
        None => {
            if b.trigger == BackupTrigger::Imported {
                state.store.set_backup_tables(&b.id, &r.tables).await?;
            }
            state.store.set_verification(&b.id, Verification::Ok, None).await?;
            let rows: u64 = r.tables.values().sum();
            tracing::info!(app = %b.app, env = %b.env, backup = %b.id, tables = r.tables.len(), rows, "backup verified by a restore");
            let msg = match b.kind {
                BackupKind::Dump => format!(
                    "Backup {} verified: a test restore has all {} tables, {rows} rows",
                    b.id,
                    r.tables.len()
                ),
                BackupKind::Base => format!(
                    "Base backup {} verified: recovered with the WAL archive to its end, {} tables, {rows} rows",
                    b.id,
                    r.tables.len()
                ),
            };
            note(state, &b.app, &b.env, "db.verify.done", &msg).await;
            awaited_backup_ended(state, &b).await?;
            retention(state, &b.app, &b.env).await?;
        }
    }
    Ok(())
}

/// Keeps at most `keep_count` stored backups and none older than `keep_days`, but never the
/// newest verified one, nor one a queued or running restore or verification refers to; failed
/// backups (which hold no data) go after a day.
pub async fn retention(state: &AppState, app: &str, env: &str) -> anyhow::Result<()> {
    let db = state.store.get_database(app, env).await?;
    let all = state.store.list_backups(app, env).await?;
    // Dumps and base backups are kept by the same rules, each kind on its own.
    let newest_verified = |kind: BackupKind| {
        all.iter()
            .find(|b| {
                b.kind == kind && b.status == BackupStatus::Stored && b.verification == Verification::Ok
            })
            .map(|b| b.id.clone())
    };
    let newest_verified = [newest_verified(BackupKind::Dump), newest_verified(BackupKind::Base)];
    let now = unix_now();
    let mut kept = BTreeMap::<&str, u32>::new();
    for b in &all {
        let old = now - unix_of(b) > i64::from(db.keep_days) * 86_400;
        let drop = match b.status {
            BackupStatus::Stored => {
                let kept = kept.entry(b.kind.as_str()).or_default();
                *kept += 1;
                !newest_verified.contains(&Some(b.id.clone())) && (*kept > db.keep_count || old)
            }
            BackupStatus::Failed => now - unix_of(b) > 86_400,
            BackupStatus::Running => false,
        };
        if !drop {
            continue;
        }
        // Decided under the same guard restores and verifications take to start.
        let _use = state.busy_wait(format!("use:{}", b.id)).await;
        if let Some(user) = in_use(state, &b.id).await? {
            tracing::info!(app, env, backup = %b.id, user, "retention keeps a backup in use");
            continue;
        }
        tracing::info!(app, env, backup = %b.id, "retention: deleting backup");
        state.backup_storage.delete(b).await.with_context(|| format!("deleting backup {}", b.id))?;
        state.store.delete_backup(&b.id).await?;
    }
    pitr::wal_retention(state, &db, &state.store.list_backups(app, env).await?).await
}

/// What still needs backup `id`: a queued or running restore or verification.
async fn in_use(state: &AppState, id: &str) -> anyhow::Result<Option<String>> {
    let b = state.store.get_backup(id).await?;
    if b.verification == Verification::Running || state.is_busy(&format!("verify:{id}")) {
        return Ok(Some("its verification".into()));
    }
    let open = state.store.open_db_tasks().await?;
    Ok(open
        .iter()
        .find(|t| {
            (t.backup == id
                && matches!(t.kind, DbTaskKind::Restore | DbTaskKind::Verify | DbTaskKind::Recover))
                || t.params.base_backup == id
        })
        .map(|t| format!("task {}", t.id)))
}

/// Runs psql in a database's container.
pub async fn start_psql(state: &AppState, db: &DatabaseRow, req: PsqlCommand) -> anyhow::Result<DbTaskRow> {
    let role = if req.replica { DbRole::Replica } else { DbRole::Primary };
    let params = DbTaskParams { psql_args: req.args, input: req.input, ..Default::default() };
    task(state, db, DbTaskKind::Psql, role, "", params, false).await
}

// --- what users and agents ask for ---

/// A backup of `app`/`env`, or not found (ids are global; users name them per environment).
pub async fn env_backup(state: &AppState, app: &str, env: &str, id: &str) -> Result<Backup> {
    match state.store.get_backup(id).await {
        Ok(b) if b.app == app && b.env == env => Ok(b),
        Ok(_) | Err(crate::store::StoreError::NotFound(_)) => Err(DomainError::NotFound(format!(
            "{app}/{env} has no backup {id}; `paas db backups` lists them"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A checked copy of stored backup `id` of `app`/`env` for `caller` to download (`paas db
/// backups download`). Recorded in the audit log: a dump holds all of the app's data.
pub async fn download(
    state: &AppState,
    caller: &crate::access::Caller,
    app: &str,
    env: &str,
    id: &str,
) -> Result<(Backup, CheckedCopy)> {
    let b = env_backup(state, app, env, id).await?;
    if b.status != BackupStatus::Stored {
        return Err(DomainError::Invalid(format!(
            "backup {id} is {}, so there is no dump to download",
            b.status
        )));
    }
    let copy =
        state.backup_storage.checked_copy(&b).await.map_err(|e| DomainError::Invalid(format!("{e:#}")))?;
    let detail = format!("backup {id}");
    let entry = crate::store::AuditRecord {
        user: &caller.user,
        action: "db.backup.download",
        app,
        env,
        addr: &caller.addr,
        outcome: "ok",
        detail: &detail,
    };
    state.store.record_audit(&entry).await?;
    tracing::info!(app, env, backup = %id, user = %caller.user, "backup downloaded");
    Ok((b, copy))
}

/// A database task of `app`/`env`, or not found.
pub async fn env_task(state: &AppState, app: &str, env: &str, id: &str) -> Result<DbTaskRow> {
    let t = state.store.get_db_task(id).await?;
    if t.app != app || t.env != env {
        return Err(DomainError::NotFound(format!("{app}/{env} has no database task {id}")));
    }
    Ok(t)
}

/// Verifies a stored backup of `app`/`env` again (see [`start_verify`]).
pub async fn verify(state: &AppState, app: &str, env: &str, id: &str) -> Result<Backup> {
    let b = env_backup(state, app, env, id).await?;
    if b.verification == Verification::Running {
        return Err(DomainError::Conflict(format!("backup {id} is being verified already")));
    }
    if b.status != BackupStatus::Stored {
        let why = format!("backup {id} is {}, so there is nothing to verify", b.status);
        return Err(DomainError::Invalid(why));
    }
    start_verify(state, &b).await?;
    Ok(state.store.get_backup(id).await?)
}

/// Runs a psql command of a user in the database of `app`/`env`, on its primary or replica.
pub async fn psql(state: &AppState, app: &str, env: &str, req: PsqlCommand) -> Result<DbTaskRow> {
    let db = state.store.get_database(app, env).await?;
    if db.replicas == 0 && req.replica {
        return Err(DomainError::Invalid(format!("{app}/{env} has no replica")));
    }
    Ok(start_psql(state, &db, req).await?)
}

/// Refuses a node that holds no unfinished task of one of `kinds` for backup `id`: only the
/// node dumping a backup uploads it, only one verifying or restoring it downloads it.
async fn node_works_on(state: &AppState, node: &str, id: &str, kinds: &[DbTaskKind]) -> Result<Backup> {
    let tasks = state.store.open_tasks_for_backup(id, node).await?;
    if !tasks.iter().any(|t| kinds.contains(&t.kind)) {
        let kinds = kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(" or ");
        return Err(DomainError::Forbidden(format!(
            "node {node:?} holds no {kinds} task for backup {id}, so it cannot read or write that backup's data"
        )));
    }
    Ok(state.store.get_backup(id).await?)
}

/// Takes in the dump of backup `id` that `node` streams; returns its size and sha256.
pub async fn receive<E: std::fmt::Display>(
    state: &AppState,
    node: &str,
    id: &str,
    body: impl futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
) -> Result<(u64, String)> {
    let b =
        node_works_on(state, node, id, &[DbTaskKind::Backup, DbTaskKind::BaseBackup, DbTaskKind::Recover])
            .await?;
    if b.status != BackupStatus::Running {
        return Err(DomainError::Conflict(format!("backup {id} is {}, not running", b.status)));
    }
    let (size, sha) = state.backup_storage.receive(&b, body).await?;
    tracing::info!(app = %b.app, env = %b.env, backup = %id, size, "backup upload received");
    // Arrived whole: its size and checksum are recorded.
    state.store.finish_backup(&Backup { size_bytes: Some(size), sha256: Some(sha.clone()), ..b }).await?;
    Ok((size, sha))
}

/// A checked copy of backup `id` for `node` to verify or restore; a corrupt or truncated
/// backup is refused with the reason.
pub async fn checked_copy(state: &AppState, node: &str, id: &str) -> Result<CheckedCopy> {
    // A recover task reads its base backup, which is not the task's own backup.
    let recovering = state
        .store
        .open_db_tasks()
        .await?
        .into_iter()
        .any(|t| t.node == node && t.kind == DbTaskKind::Recover && t.params.base_backup == id);
    let b = if recovering {
        state.store.get_backup(id).await?
    } else {
        node_works_on(state, node, id, &[DbTaskKind::Verify, DbTaskKind::Restore]).await?
    };
    state.backup_storage.checked_copy(&b).await.map_err(|e| DomainError::Invalid(format!("{e:#}")))
}

/// What `paas db info` warns about: the newest backup failed, a kept backup failed its
/// verification, no backup has been proven by a restore, or none has been for two scheduled
/// runs (backups that silently stopped).
pub fn warnings(db: &DatabaseRow, backups: &[Backup]) -> Vec<String> {
    let mut out = Vec::new();
    let schedule = parse_schedule(&db.backup_schedule).ok().flatten();
    let last_ok = backups.iter().find(|b| b.verification == Verification::Ok);
    if let (Some(schedule), Some(b)) = (schedule, last_ok) {
        let overdue = schedule.next_after(unix_of(b)).and_then(|t| schedule.next_after(t));
        if overdue.is_some_and(|t| unix_now() > t + 3600) {
            out.push(format!(
                "the newest verified backup {} is older than two scheduled runs; scheduled backups are not completing",
                b.id
            ));
        }
    }
    if let Some(b) = backups
        .iter()
        .find(|b| b.status != BackupStatus::Running)
        .filter(|b| b.status == BackupStatus::Failed)
    {
        out.push(format!(
            "the last backup {} FAILED: {}",
            b.id,
            b.error.as_deref().unwrap_or("unknown error")
        ));
    }
    for b in
        backups.iter().filter(|b| b.status == BackupStatus::Stored && b.verification == Verification::Failed)
    {
        let why = b.verification_error.as_deref().unwrap_or("unknown error");
        out.push(format!("backup {} FAILED verification: {why}", b.id));
    }
    if !backups.iter().any(|b| b.verification == Verification::Ok) {
        out.push(
            "no backup has been verified by a restore yet (`paas db backup` takes and verifies one)".into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_compare_table_by_table() {
        let m = BTreeMap::from([("public.a".to_string(), 3), ("public.b".to_string(), 0)]);
        assert_eq!(compare_counts(&m, &m.clone()), None);
        let short = BTreeMap::from([("public.a".to_string(), 2), ("public.c".to_string(), 1)]);
        let why = compare_counts(&m, &short).unwrap();
        assert!(why.contains("public.a has 2 rows, the manifest says 3"), "{why}");
        assert!(why.contains("public.b is missing"), "{why}");
        assert!(why.contains("public.c is not in the manifest"), "{why}");
    }

    #[test]
    fn schedules_are_cron_or_off() {
        assert!(parse_schedule("off").unwrap().is_none());
        assert!(parse_schedule("*/5 * * * *").unwrap().is_some());
        assert!(parse_schedule("61 * * * *").unwrap_err().contains("minute"));
    }
}

//! Backups (with their manifest figures and verification) and the database tasks agents run.

use super::{now, BindKey, Result, Store, StoreError};
use protocol::agent::{DbRole, DbTaskKind, DbTaskParams, DbTaskStatus};
use protocol::api::{Backup, BackupKind, BackupStatus, BackupTrigger, DbTaskView, Verification};
use sqlx::types::Json;
use std::collections::BTreeMap;

/// A `backups` row; [`Backup`] is what the API shows of it.
#[derive(sqlx::FromRow)]
struct BackupRecord {
    id: String,
    app: String,
    env: String,
    #[sqlx(try_from = "String")]
    trigger: BackupTrigger,
    #[sqlx(try_from = "String")]
    source: DbRole,
    node: String,
    #[sqlx(try_from = "String")]
    status: BackupStatus,
    error: Option<String>,
    #[sqlx(try_from = "super::OptNum")]
    size_bytes: Option<u64>,
    sha256: Option<String>,
    #[sqlx(json)]
    tables: BTreeMap<String, u64>,
    #[sqlx(json)]
    locations: Vec<String>,
    started_at: String,
    finished_at: Option<String>,
    #[sqlx(try_from = "String")]
    verify_status: Verification,
    verify_error: Option<String>,
    verified_at: Option<String>,
    #[sqlx(try_from = "String")]
    kind: BackupKind,
    wal_start: String,
}

impl From<BackupRecord> for Backup {
    fn from(r: BackupRecord) -> Self {
        Backup {
            id: r.id,
            app: r.app,
            env: r.env,
            trigger: r.trigger,
            source: r.source,
            node: r.node,
            status: r.status,
            error: r.error,
            size_bytes: r.size_bytes,
            sha256: r.sha256,
            tables: r.tables,
            locations: r.locations,
            started_at: r.started_at,
            finished_at: r.finished_at,
            verification: r.verify_status,
            verification_error: r.verify_error,
            verified_at: r.verified_at,
            kind: r.kind,
            wal_start: r.wal_start,
        }
    }
}

/// A database task: what the agent is given (`params`) and what came back (`result`, JSON).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DbTaskRow {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub kind: DbTaskKind,
    pub app: String,
    pub env: String,
    pub node: String,
    /// The server it runs against.
    #[sqlx(try_from = "String")]
    pub role: DbRole,
    pub backup: String,
    #[sqlx(json)]
    pub params: DbTaskParams,
    #[sqlx(try_from = "String")]
    pub status: DbTaskStatus,
    pub error: Option<String>,
    #[sqlx(json)]
    pub result: serde_json::Value,
    pub created_at: String,
    pub finished_at: Option<String>,
}

impl DbTaskRow {
    pub fn view(&self) -> DbTaskView {
        let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        DbTaskView {
            id: self.id.clone(),
            kind: self.kind,
            status: self.status,
            error: self.error.clone(),
            backup: (!self.backup.is_empty()).then(|| self.backup.clone()),
            safety_backup: s(&self.result, "safety_backup"),
            target_database: Some(self.params.target_database.clone()).filter(|d| !d.is_empty()),
            target_url: s(&self.result, "target_url"),
            output: s(&self.result, "output").unwrap_or_default(),
            exit_code: self.result.get("exit_code").and_then(|v| v.as_i64()),
            created_at: self.created_at.clone(),
            finished_at: self.finished_at.clone(),
        }
    }
}

impl Store {
    pub async fn insert_backup(&self, b: &Backup) -> Result<()> {
        exec!(self.pool, |ex| {
            sqlx::query(
            "INSERT INTO backups (id, app, env, trigger, source, node, status, started_at, created_unix, kind)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&b.id)
        .bind_env(&b.app, &b.env)
        .bind(b.trigger.as_str())
        .bind(b.source.as_str())
        .bind(&b.node)
        .bind(b.status.as_str())
        .bind(&b.started_at)
        .bind(crate::backups::unix_of(b))
        .bind(b.kind.as_str())
        .execute(ex)
        .await
        })?;
        Ok(())
    }

    /// Records how a backup ended: `stored` with its figures, or `failed` with why.
    pub async fn finish_backup(&self, b: &Backup) -> Result<()> {
        exec!(self.pool, |ex| {
            sqlx::query(
            "UPDATE backups SET status = $1, error = $2, size_bytes = $3, sha256 = $4, tables = $5, locations = $6,
                 finished_at = $7, wal_start = $8 WHERE id = $9",
        )
        .bind(b.status.as_str())
        .bind(&b.error)
        .bind(b.size_bytes.map(|v| v as i64))
        .bind(&b.sha256)
        .bind(Json(&b.tables))
        .bind(Json(&b.locations))
        .bind(now())
        .bind(&b.wal_start)
        .bind(&b.id)
        .execute(ex)
        .await
        })?;
        Ok(())
    }

    /// The row counts of a backup, once a restore drill counted them (an imported dump's).
    pub async fn set_backup_tables(
        &self,
        id: &str,
        tables: &std::collections::BTreeMap<String, u64>,
    ) -> Result<()> {
        exec!(self.pool, |ex| {
            sqlx::query("UPDATE backups SET tables = $1 WHERE id = $2")
                .bind(Json(tables))
                .bind(id)
                .execute(ex)
                .await
        })?;
        Ok(())
    }

    /// Fails a backup that is still running (a no-op once it has ended); true when it did.
    pub async fn fail_running_backup(&self, id: &str, error: &str) -> Result<bool> {
        let done = exec!(self.pool, |ex| {
            sqlx::query(
            "UPDATE backups SET status = 'failed', error = $1, finished_at = $2 WHERE id = $3 AND status = 'running'",
        )
        .bind(error)
        .bind(now())
        .bind(id)
        .execute(ex)
        .await
        })?;
        Ok(done.rows_affected() == 1)
    }

    /// Backups, on any environment, still being taken or verified, or stored and never verified.
    pub async fn unfinished_backups(&self) -> Result<Vec<Backup>> {
        let rows: Vec<BackupRecord> = on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM backups WHERE status = 'running' OR verify_status = 'running'
                 OR (status = 'stored' AND verify_status = 'pending') ORDER BY id",
        )
        .fetch_all(ex)
        .await)?;
        Ok(rows.into_iter().map(Backup::from).collect())
    }

    pub async fn set_verification(&self, id: &str, status: Verification, error: Option<&str>) -> Result<()> {
        let at = matches!(status, Verification::Ok | Verification::Failed).then(now);
        exec!(self.pool, |ex| sqlx::query(
            "UPDATE backups SET verify_status = $1, verify_error = $2, verified_at = $3 WHERE id = $4"
        )
        .bind(status.as_str())
        .bind(error)
        .bind(at)
        .bind(id)
        .execute(ex)
        .await)?;
        Ok(())
    }

    pub async fn get_backup(&self, id: &str) -> Result<Backup> {
        on!(self.pool, |ex| sqlx::query_as::<_, BackupRecord>("SELECT * FROM backups WHERE id = $1")
            .bind(id)
            .fetch_optional(ex)
            .await)?
        .map(Backup::from)
        .ok_or_else(|| StoreError::NotFound(format!("there is no backup {id}; `paas db backups` lists them")))
    }

    /// An environment's backups, newest first.
    pub async fn list_backups(&self, app: &str, env: &str) -> Result<Vec<Backup>> {
        let rows: Vec<BackupRecord> = on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM backups WHERE app = $1 AND env = $2 ORDER BY created_unix DESC, id DESC",
        )
        .bind_env(app, env)
        .fetch_all(ex)
        .await)?;
        Ok(rows.into_iter().map(Backup::from).collect())
    }

    /// Every backup of `app`, in all its environments (deleted ones too: backups outlive them).
    pub async fn app_backups(&self, app: &str) -> Result<Vec<Backup>> {
        let rows: Vec<BackupRecord> = on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM backups WHERE app = $1 ORDER BY created_unix DESC, id DESC"
        )
        .bind(app)
        .fetch_all(ex)
        .await)?;
        Ok(rows.into_iter().map(Backup::from).collect())
    }

    pub async fn delete_backup(&self, id: &str) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query("DELETE FROM backups WHERE id = $1").bind(id).execute(ex).await)?;
        Ok(())
    }

    pub async fn insert_db_task(&self, t: &DbTaskRow) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            "INSERT INTO db_tasks (id, kind, app, env, node, role, backup, params, status, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&t.id)
        .bind(t.kind.as_str())
        .bind_env(&t.app, &t.env)
        .bind(&t.node)
        .bind(t.role.as_str())
        .bind(&t.backup)
        .bind(Json(&t.params))
        .bind(t.status.as_str())
        .bind(now())
        .execute(ex)
        .await)?;
        Ok(())
    }

    pub async fn get_db_task(&self, id: &str) -> Result<DbTaskRow> {
        on!(self.pool, |ex| sqlx::query_as("SELECT * FROM db_tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(ex)
            .await)?
        .ok_or_else(|| StoreError::NotFound(format!("there is no database task {id}")))
    }

    pub async fn pending_db_tasks(&self, node: &str) -> Result<Vec<DbTaskRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM db_tasks WHERE node = $1 AND status = 'pending' ORDER BY created_at"
        )
        .bind(node)
        .fetch_all(ex)
        .await)?)
    }

    /// The unfinished tasks of `node` that work on `backup`: what entitles a node to upload or
    /// download that backup's data.
    pub async fn open_tasks_for_backup(&self, backup: &str, node: &str) -> Result<Vec<DbTaskRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM db_tasks WHERE backup = $1 AND node = $2 AND finished_at IS NULL"
        )
        .bind(backup)
        .bind(node)
        .fetch_all(ex)
        .await)?)
    }

    /// Tasks handed to agents that have not ended, on any node.
    pub async fn open_db_tasks(&self) -> Result<Vec<DbTaskRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM db_tasks WHERE status IN ('pending', 'waiting')"
        )
        .fetch_all(ex)
        .await)?)
    }

    /// Ends a pending task; false when it had already ended (a retried report).
    pub async fn finish_db_task(
        &self,
        id: &str,
        status: DbTaskStatus,
        error: Option<&str>,
        result: &serde_json::Value,
    ) -> Result<bool> {
        let done = exec!(self.pool, |ex| {
            sqlx::query(
            "UPDATE db_tasks SET status = $1, error = $2, result = $3, finished_at = $4 WHERE id = $5 AND status IN ('pending', 'waiting')",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(Json(result))
        .bind(now())
        .bind(id)
        .execute(ex)
        .await
        })?;
        Ok(done.rows_affected() == 1)
    }

    /// Hands a held-back task (a restore waiting for its safety backup) to its agent.
    pub async fn release_db_task(&self, id: &str) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            "UPDATE db_tasks SET status = 'pending' WHERE id = $1 AND status = 'waiting'"
        )
        .bind(id)
        .execute(ex)
        .await)?;
        Ok(())
    }

    /// Sets a task's result while it runs (a restore's safety backup, a new database's URL).
    pub async fn set_db_task_result(&self, id: &str, result: &serde_json::Value) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query("UPDATE db_tasks SET result = $1 WHERE id = $2")
            .bind(Json(result))
            .bind(id)
            .execute(ex)
            .await)?;
        Ok(())
    }
}

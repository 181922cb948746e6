//! One-off jobs (release phases, `paas run`): their assignment to a node, output and result.

use super::{now, Result, Store, StoreError};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub app: String,
    pub env: String,
    pub release: u32,
    pub node: String,
    pub kind: String,
    pub command: Vec<String>,
    pub done: bool,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
}

fn job_row(r: &sqlx::sqlite::SqliteRow) -> JobRow {
    JobRow {
        id: r.get("id"),
        app: r.get("app"),
        env: r.get("env"),
        release: r.get::<i64, _>("release") as u32,
        node: r.get("node"),
        kind: r.get("kind"),
        command: serde_json::from_str(&r.get::<String, _>("command")).unwrap_or_default(),
        done: r.get::<String, _>("status") == "done",
        exit_code: r.get("exit_code"),
        error: r.get("error"),
    }
}

impl Store {
    /// Records a job unless one with this id exists (a release phase is created once per
    /// release, whatever retries happen).
    pub async fn create_job(&self, job: &JobRow, created_by: &str) -> Result<()> {
        sqlx::query(
            "INSERT OR IGNORE INTO jobs (id, app, env, release, node, kind, command, status, created_at, created_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
        )
        .bind(&job.id)
        .bind(&job.app)
        .bind(&job.env)
        .bind(job.release)
        .bind(&job.node)
        .bind(&job.kind)
        .bind(serde_json::to_string(&job.command).unwrap_or_else(|_| "[]".into()))
        .bind(now())
        .bind(created_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_job(&self, id: &str) -> Result<JobRow> {
        sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| job_row(&r))
            .ok_or_else(|| StoreError::NotFound(format!("there is no run {id:?}")))
    }

    pub async fn pending_jobs(&self, node: &str) -> Result<Vec<JobRow>> {
        let rows =
            sqlx::query("SELECT * FROM jobs WHERE node = ? AND status = 'pending' ORDER BY created_at")
                .bind(node)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(job_row).collect())
    }

    pub async fn finish_job(&self, id: &str, exit_code: Option<i64>, error: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = 'done', exit_code = ?, error = ? WHERE id = ? AND status = 'pending'",
        )
        .bind(exit_code)
        .bind(error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn append_job_output(&self, id: &str, lines: &[String]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let mut seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM job_output WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        for line in lines {
            seq += 1;
            sqlx::query("INSERT INTO job_output (id, seq, text) VALUES (?, ?, ?)")
                .bind(id)
                .bind(seq)
                .bind(line)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Output lines after `after`, with the sequence number of the last one.
    pub async fn job_output_after(&self, id: &str, after: u64) -> Result<(Vec<String>, u64)> {
        let rows =
            sqlx::query("SELECT seq, text FROM job_output WHERE id = ? AND seq > ? ORDER BY seq LIMIT 1000")
                .bind(id)
                .bind(after as i64)
                .fetch_all(&self.pool)
                .await?;
        let next = rows.last().map_or(after, |r| r.get::<i64, _>("seq") as u64);
        Ok((rows.iter().map(|r| r.get("text")).collect(), next))
    }
}

//! One-off jobs (release phases, `paas run`): their assignment to a node, output and result.

use super::{now, BindKey, Result, Store, StoreError};
use sqlx::types::Json;

/// Output lines kept per job: the newest ones (a counter of the rest is implied by the first
/// kept sequence number). The agent sends at most a few thousand lines a second, so a run that
/// prints without end costs a bounded table, not a growing one.
pub const MAX_JOB_LINES: i64 = 10_000;
/// Finished jobs per environment whose output is kept; older ones keep only their exit code.
const KEEP_JOB_OUTPUTS: i64 = 20;

protocol::string_enum! {
    pub enum JobKind {
        /// A release phase: its output is masked like the release's config.
        Release = "release",
        /// `paas run`.
        Run = "run",
        /// A `[cron]` job's run (see `crate::scheduled`).
        Cron = "cron",
        /// `paas db psql` at a terminal: psql inside the database server, joined by the user.
        Psql = "psql",
    }
}

protocol::string_enum! {
    pub enum JobStatus {
        Pending = "pending",
        Done = "done",
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub app: String,
    pub env: String,
    #[sqlx(try_from = "i64")]
    pub release: u32,
    pub node: String,
    #[sqlx(try_from = "String")]
    pub kind: JobKind,
    #[sqlx(json)]
    pub command: Vec<String>,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    /// A run the user joins: whether it has a TTY (see `crate::attach`).
    pub attach_tty: Option<bool>,
}

impl JobRow {
    pub fn done(&self) -> bool {
        self.status == JobStatus::Done
    }
}

impl Store {
    /// Records a job unless one with this id exists (a release phase is created once per
    /// release, whatever retries happen); says whether it was new.
    pub async fn create_job(&self, job: &JobRow, created_by: &str) -> Result<bool> {
        let done = exec!(self.pool, |ex| {
            sqlx::query(
            "INSERT INTO jobs (id, app, env, release, node, kind, command, status, created_at, created_by, attach_tty)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&job.id)
        .bind_env(&job.app, &job.env)
        .bind(super::int(job.release))
        .bind(&job.node)
        .bind(job.kind.as_str())
        .bind(Json(&job.command))
        .bind(now())
        .bind(created_by)
        .bind(job.attach_tty)
        .execute(ex)
        .await
        })?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn get_job(&self, id: &str) -> Result<JobRow> {
        on!(self.pool, |ex| sqlx::query_as("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(ex)
            .await)?
        .ok_or_else(|| StoreError::NotFound(format!("there is no run {id:?}")))
    }

    /// Who started a job (the user a run's attach must come from).
    pub async fn job_started_by(&self, id: &str) -> Result<String> {
        on!(self.pool, |ex| sqlx::query_scalar("SELECT created_by FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(ex)
            .await)?
        .ok_or_else(|| StoreError::NotFound(format!("there is no run {id:?}")))
    }

    /// Ends every attached run still pending with `error`: they live only as long as their
    /// connection, which a restart of the control plane cut. Returns how many.
    pub async fn end_attached_jobs(&self, error: &str) -> Result<u64> {
        let done = exec!(self.pool, |ex| {
            sqlx::query(
            "UPDATE jobs SET status = 'done', error = $1 WHERE status = 'pending' AND attach_tty IS NOT NULL",
        )
        .bind(error)
        .execute(ex)
        .await
        })?;
        Ok(done.rows_affected())
    }

    pub async fn pending_jobs(&self, node: &str) -> Result<Vec<JobRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM jobs WHERE node = $1 AND status = 'pending' ORDER BY created_at"
        )
        .bind(node)
        .fetch_all(ex)
        .await)?)
    }

    /// Records a job's end, and drops the output of the environment's older finished jobs.
    pub async fn finish_job(&self, id: &str, exit_code: Option<i64>, error: Option<&str>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        exec!(tx, |ex| {
            sqlx::query(
            "UPDATE jobs SET status = 'done', exit_code = $1, error = $2 WHERE id = $3 AND status = 'pending'",
        )
        .bind(exit_code)
        .bind(error)
        .bind(id)
        .execute(ex)
        .await
        })?;
        exec!(tx, |ex| sqlx::query(
            "DELETE FROM job_output WHERE id IN (
                 SELECT id FROM (
                     SELECT old.id, ROW_NUMBER() OVER (ORDER BY old.created_at DESC) AS newest
                     FROM jobs old JOIN jobs this ON this.id = $1
                     WHERE old.app = this.app AND old.env = this.env AND old.status = 'done'
                 ) AS finished WHERE newest > $2)",
        )
        .bind(id)
        .bind(KEEP_JOB_OUTPUTS)
        .execute(ex)
        .await)?;
        tx.commit().await?;
        Ok(())
    }

    /// Appends output lines, keeping only the job's newest [`MAX_JOB_LINES`].
    pub async fn append_job_output(&self, id: &str, lines: &[String]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let mut seq: i64 =
            on!(tx, |ex| sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM job_output WHERE id = $1")
                .bind(id)
                .fetch_one(ex)
                .await)?;
        for line in lines {
            seq += 1;
            exec!(tx, |ex| sqlx::query("INSERT INTO job_output (id, seq, text) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(seq)
                .bind(line)
                .execute(ex)
                .await)?;
        }
        exec!(tx, |ex| sqlx::query("DELETE FROM job_output WHERE id = $1 AND seq <= $2")
            .bind(id)
            .bind(seq - MAX_JOB_LINES)
            .execute(ex)
            .await)?;
        tx.commit().await?;
        Ok(())
    }

    /// Output lines after `after` (at most 1000), with the sequence number of the last one.
    /// Lines no longer kept are stood for by one `[paas] N earlier lines were not kept` line.
    pub async fn job_output_after(&self, id: &str, after: u64) -> Result<(Vec<String>, u64)> {
        let first: Option<i64> =
            on!(self.pool, |ex| sqlx::query_scalar("SELECT MIN(seq) FROM job_output WHERE id = $1")
                .bind(id)
                .fetch_one(ex)
                .await)?;
        let mut lines = Vec::new();
        let mut after = after as i64;
        if let Some(first) = first.filter(|f| *f > after + 1) {
            lines.push(pruned_marker(first - 1 - after));
            after = first - 1;
        }
        let rows: Vec<(i64, String)> = on!(self.pool, |ex| sqlx::query_as(
            "SELECT seq, text FROM job_output WHERE id = $1 AND seq > $2 ORDER BY seq LIMIT 1000",
        )
        .bind(id)
        .bind(super::int(after))
        .fetch_all(ex)
        .await)?;
        let next = rows.last().map_or(after, |(seq, _)| *seq) as u64;
        lines.extend(rows.into_iter().map(|(_, text)| text));
        Ok((lines, next))
    }

    /// The job's last `n` output lines, oldest first.
    pub async fn job_output_tail(&self, id: &str, n: u32) -> Result<Vec<String>> {
        let mut lines: Vec<String> = on!(self.pool, |ex| sqlx::query_scalar(
            "SELECT text FROM job_output WHERE id = $1 ORDER BY seq DESC LIMIT $2"
        )
        .bind(id)
        .bind(super::int(n))
        .fetch_all(ex)
        .await)?;
        lines.reverse();
        Ok(lines)
    }
}

/// A run of a `[cron]` job as `paas cron list` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CronRunRow {
    pub id: String,
    #[sqlx(try_from = "i64")]
    pub release: u32,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub created_at: String,
}

impl Store {
    /// The environment's `[cron]` runs, newest first.
    pub async fn cron_runs(&self, app: &str, env: &str) -> Result<Vec<CronRunRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT id, release, status, exit_code, error, created_at FROM jobs
             WHERE app = $1 AND env = $2 AND kind = 'cron' ORDER BY created_at DESC, id DESC",
        )
        .bind_env(app, env)
        .fetch_all(ex)
        .await)?)
    }

    /// Removes the finished runs whose ids start with `prefix` (one `[cron]` job's) beyond the
    /// newest `keep`, with their output: a job every minute must not grow the store forever.
    pub async fn prune_cron_runs(&self, app: &str, env: &str, prefix: &str, keep: i64) -> Result<u64> {
        let done = exec!(self.pool, |ex| sqlx::query(
            "DELETE FROM jobs WHERE id IN (
                 SELECT id FROM jobs WHERE app = $1 AND env = $2 AND kind = 'cron' AND status = 'done'
                     AND substr(id, 1, length($3)) = $4
                 ORDER BY created_at DESC, id DESC LIMIT 9223372036854775807 OFFSET $5)",
        )
        .bind_env(app, env)
        .bind(prefix)
        .bind(prefix)
        .bind(keep)
        .execute(ex)
        .await)?;
        Ok(done.rows_affected())
    }
}

/// The line that stands for output the store no longer keeps.
pub(super) fn pruned_marker(n: i64) -> String {
    format!("[paas] {n} earlier {} not kept", if n == 1 { "line was" } else { "lines were" })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a fresh temporary directory, removed when dropped.
    struct TempStore(Store, std::path::PathBuf);

    impl TempStore {
        async fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("paas-store-{:016x}", rand::random::<u64>()));
            std::fs::create_dir_all(&dir).unwrap();
            let store = Store::open(&dir.join("state.db")).await.unwrap();
            store.create_app("shop").await.unwrap();
            Self(store, dir)
        }
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }

    fn job(id: &str) -> JobRow {
        JobRow {
            id: id.into(),
            app: "shop".into(),
            env: "production".into(),
            release: 1,
            node: "n".into(),
            kind: JobKind::Run,
            command: vec!["yes".into()],
            status: JobStatus::Pending,
            exit_code: None,
            error: None,
            attach_tty: None,
        }
    }

    async fn rows(store: &Store, sql: &str) -> i64 {
        on!(store.pool, |ex| sqlx::query_scalar(sql).fetch_one(ex).await).unwrap()
    }

    #[tokio::test]
    async fn job_output_keeps_the_newest_lines_and_says_how_many_went() {
        let t = TempStore::new().await;
        let store = &t.0;
        store.create_job(&job("run-1"), "admin").await.unwrap();
        for batch in 0..25 {
            let lines: Vec<String> = (0..1000).map(|i| format!("line {}", batch * 1000 + i + 1)).collect();
            store.append_job_output("run-1", &lines).await.unwrap();
        }
        assert_eq!(rows(store, "SELECT COUNT(*) FROM job_output").await, MAX_JOB_LINES);

        let (lines, next) = store.job_output_after("run-1", 0).await.unwrap();
        assert_eq!(lines[0], "[paas] 15000 earlier lines were not kept");
        assert_eq!(lines[1], "line 15001");
        assert_eq!((lines.len(), next), (1001, 16000));
        // A follower that kept up sees no marker; one that fell a little behind sees its gap.
        let (lines, _) = store.job_output_after("run-1", 16000).await.unwrap();
        assert_eq!(lines[0], "line 16001");
        let (lines, _) = store.job_output_after("run-1", 14990).await.unwrap();
        assert_eq!(lines[0], "[paas] 10 earlier lines were not kept");
        let tail = store.job_output_tail("run-1", 20).await.unwrap();
        assert_eq!(tail.len(), 20);
        assert_eq!((tail[0].as_str(), tail[19].as_str()), ("line 24981", "line 25000"));
    }

    #[tokio::test]
    async fn finished_jobs_keep_their_output_only_for_the_newest_of_an_environment() {
        let t = TempStore::new().await;
        let store = &t.0;
        for i in 0..KEEP_JOB_OUTPUTS + 5 {
            let id = format!("run-{i:03}");
            store.create_job(&job(&id), "admin").await.unwrap();
            store.append_job_output(&id, &["out".to_string()]).await.unwrap();
            store.finish_job(&id, Some(0), None).await.unwrap();
        }
        let kept = rows(store, "SELECT COUNT(DISTINCT id) FROM job_output").await;
        assert_eq!(kept, KEEP_JOB_OUTPUTS);
        assert_eq!(rows(store, "SELECT COUNT(*) FROM jobs").await, KEEP_JOB_OUTPUTS + 5, "results stay");
        let newest = format!("run-{:03}", KEEP_JOB_OUTPUTS + 4);
        assert_eq!(store.job_output_tail(&newest, 5).await.unwrap(), ["out"]);
    }

    #[tokio::test]
    async fn deploy_events_are_capped_per_release_and_kept_for_recent_releases() {
        let t = TempStore::new().await;
        let store = &t.0;
        let lines: Vec<String> = (1..=12_000).map(|i| format!("step {i}")).collect();
        for chunk in lines.chunks(500) {
            store.append_events("shop", "production", 1, "build", chunk).await.unwrap();
        }
        assert_eq!(
            rows(store, "SELECT COUNT(*) FROM deploy_events").await,
            super::super::releases::MAX_RELEASE_EVENTS
        );
        let events = store.events_after("shop", "production", 1, 0).await.unwrap();
        assert_eq!(events[0].text, "[paas] 2000 earlier lines were not kept");
        assert_eq!((events[0].seq, events[0].kind.as_str()), (2000, "build"));
        assert_eq!(events[1].text, "step 2001");
        for version in 2..=21 {
            store
                .append_events("shop", "production", version, "stage", &["created".to_string()])
                .await
                .unwrap();
        }
        assert!(store.events_after("shop", "production", 1, 0).await.unwrap().is_empty(), "v1's events went");
        assert_eq!(store.events_after("shop", "production", 2, 0).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_cron_run_is_created_once_and_only_a_jobs_newest_finished_runs_stay() {
        let t = TempStore::new().await;
        let store = &t.0;
        let cron = |id: &str| JobRow { kind: JobKind::Cron, ..job(id) };
        assert!(store.create_job(&cron("cron-shop--production--a--1"), "platform").await.unwrap());
        assert!(!store.create_job(&cron("cron-shop--production--a--1"), "platform").await.unwrap());
        for minute in 2..=6 {
            let id = format!("cron-shop--production--a--{minute}");
            store.create_job(&cron(&id), "platform").await.unwrap();
            store.finish_job(&id, Some(0), None).await.unwrap();
        }
        // Job `a-b` shares no prefix with `a`; a pending run is never pruned.
        store.create_job(&cron("cron-shop--production--a-b--1"), "platform").await.unwrap();
        store.finish_job("cron-shop--production--a-b--1", Some(0), None).await.unwrap();
        let pruned =
            store.prune_cron_runs("shop", "production", "cron-shop--production--a--", 2).await.unwrap();
        assert_eq!(pruned, 3);
        let left: Vec<String> =
            store.cron_runs("shop", "production").await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(left.len(), 4, "{left:?}");
        for id in ["--a--1", "--a--5", "--a--6", "--a-b--1"] {
            assert!(left.iter().any(|l| l.ends_with(id)), "{id} kept: {left:?}");
        }
    }
}

//! Database tasks the control plane hands this node: backups (row counts and `pg_dump` of one
//! consistent state, streamed to the control plane), verification (a restore into a throwaway
//! container and a recount), restores, and psql. Each runs once and reports its result; while
//! it runs, the agent tells the control plane every few seconds that it is still at work.

pub mod psql;
mod recover;
pub use recover::system_id;

use crate::docker::DockerClient;
use crate::handover::{deliver, start_each_once};
use anyhow::Context;
use futures_util::StreamExt;
use protocol::agent::DbRole;
use protocol::agent::{Assignment, DatabaseSpec, DbTask, DbTaskKind, DbTaskResult};
use protocol::Client;
use psql::{script_psql, sql, tool};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Replica containers whose WAL replay a backup has paused; the database loop resumes any
/// other paused replica (left so by a crash mid-backup).
pub type Paused = Arc<Mutex<HashSet<String>>>;

/// Exact row count of every user table, as `schema.table|rows` lines. A nested query per table
/// through query_to_xml keeps it one read-only statement, so it runs on a hot standby too.
const COUNT_SQL: &str = "SELECT format('%I.%I', n.nspname, c.relname) || '|' || \
 (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text \
 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
 AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1;";

fn parse_counts(out: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut tables = BTreeMap::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (table, rows) =
            line.rsplit_once('|').with_context(|| format!("unexpected count line {line:?}"))?;
        tables.insert(
            table.to_string(),
            rows.parse().with_context(|| format!("unexpected count line {line:?}"))?,
        );
    }
    Ok(tables)
}

/// How often a running task says it is still at work; the control plane gives a task up after
/// 90 s without a word (so a dead agent cannot hold a backup forever).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long a task's result is offered to a control plane that does not take it (restarting,
/// say). The heartbeat goes on meanwhile, so the task is not given up while it waits.
const RESULT_DELIVERY: Duration = Duration::from_secs(15 * 60);
/// A backup download from the control plane that sends nothing for this long has hung (the
/// heartbeat would otherwise keep the task alive forever).
const DOWNLOAD_IDLE: Duration = Duration::from_secs(90);
/// pg_dump waits this long at most for the shared locks it takes on every table; a table held
/// exclusively for longer fails the backup instead of hanging it.
const DUMP_LOCK_WAIT: &str = "--lock-wait-timeout=60s";

#[derive(Clone)]
pub struct DbTaskRunner {
    pub docker: DockerClient,
    pub client: Client,
    pub paused: Paused,
}

/// The program `cmd` runs, for messages (`pg_dump`, not its path).
fn program(cmd: &[String]) -> &str {
    cmd.first().map(|p| p.rsplit('/').next().unwrap_or(p)).unwrap_or("the command")
}

/// Streams the stdout of `cmd` in `container` to the control plane through `upload`, and
/// returns its stderr. If the command fails the upload is broken off, so a partial output is
/// never stored.
pub async fn upload_output<F, Fut>(
    docker: &DockerClient,
    container: &str,
    cmd: Vec<String>,
    upload: F,
) -> anyhow::Result<String>
where
    F: FnOnce(reqwest::Body) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, protocol::client::ClientError>>
        + Send
        + 'static,
{
    let name = program(&cmd).to_string();
    let mut exec = docker.exec_start(container, cmd, false).await?;
    let (tx, rx) = mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let mut upload = tokio::spawn(upload(body));
    let mut failure = None;
    loop {
        tokio::select! {
            chunk = exec.next_stdout() => match chunk {
                Some(Ok(bytes)) => {
                    if tx.send(Ok(bytes)).await.is_err() {
                        break; // the upload failed; its error says why
                    }
                }
                Some(Err(e)) => {
                    failure = Some(format!("{e:#}"));
                    break;
                }
                None => break,
            },
            // The control plane ended the upload first (it refused it, or no bytes came for
            // too long): stop waiting on the command, which may be stuck.
            ended = &mut upload => {
                ended.context("the upload task")?.map_err(|e| anyhow::anyhow!("uploading failed: {e}"))?;
                anyhow::bail!("the control plane answered the upload before {name} finished");
            }
        }
    }
    let code = exec.exit_code().await.unwrap_or(-1);
    if code != 0 && failure.is_none() {
        failure = Some(format!("{name} exited with {code}: {}", exec.stderr.trim()));
    }
    if let Some(f) = &failure {
        let _ = tx.send(Err(std::io::Error::other(f.clone()))).await;
    }
    drop(tx);
    let uploaded = upload.await.context("the upload task")?;
    if let Some(f) = failure {
        anyhow::bail!(f);
    }
    uploaded.map_err(|e| anyhow::anyhow!("uploading failed: {e}"))?;
    Ok(exec.stderr)
}

/// Tells the control plane, now and every [`HEARTBEAT`], that the task is still at work.
async fn heartbeat(client: Client, id: String) {
    loop {
        if let Err(e) = client.db_task_progress(&id).await {
            tracing::debug!(error = %e, "sending a task heartbeat failed");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

/// pg_restore runs as the app's role, never the superuser: a dump holds what the app wrote
/// (function bodies, index expressions, ...), and every object it creates belongs to the app.
/// Ownership from the dump is not replayed (`--no-owner`), so a restore needs no role but the
/// app's.
const RESTORE_AS_APP: [&str; 2] = ["--no-owner", "--exit-on-error"];

impl DbTaskRunner {
    pub async fn run(self, assignment: watch::Receiver<Option<Assignment>>, shutdown: CancellationToken) {
        // No task runs yet, so any throwaway verification server is left from a crash.
        for name in self.docker.database_names("db-verify").await.unwrap_or_default() {
            tracing::info!(container = %name, "removing a verification container left by an earlier run");
            let _ = self.docker.stop_and_remove(&name, 1).await;
        }
        let start = |task: DbTask| {
            let span = tracing::info_span!("db_task", app = %task.server.app, env = %task.server.env, task = %task.id);
            let runner = self.clone();
            tokio::spawn(async move { runner.run_task(task).await }.instrument(span));
        };
        start_each_once(assignment, shutdown, |a| a.db_tasks.clone(), |t| t.id.clone(), start).await
    }

    async fn run_task(&self, task: DbTask) {
        tracing::info!(kind = task.kind.as_str(), backup = %task.backup, "database task started");
        let heartbeat = tokio::spawn(heartbeat(self.client.clone(), task.id.clone()));
        let started = Instant::now();
        let outcome = match task.kind {
            DbTaskKind::Backup => self.backup(&task).await,
            DbTaskKind::Verify => self.verify(&task).await,
            DbTaskKind::Restore => self.restore(&task).await.map(|()| DbTaskResult::default()),
            DbTaskKind::Psql => self.psql(&task).await,
            DbTaskKind::BaseBackup => self.base_backup(&task).await,
            DbTaskKind::Recover => self.recover(&task).await,
        };
        let result =
            outcome.unwrap_or_else(|e| DbTaskResult { error: Some(format!("{e:#}")), ..Default::default() });
        let secs = started.elapsed().as_secs_f64();
        match &result.error {
            None => tracing::info!(secs, "database task succeeded"),
            Some(e) => tracing::warn!(secs, error = %e, "database task failed"),
        }
        deliver("task result", RESULT_DELIVERY, || self.client.db_task_result(&task.id, &result)).await;
        heartbeat.abort();
    }

    /// Runs `script` as the `postgres` superuser in the database of `s` on container `name` (its
    /// own, or a throwaway copy's).
    async fn superuser_sql(&self, name: &str, s: &DatabaseSpec, script: &str) -> anyhow::Result<String> {
        sql(&self.docker, name, s.version, "postgres", &s.database, &[], script).await
    }

    /// Counts rows and dumps one consistent state. On a replica, WAL replay is paused for the
    /// duration (no recovery conflict can cancel the dump, counts and dump see the same data); on
    /// a primary, one repeatable-read transaction exports its snapshot to pg_dump.
    async fn backup(&self, task: &DbTask) -> anyhow::Result<DbTaskResult> {
        let (s, paused) = (&task.server, &self.paused);
        let mut dump = tool(s.version, "pg_dump", "postgres", &s.database, &["-Fc", DUMP_LOCK_WAIT]);
        if s.role == DbRole::Replica {
            paused.lock().unwrap_or_else(|p| p.into_inner()).insert(s.name.clone());
            let result = async {
                self.superuser_sql(&s.name, s, "SELECT pg_wal_replay_pause();").await?;
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let state =
                        self.superuser_sql(&s.name, s, "SELECT pg_get_wal_replay_pause_state();").await?;
                    if state.trim() == "paused" {
                        break;
                    }
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "the replica did not pause its WAL replay within a minute"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let tables = parse_counts(&self.superuser_sql(&s.name, s, COUNT_SQL).await?)?;
                self.upload_dump(&s.name, dump, &task.backup).await?;
                Ok(DbTaskResult { tables, ..Default::default() })
            }
            .await;
            let resumed = self.superuser_sql(&s.name, s, "SELECT pg_wal_replay_resume();").await;
            paused.lock().unwrap_or_else(|p| p.into_inner()).remove(&s.name);
            if let Err(e) = resumed {
                tracing::warn!(error = %format!("{e:#}"), "resuming WAL replay failed; the database loop retries");
            }
            return result;
        }
        let psql = script_psql(s.version, "postgres", &s.database);
        let mut session = self.docker.exec_start(&s.name, psql, true).await?;
        session
            .write(b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n")
            .await?;
        let snapshot = session.line().await?.context("psql ended before exporting a snapshot")?;
        anyhow::ensure!(
            !snapshot.is_empty() && snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
            "unexpected snapshot id {snapshot:?}: {}",
            session.stderr
        );
        session.write(format!("{COUNT_SQL}\n\\echo paas-counts-end\n").as_bytes()).await?;
        let mut counts = String::new();
        loop {
            match session.line().await? {
                Some(l) if l == "paas-counts-end" => break,
                Some(l) => counts.push_str(&format!("{l}\n")),
                None => anyhow::bail!("counting rows failed: {}", session.stderr.trim()),
            }
        }
        let tables = parse_counts(&counts)?;
        dump.push(format!("--snapshot={snapshot}"));
        let dumped = self.upload_dump(&s.name, dump, &task.backup).await;
        session.write(b"COMMIT;\n").await?;
        let _ = session.finish().await;
        dumped?;
        Ok(DbTaskResult { tables, ..Default::default() })
    }

    /// Streams `cmd`'s stdout (pg_dump, say) to the control plane as backup `backup`.
    async fn upload_dump(&self, container: &str, cmd: Vec<String>, backup: &str) -> anyhow::Result<()> {
        let (c, id) = (self.client.clone(), backup.to_string());
        upload_output(
            &self.docker,
            container,
            cmd,
            move |body| async move { c.upload_backup(&id, body).await },
        )
        .await
        .map(drop)
    }

    /// Feeds a stored backup (checked by the control plane) to pg_restore in `container`.
    async fn feed_restore(&self, container: &str, cmd: Vec<String>, backup: &str) -> anyhow::Result<()> {
        let resp = self.client.download_backup(backup).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        self.feed(container, cmd, resp).await
    }

    /// Feeds a download from the control plane to `cmd`'s stdin in `container`.
    async fn feed(&self, container: &str, cmd: Vec<String>, resp: reqwest::Response) -> anyhow::Result<()> {
        let name = program(&cmd).to_string();
        let mut exec = self.docker.exec_start(container, cmd, true).await?;
        let mut input = exec.input.take().context("stdin is attached")?;
        // Feed stdin while draining the output, so neither side can block the other.
        let feed = async move {
            use tokio::io::AsyncWriteExt;
            let mut body = resp.bytes_stream();
            loop {
                // Only the wait for the control plane counts: pg_restore may take its time to read.
                let next = tokio::time::timeout(DOWNLOAD_IDLE, body.next()).await.map_err(|_| {
                    anyhow::anyhow!(
                        "downloading from the control plane stalled: no bytes for {} seconds",
                        DOWNLOAD_IDLE.as_secs()
                    )
                })?;
                let Some(chunk) = next else { break };
                let chunk = chunk.context("downloading from the control plane broke off")?;
                if input.write_all(&chunk).await.is_err() {
                    break; // the command stopped reading; its exit code and stderr say why
                }
            }
            let _ = input.shutdown().await;
            anyhow::Ok(())
        };
        let (fed, finished) = tokio::join!(feed, exec.finish());
        let (code, _, stderr) = finished?;
        if code != 0 {
            let msg = stderr.lines().filter(|l| !l.trim().is_empty()).take(5).collect::<Vec<_>>().join(" / ");
            anyhow::bail!("{name} exited with {code}: {msg}");
        }
        fed
    }

    /// Restores a backup into a throwaway container (no network) and counts its rows.
    async fn verify(&self, task: &DbTask) -> anyhow::Result<DbTaskResult> {
        let s = &task.server;
        let name = format!("{}-verify-{}", s.network, task.id.rsplit('-').next().unwrap_or("x"));
        self.docker.create_verify_database(s, &name, crate::databases::START_SCRIPT).await?;
        let result = async {
            self.wait_ready(&name, s).await?;
            let restore = tool(s.version, "pg_restore", &s.user, &s.database, &RESTORE_AS_APP);
            self.feed_restore(&name, restore, &task.backup).await?;
            let counted = self.superuser_sql(&name, s, COUNT_SQL).await?;
            Ok(DbTaskResult { tables: parse_counts(&counted)?, ..Default::default() })
        }
        .await;
        if let Err(e) = self.docker.stop_and_remove(&name, 5).await {
            tracing::warn!(container = %name, error = %format!("{e:#}"), "removing the verification container failed");
        }
        result
    }

    /// Waits until the throwaway server runs for good: the start script's temporary server (used
    /// to create roles) listens on no address, the final one on all.
    async fn wait_ready(&self, name: &str, s: &DatabaseSpec) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let out = self.superuser_sql(name, s, "SHOW listen_addresses;").await;
            if out.is_ok_and(|o| o.trim() == "*") {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!("the verification database did not start within two minutes");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn restore(&self, task: &DbTask) -> anyhow::Result<()> {
        let s = &task.server;
        let target = &task.params.target_database;
        anyhow::ensure!(!target.is_empty(), "the restore has no target database");
        if task.params.create_target {
            let vars = [("db", target.as_str()), ("owner", s.user.as_str())];
            sql(
                &self.docker,
                &s.name,
                s.version,
                "postgres",
                "postgres",
                &vars,
                "CREATE DATABASE :\"db\" OWNER :\"owner\";",
            )
            .await?;
        }
        let mut cmd = tool(s.version, "pg_restore", &s.user, target, &RESTORE_AS_APP);
        if !task.params.create_target {
            // Into the live database: drop what the backup holds and recreate it, all or nothing.
            cmd.extend(["--clean", "--if-exists", "--single-transaction"].map(String::from));
        }
        self.feed_restore(&s.name, cmd, &task.backup).await
    }

    /// psql as the app's own role, so what it creates belongs to the app, run by the OS user
    /// nobody so that no argument (`-U postgres`) or `\connect` can make it the superuser. Its
    /// search_path is the app's (not pinned): it runs with no right the app does not have, and
    /// `SELECT ... FROM notes` must find the app's tables.
    async fn psql(&self, task: &DbTask) -> anyhow::Result<DbTaskResult> {
        let s = &task.server;
        let mut cmd = vec![psql::binary(s.version, "psql"), "-X".into()];
        cmd.extend(["-U", &s.user, "-d", &s.database].map(String::from));
        cmd.extend(task.params.psql_args.iter().cloned());
        let mut exec = self.docker.exec_start_as(&s.name, cmd, true, psql::SESSION_USER).await?;
        exec.write(task.params.input.as_bytes()).await?;
        let (code, out, err) = exec.finish().await?;
        let output = if err.is_empty() { out } else { format!("{out}{err}") };
        Ok(DbTaskResult { output, exit_code: Some(code), ..Default::default() })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_parse_names_with_pipes() {
        let t = super::parse_counts("public.a|3\n\"weird|name\".b|0\n\n").unwrap();
        assert_eq!(t["public.a"], 3);
        assert_eq!(t["\"weird|name\".b"], 0);
        assert!(super::parse_counts("public.a|x").is_err());
    }
}

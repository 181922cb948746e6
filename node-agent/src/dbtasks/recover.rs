//! Point-in-time recovery on this node: physical base backups of a primary (`pg_basebackup`
//! streamed to the control plane), and recovery of a throwaway server from a base backup plus
//! the WAL archive to a moment (or to the archive's end, the drill that proves a base backup),
//! whose rows are counted and whose database is dumped as a backup when asked.

use super::psql::{binary, tool};
use super::{parse_counts, upload_output, DbTaskRunner, COUNT_SQL, DUMP_LOCK_WAIT};
use crate::dbroles::PGDATA;
use anyhow::Context;
use protocol::agent::{DatabaseSpec, DbTask, DbTaskResult};
use std::time::Duration;

pub const RECOVER_SCRIPT: &str = include_str!("../../assets/postgres-recover-start.sh");
/// Where the throwaway server finds the archived WAL, and the file that lets it start.
const WAL_DIR: &str = "/var/lib/postgresql/restore-wal";
/// What PostgreSQL says when the archive holds no commit after the target: then all of the
/// archive is the database as it was at the target.
const TARGET_NOT_REACHED: &str = "recovery ended before configured recovery target was reached";

/// The WAL segment (16 MiB segments) holding `lsn` (`X/Y`) on `timeline`.
fn segment_of(lsn: &str, timeline: u32) -> Option<String> {
    let (hi, lo) = lsn.split_once('/')?;
    let (hi, lo) = (u32::from_str_radix(hi, 16).ok()?, u32::from_str_radix(lo, 16).ok()?);
    Some(format!("{timeline:08X}{hi:08X}{:08X}", lo >> 24))
}

/// The first segment a base backup needs, from pg_basebackup's verbose output
/// ("write-ahead log start point: 0/2000028 on timeline 1").
fn start_segment(stderr: &str) -> Option<String> {
    let rest = stderr.split("write-ahead log start point: ").nth(1)?;
    let mut words = rest.split_whitespace();
    let lsn = words.next()?;
    let timeline = words.nth(2)?.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()?;
    segment_of(lsn, timeline)
}

/// The server's system identifier, which names its part of the archive: a server initialised
/// again on a new volume starts its WAL names over.
pub async fn system_id(docker: &crate::docker::DockerClient, s: &DatabaseSpec) -> anyhow::Result<String> {
    let sql = "SELECT system_identifier FROM pg_control_system();";
    let cmd = tool(s.version, "psql", "postgres", &s.database, &["-X", "-tA", "-c", sql]);
    let (code, out) = docker.exec_output(&s.name, &cmd).await?;
    let id = out.trim();
    anyhow::ensure!(
        code == 0 && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        "reading the server's system identifier failed: {id}"
    );
    Ok(id.to_string())
}

impl DbTaskRunner {
    /// A physical copy of the primary's data directory as a gzipped tar, without WAL (recovery
    /// takes it from the archive), and the segment its recovery starts at.
    pub(super) async fn base_backup(&self, task: &DbTask) -> anyhow::Result<DbTaskResult> {
        let s = &task.server;
        let system = system_id(&self.docker, s).await?;
        // Where WAL is being written before the backup starts: its start checkpoint comes after,
        // so recovery from here on finds every segment it needs.
        let before =
            self.superuser_sql(&s.name, s, "SELECT pg_walfile_name(pg_current_wal_insert_lsn());").await?;
        let before = before.trim().to_string();
        anyhow::ensure!(before.len() == 24, "unexpected WAL file name {before:?}");
        let cmd: Vec<String> = [
            binary(s.version, "pg_basebackup").as_str(),
            "-U",
            "postgres",
            "-D",
            "-",
            "-Ft",
            "-z",
            "-X",
            "none",
            "-c",
            "fast",
            "-v",
            "--no-manifest",
        ]
        .map(String::from)
        .to_vec();
        let (c, id) = (self.client.clone(), task.backup.clone());
        let stderr =
            upload_output(
                &self.docker,
                &s.name,
                cmd,
                move |body| async move { c.upload_backup(&id, body).await },
            )
            .await?;
        // pg_basebackup names its start point in some modes; the name read before is never later.
        let segment = start_segment(&stderr).unwrap_or(before);
        // pg_basebackup waited until the WAL it needs was archived into the spool; its drill
        // runs as soon as this task ends, so that WAL is shipped first.
        self.wait_shipped(&s.name).await;
        Ok(DbTaskResult { wal_start: format!("{system}/{segment}"), ..Default::default() })
    }

    /// Waits (a minute at most) until the files in the spool now have been shipped.
    async fn wait_shipped(&self, container: &str) {
        let list = || async {
            let cmd = ["ls".to_string(), "-1".into(), format!("{PGDATA}/pg_paas_archive")];
            match self.docker.exec_output(container, &cmd).await {
                Ok((0, out)) => out.lines().filter(|l| l.ends_with(".gz")).map(str::to_string).collect(),
                _ => Vec::new(),
            }
        };
        let waiting: Vec<String> = list().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let now = list().await;
            if !waiting.iter().any(|f| now.contains(f)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tracing::warn!(container, "the archived WAL of the base backup was not shipped within a minute");
    }

    /// Recovers a throwaway server to the task's target, then counts its rows and (when asked)
    /// dumps its database as the task's backup. When the archive holds no commit after the
    /// target, PostgreSQL refuses to end there; all of the archive is then the answer.
    pub(super) async fn recover(&self, task: &DbTask) -> anyhow::Result<DbTaskResult> {
        let target = task.params.target_time.as_str();
        match self.recover_once(task, target).await {
            Err(e) if !target.is_empty() && format!("{e:#}").contains(TARGET_NOT_REACHED) => {
                tracing::info!(target, "the archive holds no commit after the target; recovering all of it");
                self.recover_once(task, "").await
            }
            outcome => outcome,
        }
    }

    async fn recover_once(&self, task: &DbTask, target: &str) -> anyhow::Result<DbTaskResult> {
        let s = &task.server;
        let name = format!("{}-verify-{}", s.network, task.id.rsplit('-').next().unwrap_or("x"));
        self.docker.create_verify_database(s, &name, RECOVER_SCRIPT).await?;
        let result = async {
            let base =
                self.client.download_backup(&task.params.base_backup).await.map_err(anyhow::Error::msg)?;
            let untar = format!("mkdir -p {PGDATA} && chmod 700 {PGDATA} && tar -xzf - -C {PGDATA}");
            self.feed(&name, vec!["sh".into(), "-c".into(), untar], base)
                .await
                .context("unpacking the base backup")?;
            let wal = self.client.recovery_wal(&task.id).await.map_err(anyhow::Error::msg)?;
            let untar = format!("mkdir -p {WAL_DIR} && tar -xf - -C {WAL_DIR}");
            self.feed(&name, vec!["sh".into(), "-c".into(), untar], wal)
                .await
                .context("unpacking the WAL")?;
            let prepare = ["sh", "-c", PREPARE, "sh", &settings(target)].map(String::from).to_vec();
            let (code, out) = self.docker.exec_output(&name, &prepare).await?;
            anyhow::ensure!(code == 0, "preparing the recovery failed: {}", out.trim());
            self.wait_promoted(&name, s).await?;
            let tables = parse_counts(&self.superuser_sql(&name, s, COUNT_SQL).await?)?;
            if task.params.dump {
                let dump = tool(s.version, "pg_dump", "postgres", &s.database, &["-Fc", DUMP_LOCK_WAIT]);
                self.upload_dump(&name, dump, &task.backup).await?;
            }
            Ok(DbTaskResult { tables, ..Default::default() })
        }
        .await;
        if let Err(e) = self.docker.stop_and_remove(&name, 5).await {
            tracing::warn!(container = %name, error = %format!("{e:#}"), "removing the recovery container failed");
        }
        result
    }

    /// Waits until the server has replayed the WAL and been promoted; if it stops instead, its
    /// last log lines say why.
    async fn wait_promoted(&self, name: &str, s: &protocol::agent::DatabaseSpec) -> anyhow::Result<()> {
        loop {
            let running = self.docker.database(name).await?.is_some_and(|o| o.state == "running");
            if !running {
                let log = self.docker.log_tail(name, 20).await;
                let fatal: Vec<&String> =
                    log.iter().filter(|l| l.contains("FATAL") || l.contains("PANIC")).collect();
                let why = if fatal.is_empty() {
                    log.join(" / ")
                } else {
                    fatal.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(" / ")
                };
                anyhow::bail!("the recovering server stopped: {why}");
            }
            if let Ok(out) = self.superuser_sql(name, s, "SELECT pg_is_in_recovery();").await {
                if out.trim() == "f" {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// The recovery settings appended to the copy's postgresql.auto.conf: the archive as its
/// restore command, promotion at the end, and the target when there is one.
fn settings(target: &str) -> String {
    let mut conf = format!(
        "restore_command = '[ -f {WAL_DIR}/%f.gz ] && gunzip -c {WAL_DIR}/%f.gz > %p'\nrecovery_target_action = 'promote'\n"
    );
    if !target.is_empty() {
        // RFC 3339 checked by the control plane: no quote can be in it.
        conf.push_str(&format!("recovery_target_time = '{target}'\n"));
    }
    conf
}

/// Prepares the unpacked copy (no spool or pid file from the primary, recovery.signal, the
/// settings given as `$1`), then creates the file that lets the start script go on.
const PREPARE: &str = "set -e; rm -rf \"$PGDATA/pg_paas_archive\" \"$PGDATA/postmaster.pid\"; \
    touch \"$PGDATA/recovery.signal\"; printf '%s' \"$1\" >> \"$PGDATA/postgresql.auto.conf\"; \
    touch /var/lib/postgresql/recover.ready";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_the_lsn() {
        assert_eq!(segment_of("0/2000028", 1).unwrap(), "000000010000000000000002");
        assert_eq!(segment_of("1A/FF000000", 3).unwrap(), "000000030000001A000000FF");
        let out = "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n\
                   pg_basebackup: checkpoint completed\n\
                   pg_basebackup: write-ahead log start point: 0/5000028 on timeline 1\n";
        assert_eq!(start_segment(out).unwrap(), "000000010000000000000005");
        assert!(start_segment("nothing").is_none());
    }
}

//! Point-in-time recovery: the WAL archive each primary ships (stored beside the backups,
//! locally and in S3, indexed in `wal_segments`), physical base backups, and `db restore
//! --to-time`: a throwaway server recovers a base backup plus the archive to the moment, its
//! database is dumped as a `recovered` backup, and that dump is restored like any backup (so a
//! recovery to a new database and one in place after a safety backup work as they always did).

use super::{begin_backup, refuse_while_running, refuse_while_running_of, start_restore, task};
use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::{unix_now, DatabaseRow, DbTaskRow, WalSegment};
use anyhow::Context;
use bytes::Bytes;
use protocol::agent::{DbRole, DbTaskKind, DbTaskParams};
use protocol::api::{Backup, BackupKind, BackupStatus, BackupTrigger, Verification, WalArchive};
use std::time::Duration;

/// PostgreSQL's WAL segment size, which initdb's default gives every managed server.
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// No archived file is larger than a segment; gzip adds little even to random data.
const MAX_UPLOAD: u64 = SEGMENT_BYTES + (1 << 20);
const UPLOAD_IDLE: Duration = Duration::from_secs(90);
/// How often a database gets a new base backup: recovery replays the WAL from the newest one
/// before the moment asked for, so this bounds the replay.
const BASE_EVERY_SECS: i64 = 86_400;
/// A failed base backup is tried again after this long, not on every pass.
const BASE_RETRY_SECS: i64 = 3_600;

fn hex_upper(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
}

/// Whether `name` is a file the archiver spools, gzipped: a segment, a timeline history, a
/// backup history file or a partial segment (what PostgreSQL names `%f`, plus `.gz`). Nothing
/// else is accepted, so no name can reach outside the archive's directory.
pub fn valid_wal_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".gz") else { return false };
    if hex_upper(stem, 24) {
        return true;
    }
    if let Some(tli) = stem.strip_suffix(".history") {
        return hex_upper(tli, 8);
    }
    if let Some(seg) = stem.strip_suffix(".partial") {
        return hex_upper(seg, 24);
    }
    if let Some((seg, offset)) = stem.strip_suffix(".backup").and_then(|r| r.split_once('.')) {
        return hex_upper(seg, 24) && hex_upper(offset, 8);
    }
    false
}

/// A whole segment (not a history, backup label or partial file).
fn is_segment(file: &str) -> bool {
    file.len() == 27 && valid_wal_name(file)
}

/// A stored name is `<system identifier>/<file>`: a server initialised again on a new volume
/// starts its WAL names over, and must not overwrite the archive of the one before it.
fn split(stored: &str) -> (&str, &str) {
    stored.split_once('/').unwrap_or(("", stored))
}

fn valid_system_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit())
}

/// Whether stored file `s` is a segment of the same server as `start` (`<system id>/<segment>`)
/// and not before it.
fn from_start(stored: &str, start: &str) -> bool {
    let ((id, file), (start_id, start_seg)) = (split(stored), split(start));
    id == start_id && is_segment(file) && file[..24] >= *start_seg
}

fn wal_key(app: &str, env: &str, stored: &str) -> String {
    format!("{app}/{env}/wal/{stored}")
}

/// Decompresses an archived file whole: it must be sound gzip and, for a segment, exactly
/// one segment long.
async fn check_gzip(path: &std::path::Path, segment: bool) -> anyhow::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let mut decoder = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
        let n = std::io::copy(&mut decoder, &mut std::io::sink()).context("it is not sound gzip")?;
        anyhow::ensure!(
            !segment || n == SEGMENT_BYTES,
            "it holds {n} bytes, not one {SEGMENT_BYTES}-byte segment"
        );
        Ok(())
    })
    .await?
}

/// Takes in one archived file that the node running `app`/`env`'s primary streams: stored
/// locally (0600) and in S3 when configured, then indexed. Storing a file again replaces it (the
/// archiver retries a file it could not confirm).
pub async fn receive_wal<E: std::fmt::Display>(
    state: &AppState,
    node: &str,
    app: &str,
    env: &str,
    system_id: &str,
    file: &str,
    body: impl futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
) -> Result<WalSegment> {
    if !valid_wal_name(file) || !valid_system_id(system_id) {
        return Err(DomainError::Invalid(format!(
            "{system_id:?}/{file:?} is not the name of an archived WAL file"
        )));
    }
    let name = &format!("{system_id}/{file}");
    let db = state.store.get_database(app, env).await?;
    if db.node != node {
        return Err(DomainError::Forbidden(format!(
            "node {node:?} does not run the primary of {app}/{env}, so it cannot archive its WAL"
        )));
    }
    let storage = &state.backup_storage;
    let key = wal_key(app, env, name);
    let path = storage.dir.join(&key);
    let partial = storage.dir.join(format!("{key}.partial"));
    let (size, sha256) = super::receive_file(&partial, body, UPLOAD_IDLE, MAX_UPLOAD)
        .await
        .map_err(|e| DomainError::Invalid(format!("WAL file {name}: {e:#}")))?;
    if let Err(e) = check_gzip(&partial, is_segment(file)).await {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(DomainError::Invalid(format!("WAL file {name} arrived damaged: {e:#}")));
    }
    let existing = state.store.wal_segments(app, env).await?.into_iter().find(|s| s.name == *name);
    if let Some(old) = existing.filter(|old| old.sha256 != sha256) {
        let _ = tokio::fs::remove_file(&partial).await;
        let msg = format!(
            "node {node} sent WAL file {name} of {app}/{env} with other content than the one archived ({}...); the archived one is kept",
            &old.sha256[..12]
        );
        tracing::error!(app, env, node, "{msg}");
        state.store.add_event(app, env, "db.archive.conflict", "critical", &msg).await?;
        return Err(DomainError::Conflict(msg));
    }
    tokio::fs::rename(&partial, &path).await.context("storing the WAL file")?;
    let mut locations = vec![format!("local:{}", path.display())];
    if let Some(s3) = &storage.s3 {
        s3.put_file(&key, &path).await.context("copying the WAL file to S3")?;
        locations.push(format!("s3:{key}"));
    }
    let seg = WalSegment {
        app: app.to_string(),
        env: env.to_string(),
        name: name.to_string(),
        size_bytes: size,
        sha256,
        locations,
        stored_at: crate::store::now(),
        stored_unix: unix_now(),
    };
    state.store.put_wal_segment(&seg).await?;
    tracing::debug!(app, env, segment = name, size, "WAL file archived");
    Ok(seg)
}

/// A copy of an archived file whose SHA-256 is the one recorded: the local one, else S3's.
async fn wal_copy(state: &AppState, seg: &WalSegment) -> anyhow::Result<super::CheckedCopy> {
    let storage = &state.backup_storage;
    let mut problems = Vec::new();
    for location in &seg.locations {
        if let Some(path) = location.strip_prefix("local:") {
            match super::storage::digest_file(std::path::Path::new(path)).await {
                Ok((_, sha)) if sha == seg.sha256 => return Ok(super::CheckedCopy::kept(path.into())),
                Ok(_) => problems.push(format!("the copy at {path} is corrupt")),
                Err(_) => problems.push(format!("the copy at {path} is missing")),
            }
        } else if let (Some(k), Some(s3)) = (location.strip_prefix("s3:"), &storage.s3) {
            let unique = crate::tokens::random_hex(8);
            let file = seg.name.replace('/', "-");
            let tmp = storage.dir.join(".fetch").join(format!("{}-{}-{file}-{unique}", seg.app, seg.env));
            super::storage::private_dirs(tmp.parent().expect("has a parent")).await?;
            let copy = super::CheckedCopy::temporary(tmp);
            s3.get_to_file(k, &copy.path).await?;
            match super::storage::digest_file(&copy.path).await {
                Ok((_, sha)) if sha == seg.sha256 => return Ok(copy),
                _ => problems.push(format!("the copy at s3:{k} is corrupt")),
            }
        }
    }
    anyhow::bail!("WAL file {} cannot be read: {}", seg.name, problems.join("; "))
}

/// What the agent running recover task `id` replays: every history file, and every segment
/// from its base backup's first one on, as a tar of the gzipped files, streamed. All of the
/// archive after the base, not only up to the moment: a segment archived after the moment may
/// hold commits from before it, and recovery stops at the moment by itself.
pub async fn wal_for_task(state: &AppState, node: &str, id: &str) -> Result<axum::body::Body> {
    let t = state.store.get_db_task(id).await?;
    if t.node != node || t.kind != DbTaskKind::Recover || !t.status.is_open() {
        return Err(DomainError::Forbidden(format!(
            "node {node:?} holds no open recover task {id}, so it cannot read that archive"
        )));
    }
    let base = state.store.get_backup(&t.params.base_backup).await?;
    let segments: Vec<WalSegment> = state
        .store
        .wal_segments(&t.app, &t.env)
        .await?
        .into_iter()
        .filter(|s| {
            let same_server = split(&s.name).0 == split(&base.wal_start).0;
            (same_server && split(&s.name).1.contains(".history")) || from_start(&s.name, &base.wal_start)
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let bg = state.clone();
    tokio::spawn(async move {
        for seg in segments {
            let read = async {
                let copy = wal_copy(&bg, &seg).await?;
                let data = tokio::fs::read(&copy.path).await?;
                let mut header = tar::Header::new_gnu();
                header.set_path(split(&seg.name).1)?;
                header.set_size(data.len() as u64);
                header.set_mode(0o600);
                header.set_cksum();
                let mut entry = header.as_bytes().to_vec();
                entry.extend_from_slice(&data);
                entry.resize(entry.len().div_ceil(512) * 512, 0);
                anyhow::Ok(Bytes::from(entry))
            };
            let item = read.await.map_err(|e| std::io::Error::other(format!("{e:#}")));
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
        let _ = tx.send(Ok(Bytes::from(vec![0u8; 1024]))).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) });
    Ok(axum::body::Body::from_stream(stream))
}

/// An RFC 3339 moment as unix seconds and as PostgreSQL's `recovery_target_time` takes it (UTC
/// with a numeric offset: it refuses `Z`).
fn recovery_target(at: &str) -> Option<(i64, String)> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(at.trim(), &Rfc3339).ok()?.to_offset(time::UtcOffset::UTC);
    let format = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]+00"
    );
    Some((t.unix_timestamp(), t.format(&format).ok()?))
}

/// Starts a base backup of the primary (`pg_basebackup`, streamed like a dump).
pub async fn start_base_backup(state: &AppState, db: &DatabaseRow, trigger: BackupTrigger) -> Result<Backup> {
    refuse_while_running_of(state, db, BackupKind::Base, "wait for it or follow it with `paas db backups`")
        .await?;
    let row = begin_backup(state, db, trigger, DbRole::Primary, BackupKind::Base, None).await?;
    tracing::info!(app = %db.app, env = %db.env, backup = %row.id, %trigger, "base backup started");
    Ok(row)
}

/// The restore drill of a base backup: recovered with all of the archive, its rows counted.
pub(super) async fn start_drill(state: &AppState, db: &DatabaseRow, b: &Backup) -> anyhow::Result<DbTaskRow> {
    let role = if db.replicas > 0 { DbRole::Replica } else { DbRole::Primary };
    let params = DbTaskParams { base_backup: b.id.clone(), ..Default::default() };
    task(state, db, DbTaskKind::Recover, role, &b.id, params, false).await
}

/// How far point-in-time recovery reaches, for `paas db info`.
pub async fn archive(state: &AppState, db: &DatabaseRow, backups: &[Backup]) -> Result<WalArchive> {
    let segments = state.store.wal_segments(&db.app, &db.env).await?;
    let bases: Vec<&Backup> =
        backups.iter().filter(|b| b.kind == BackupKind::Base && b.status == BackupStatus::Stored).collect();
    let newest = segments.iter().max_by_key(|s| s.stored_unix);
    Ok(WalArchive {
        segments: segments.len() as u64,
        bytes: segments.iter().map(|s| s.size_bytes).sum(),
        last_segment: newest.map(|s| split(&s.name).1.trim_end_matches(".gz").to_string()),
        last_stored_at: newest.map(|s| s.stored_at.clone()),
        earliest: bases.last().and_then(|b| b.finished_at.clone()),
        last_base_backup: bases.first().map(|b| b.id.clone()),
    })
}

/// `db restore --to-time`: recovers the newest base backup that ended before `at` with the
/// archive up to `at` into a `recovered` backup, then restores that like any backup.
pub async fn restore_to_time(
    state: &AppState,
    db: &DatabaseRow,
    at: &str,
    to_new: bool,
) -> Result<DbTaskRow> {
    let (when, target) = recovery_target(at).ok_or_else(|| {
        DomainError::Invalid(format!("--to-time takes a moment like 2026-11-27T10:42:00Z, not {at:?}"))
    })?;
    if when > unix_now() {
        return Err(DomainError::Invalid(format!("{at} is in the future")));
    }
    let backups = state.store.list_backups(&db.app, &db.env).await?;
    let usable = |b: &&Backup| {
        b.kind == BackupKind::Base
            && b.status == BackupStatus::Stored
            && b.verification != Verification::Failed
            && b.finished_at.as_deref().and_then(crate::store::unix_seconds).is_some_and(|f| f <= when)
    };
    let Some(base) = backups.iter().find(usable) else {
        let reach = archive(state, db, &backups).await?.earliest;
        return Err(DomainError::Invalid(match reach {
            Some(from) => format!("no base backup of {}/{} ended before {at}; the earliest moment to restore to is {from}", db.app, db.env),
            None => format!("{}/{} has no base backup yet, so there is nothing to recover from; `paas db backup --base` takes one", db.app, db.env),
        }));
    };
    // WAL written at the moment reaches the archive at most one archive timeout later (plus the
    // agent's shipping): before that, recovering "to the end" could silently stop short of it.
    let settled = when + i64::from(state.config.db_archive_timeout_secs) + 5;
    if unix_now() < settled {
        return Err(DomainError::Conflict(format!(
            "the WAL up to {at} may not be archived yet (it is, at most {} s after it is written); try again in {} s",
            state.config.db_archive_timeout_secs + 5,
            settled - unix_now()
        )));
    }
    // Files still in the primary's spool matter only while nothing of the base backup's server
    // was archived after the moment.
    let server = base.wal_start.split('/').next().unwrap_or_default().to_string();
    let beyond = state
        .store
        .wal_segments(&db.app, &db.env)
        .await?
        .iter()
        .any(|s| s.name.split('/').next() == Some(server.as_str()) && s.stored_unix > when);
    let primary = db.docker_names().database(DbRole::Primary.as_str());
    let backlog = state.db_status(&primary).and_then(|s| s.db).and_then(|f| f.archive_backlog).unwrap_or(0);
    if backlog > 1 && !beyond {
        return Err(DomainError::Conflict(format!(
            "{backlog} archived WAL files of {}/{} still wait to be shipped from its primary, so the archive may not reach {at}; try again once `paas db info` shows none waiting",
            db.app, db.env
        )));
    }
    refuse_while_running(state, db, "restore once it has finished").await?;
    let params =
        DbTaskParams { base_backup: base.id.clone(), target_time: target, dump: true, ..Default::default() };
    let (trigger, kind) = (BackupTrigger::Recovered, BackupKind::Dump);
    let recovered = begin_backup(state, db, trigger, DbRole::Primary, kind, Some(params)).await?;
    tracing::info!(app = %db.app, env = %db.env, base = %base.id, at, to_new, "point-in-time recovery started");
    start_restore(state, db, &recovered, to_new).await
}

/// Starts a base backup for every database whose archive runs (a segment arrived) and whose
/// newest base backup is a day old, or failed an hour ago; none for a database whose schedule is
/// `off`.
pub(super) async fn base_backup_pass(state: &AppState) -> anyhow::Result<()> {
    let now = unix_now();
    for db in state.store.all_databases().await? {
        if super::parse_schedule(&db.backup_schedule).ok().flatten().is_none() {
            continue;
        }
        let backups = state.store.list_backups(&db.app, &db.env).await?;
        let due = match backups.iter().find(|b| b.kind == BackupKind::Base) {
            None => true,
            Some(b) if b.status == BackupStatus::Running => false,
            Some(b) if b.status == BackupStatus::Failed => now - super::unix_of(b) >= BASE_RETRY_SECS,
            Some(b) => now - super::unix_of(b) >= BASE_EVERY_SECS,
        };
        let archived = state.store.wal_segments(&db.app, &db.env).await?;
        if !due || archived.iter().all(|s| !is_segment(split(&s.name).1)) {
            continue;
        }
        if let Err(e) = start_base_backup(state, &db, BackupTrigger::Scheduled).await {
            tracing::warn!(app = %db.app, env = %db.env, error = %e, "a scheduled base backup could not start");
        }
    }
    Ok(())
}

/// Deletes every archived file of `app`'s environments (`apps delete --purge-backups`).
pub async fn delete_app_archive(state: &AppState, app: &str) -> anyhow::Result<usize> {
    let all = state.store.app_wal_segments(app).await?;
    for s in &all {
        let key = wal_key(&s.app, &s.env, &s.name);
        let _ = tokio::fs::remove_file(state.backup_storage.dir.join(&key)).await;
        if let Some(s3) = &state.backup_storage.s3 {
            s3.delete(&key).await?;
        }
        state.store.delete_wal_segments(&s.app, &s.env, std::slice::from_ref(&s.name)).await?;
    }
    Ok(all.len())
}

/// Deletes archived files no recovery can use: a server's segments before its oldest stored
/// base backup's first one, and files older than `keep_days` that no stored base backup needs
/// (a server without one, or one whose volume was replaced).
pub(super) async fn wal_retention(
    state: &AppState,
    db: &DatabaseRow,
    backups: &[Backup],
) -> anyhow::Result<()> {
    let starts: Vec<&str> = backups
        .iter()
        .filter(|b| b.kind == BackupKind::Base && b.status == BackupStatus::Stored && !b.wal_start.is_empty())
        .map(|b| b.wal_start.as_str())
        .collect();
    let cutoff = unix_now() - i64::from(db.keep_days) * 86_400;
    let old: Vec<WalSegment> = state
        .store
        .wal_segments(&db.app, &db.env)
        .await?
        .into_iter()
        .filter(|s| {
            let (id, file) = split(&s.name);
            let needed_by = starts.iter().filter(|start| split(start).0 == id).min().copied();
            match needed_by {
                Some(start) => is_segment(file) && !from_start(&s.name, start),
                None => s.stored_unix < cutoff,
            }
        })
        .collect();
    if old.is_empty() {
        return Ok(());
    }
    for s in &old {
        let key = wal_key(&s.app, &s.env, &s.name);
        let _ = tokio::fs::remove_file(state.backup_storage.dir.join(&key)).await;
        if let Some(s3) = &state.backup_storage.s3 {
            s3.delete(&key).await?;
        }
    }
    let names: Vec<String> = old.iter().map(|s| s.name.clone()).collect();
    state.store.delete_wal_segments(&db.app, &db.env, &names).await?;
    tracing::info!(app = %db.app, env = %db.env, files = names.len(), "retention: deleted WAL no base backup needs");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_utc_with_an_offset() {
        let (unix, t) = recovery_target("2026-11-27T11:42:00.5+01:00").unwrap();
        assert_eq!(t, "2026-11-27 10:42:00.500000+00");
        assert_eq!(unix, 1_795_776_120);
        assert!(recovery_target("yesterday").is_none());
    }

    #[test]
    fn only_archiver_names_are_accepted() {
        for ok in [
            "000000010000000000000003.gz",
            "00000002.history.gz",
            "000000010000000000000003.00000028.backup.gz",
            "000000010000000000000003.partial.gz",
        ] {
            assert!(valid_wal_name(ok), "{ok}");
        }
        for bad in
            ["../../etc/passwd.gz", "000000010000000000000003", "00000001000000000000000g.gz", "a.gz", ""]
        {
            assert!(!valid_wal_name(bad), "{bad}");
        }
        assert!(is_segment("000000010000000000000003.gz"));
        assert!(!is_segment("00000002.history.gz"));
        let start = "7300000000000000001/000000010000000000000003";
        assert!(from_start("7300000000000000001/000000010000000000000003.gz", start));
        assert!(from_start("7300000000000000001/000000010000000000000010.gz", start));
        assert!(!from_start("7300000000000000001/000000010000000000000002.gz", start));
        assert!(!from_start("7300000000000000002/000000010000000000000004.gz", start));
        assert!(!from_start("7300000000000000001/00000002.history.gz", start));
        assert!(valid_system_id("7300000000000000001") && !valid_system_id("../x"));
    }
}

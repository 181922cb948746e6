//! One-time move of an earlier release's log store (SQLite, `logs.db` in the data directory)
//! into the segment store: lines keep their ids (drains' positions and followers' cursors name
//! them), and nodes' positions, losses and per-app limits come along. It resumes after the last
//! id already moved when a restart cut it short, and deletes `logs.db` once all of it is in.

use super::meta::{chain_key, DropRec, Entry, Limits, NodePos};
use super::store::{Groups, LogStore};
use protocol::logs::{LogSource, LogStream, ShippedLine};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::Row;
use std::path::Path;
use std::str::FromStr;

/// Lines read per step.
const CHUNK: i64 = 5000;

/// Moves `db` into `store` if it exists; answers how many lines came.
pub async fn from_sqlite(store: &LogStore, db: &Path) -> anyhow::Result<u64> {
    if !db.exists() {
        return Ok(0);
    }
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))?.read_only(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
    let mut moved = 0u64;
    let has_lines: bool =
        sqlx::query_scalar("SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'lines'")
            .fetch_one(&pool)
            .await?;
    loop {
        if !has_lines {
            break;
        }
        let after = store.lock().state.last_id;
        let rows = sqlx::query(
            "SELECT id, node, at, app, env, source, process, replica, release, stream, text FROM lines
             WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(CHUNK)
        .fetch_all(&pool)
        .await?;
        if rows.is_empty() {
            break;
        }
        let mut lines = Vec::with_capacity(rows.len());
        for r in &rows {
            let source: String = r.try_get("source")?;
            let stream: String = r.try_get("stream")?;
            let line = ShippedLine {
                seq: 0,
                at: String::new(),
                app: r.try_get("app")?,
                env: r.try_get("env")?,
                source: LogSource::from_str(&source).unwrap_or(LogSource::App),
                process: r.try_get("process")?,
                replica: r.try_get("replica")?,
                release: r.try_get("release")?,
                stream: LogStream::from_str(&stream).unwrap_or(LogStream::Stdout),
                text: r.try_get("text")?,
            };
            let (id, at, node): (i64, i64, String) = (r.try_get("id")?, r.try_get("at")?, r.try_get("node")?);
            lines.push((id, at, node, line));
        }
        let borrowed: Vec<_> =
            lines.iter().map(|(id, at, node, l)| (*id, *at, node.as_str(), l.borrowed())).collect();
        // A record holds one node's lines: one append per run of one node's lines, so every
        // chain's records stay in id order.
        let mut s = store.lock();
        for run in borrowed.chunk_by(|a, b| a.2 == b.2) {
            let mut groups: Groups<'_, '_> = Groups::new();
            for (id, at, _, l) in run {
                if protocol::AppName::new(&*l.app).is_ok() && protocol::EnvName::new(&*l.env).is_ok() {
                    groups.entry(chain_key(&l.app, &l.env)).or_default().push((*id, *at, l));
                }
            }
            s.append_with_ids(run[0].2, &groups)?;
        }
        // Ids must move past the chunk even where its lines were left out.
        let last = borrowed.last().map_or(after, |l| l.0);
        s.record(Entry::Ends { last_id: last, ends: Vec::new() })?;
        moved += rows.len() as u64;
    }
    let mut tail: Vec<Entry> = Vec::new();
    if has_lines {
        for r in sqlx::query("SELECT node, through FROM nodes").fetch_all(&pool).await? {
            let pos = NodePos { through: r.try_get("through")?, ..NodePos::default() };
            let last_id = store.lock().state.last_id;
            tail.push(Entry::Batch { node: r.try_get("node")?, pos, last_id, ends: Vec::new() });
        }
        for r in sqlx::query("SELECT app, env, at, mark, lines, why FROM dropped").fetch_all(&pool).await? {
            let lines: i64 = r.try_get("lines")?;
            tail.push(Entry::Drop(DropRec {
                app: r.try_get("app")?,
                env: r.try_get("env")?,
                at: r.try_get("at")?,
                mark: r.try_get("mark")?,
                lines: u64::try_from(lines).unwrap_or(0),
                why: r.try_get("why")?,
            }));
        }
        for r in sqlx::query("SELECT app, age_secs, max_bytes FROM app_limits").fetch_all(&pool).await? {
            let (age, max): (Option<i64>, Option<i64>) = (r.try_get("age_secs")?, r.try_get("max_bytes")?);
            let limits = Limits {
                age_secs: age.and_then(|a| u64::try_from(a).ok()),
                max_bytes: max.and_then(|m| u64::try_from(m).ok()),
            };
            tail.push(Entry::Limits { app: r.try_get("app")?, limits });
        }
    }
    pool.close().await;
    {
        let mut s = store.lock();
        for e in tail {
            s.record(e)?;
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.display());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("deleting {path}"))),
        }
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::store::{now_ns, Filter};

    #[tokio::test]
    async fn an_earlier_sqlite_store_moves_over_with_its_ids_positions_and_losses() {
        let dir = std::env::temp_dir().join(format!("paas-logs-import-{}-{}", std::process::id(), now_ns()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("logs.db");
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
            .unwrap()
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE lines (id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT, seq INTEGER, at INTEGER, app TEXT,
                env TEXT, source TEXT, process TEXT, replica INTEGER, release INTEGER, stream TEXT, text TEXT);
             CREATE TABLE nodes (node TEXT PRIMARY KEY, through INTEGER);
             CREATE TABLE dropped (id INTEGER PRIMARY KEY, app TEXT, env TEXT, at INTEGER, mark INTEGER, lines INTEGER, why TEXT);
             CREATE TABLE app_limits (app TEXT PRIMARY KEY, age_secs INTEGER, max_bytes INTEGER);
             INSERT INTO lines VALUES (3, 'n1', 1, 1000, 'shop', 'production', 'app', 'web', 1, 2, 'stdout', 'first');
             INSERT INTO lines VALUES (7, 'n2', 1, 2000, 'shop', 'production', 'router', 'router', 0, 2, 'stdout', 'GET /');
             INSERT INTO lines VALUES (8, 'n1', 2, 3000, 'shop', 'staging', 'app', 'web', 1, 1, 'stderr', 'oops');
             INSERT INTO nodes VALUES ('n1', 2), ('n2', 1);
             INSERT INTO dropped VALUES (1, 'shop', 'production', 0, 3, 5, 'agent');
             INSERT INTO app_limits VALUES ('shop', 3600, NULL);",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let store = LogStore::open(&dir.join("logs")).await.unwrap();
        assert_eq!(from_sqlite(&store, &db).await.unwrap(), 3);
        assert!(!db.exists(), "the old store is deleted once moved");
        let page = store
            .read("shop", "production", &Filter { n: 10, since: Some(0), ..Filter::default() })
            .await
            .unwrap();
        assert_eq!(
            page.lines.iter().map(|l| (l.id, l.text.as_str())).collect::<Vec<_>>(),
            [(3, "first"), (7, "GET /")]
        );
        assert_eq!((page.lines[1].node.as_str(), page.lines[1].source), ("n2", LogSource::Router));
        assert_eq!(page.dropped, 5);
        assert_eq!(store.through("n1").await.unwrap(), 2);
        assert_eq!(store.app_limits("shop").await.unwrap(), (Some(3600), None));
        // New lines come after the imported ids, and a resent one is not stored twice.
        let line = |seq| ShippedLine {
            seq,
            at: crate::logs::store::format_time(4000),
            app: "shop".into(),
            env: "production".into(),
            source: LogSource::App,
            process: "web".into(),
            replica: 1,
            release: 2,
            stream: LogStream::Stdout,
            text: format!("seq {seq}"),
        };
        let batch = protocol::logs::LogBatch { lines: vec![line(2), line(3)], ..Default::default() };
        store.insert("n1", &batch, 0).await.unwrap();
        let page = store.read("shop", "production", &Filter { n: 10, ..Filter::default() }).await.unwrap();
        assert_eq!(page.lines.last().map(|l| (l.id, l.text.as_str())), Some((9, "seq 3")));
        assert_eq!(page.lines.len(), 3);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

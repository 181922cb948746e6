//! The log store: shipped lines in their own SQLite file (`logs.db`, so log writes never wait
//! on state.db's write lock), deduplicated by (node, seq), searchable through an FTS5 index,
//! with each node's acknowledged position and the counts of lines lost to caps.

use anyhow::Context;
use protocol::logs::{LogBatch, LogEntry, LogSource, LogStream};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The schema; `user_version` says which one a file holds. Ids are AUTOINCREMENT so they never
/// go back after the store was emptied: followers' cursors stay valid.
const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL, -- unix nanoseconds
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    source TEXT NOT NULL,
    process TEXT NOT NULL,
    replica INTEGER NOT NULL,
    release INTEGER NOT NULL,
    stream TEXT NOT NULL,
    text TEXT NOT NULL,
    UNIQUE (node, seq)
);
CREATE INDEX IF NOT EXISTS lines_by_env_id ON lines (app, env, id);
CREATE INDEX IF NOT EXISTS lines_by_env_at ON lines (app, env, at);
CREATE VIRTUAL TABLE IF NOT EXISTS lines_fts USING fts5 (text, content = 'lines', content_rowid = 'id');
CREATE TRIGGER IF NOT EXISTS lines_fts_insert AFTER INSERT ON lines BEGIN
    INSERT INTO lines_fts (rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS lines_fts_delete AFTER DELETE ON lines BEGIN
    INSERT INTO lines_fts (lines_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
-- Per node, the highest seq stored with every seq below it (the agent forgets lines up to it).
CREATE TABLE IF NOT EXISTS nodes (
    node TEXT PRIMARY KEY,
    through INTEGER NOT NULL
);
-- Lines lost: to an agent's full spool ('agent'), the store's size cap ('size') or its age
-- limit ('age'). `at` is when the lines were written (for 'agent': when the loss was heard of),
-- `mark` the highest line id stored when the loss was recorded (followers see it once).
CREATE TABLE IF NOT EXISTS dropped (
    id INTEGER PRIMARY KEY,
    app TEXT NOT NULL,
    env TEXT NOT NULL,
    at INTEGER NOT NULL,
    mark INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    why TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dropped_by_env_at ON dropped (app, env, at);
-- Per app, retention tighter than the store's (`paas apps log-retention`); NULL: the store's.
CREATE TABLE IF NOT EXISTS app_limits (
    app TEXT PRIMARY KEY,
    age_secs INTEGER,
    max_bytes INTEGER
);
";

/// Lines per INSERT statement (11 values each, well under SQLite's limit of bound values).
const INSERT_CHUNK: usize = 500;
/// Lines deleted per transaction by retention, so a large trim never holds the write lock long.
pub(super) const DELETE_CHUNK: i64 = 20_000;
const MINUTE_NS: i64 = 60_000_000_000;
/// Below this many matches a search reads the matching lines by the text index.
const FEW_MATCHES: i64 = 20_000;
/// A search matching many lines first looks among this many of its newest matches.
const NEWEST_MATCHES: u32 = 20_000;

/// What a read asks for; the text search is already an FTS5 query (see `mod.rs`).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub process: Option<String>,
    pub source: Option<LogSource>,
    /// Unix nanoseconds, inclusive.
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub fts: Option<String>,
    pub n: u32,
    /// Only lines stored after this id, oldest first (follow mode); otherwise the newest `n`.
    pub after: Option<i64>,
}

/// A page as the store read it, in time order (follow pages: in store order).
#[derive(Debug, Clone)]
pub struct Page {
    pub lines: Vec<LogEntry>,
    pub cursor: i64,
    pub dropped: u64,
}

/// What retention removed in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub by_age: u64,
    pub by_size: u64,
}

#[derive(Clone)]
pub struct LogStore {
    pub(crate) pool: SqlitePool,
    /// Per `app/env`, the highest line id stored: follow-mode readers wait on it.
    stored: Arc<watch::Sender<HashMap<String, i64>>>,
    /// Text bytes stored since retention last ran, and the amount that wakes it early: a
    /// flood must not run past the size cap until the next scheduled run.
    growth: Arc<Growth>,
}

#[derive(Default)]
struct Growth {
    bytes: std::sync::atomic::AtomicU64,
    limit: std::sync::atomic::AtomicU64,
    wake: tokio::sync::Notify,
}

fn key(app: &str, env: &str) -> String {
    format!("{app}/{env}")
}

/// Unix nanoseconds of an RFC 3339 time.
pub fn parse_time(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// RFC 3339 in UTC with all nine digits of the fraction: the same width for every line, so
/// times line up in a terminal and sort as text.
pub fn format_time(ns: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(ns.into())
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

pub fn now_ns() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

impl LogStore {
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Lines an agent resends after a crash cost nothing: a lost commit is sent again.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .with_context(|| format!("opening the log store {}", path.display()))?;
        Self::init(pool).await.with_context(|| format!("preparing the log store {}", path.display()))
    }

    /// A store in memory, for tests: one connection that is never closed.
    pub async fn open_in_memory() -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await?;
        Self::init(pool).await
    }

    async fn init(pool: SqlitePool) -> anyhow::Result<Self> {
        let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(&pool).await?;
        anyhow::ensure!(
            version <= SCHEMA_VERSION,
            "the log store was written by a newer paas (schema {version}); move logs.db aside to start an empty one"
        );
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        sqlx::query(&format!("PRAGMA user_version = {SCHEMA_VERSION}")).execute(&pool).await?;
        let stored = Arc::new(watch::channel(HashMap::new()).0);
        let growth = Arc::new(Growth { limit: u64::MAX.into(), ..Default::default() });
        Ok(Self { pool, stored, growth })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(super) async fn write_tx(&self) -> sqlx::Result<sqlx::Transaction<'static, Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    /// Stores a node's batch: each (node, seq) once, however often it comes. Answers the
    /// node's new `through`. Lines whose time cannot be read are stored at `now`.
    pub async fn insert(&self, node: &str, batch: &LogBatch, now: i64) -> anyhow::Result<u64> {
        self.insert_known(node, batch, now, None).await
    }

    /// [`LogStore::insert`], leaving out lines of environments not in `known` (deleted while
    /// their last lines were on the way: a new app of the same name must not show them);
    /// they count as stored, so the node's position moves past them.
    pub async fn insert_known(
        &self,
        node: &str,
        batch: &LogBatch,
        now: i64,
        known: Option<&std::collections::HashSet<(String, String)>>,
    ) -> anyhow::Result<u64> {
        let mut skipped = std::collections::BTreeSet::new();
        let mut tx = self.write_tx().await?;
        let mark = last_id(&mut tx).await?;
        let mut new = 0u64;
        let mut added = 0u64;
        let mut newest: HashMap<String, i64> = HashMap::new();
        let mut rows = Vec::with_capacity(batch.lines.len());
        for line in &batch.lines {
            let Ok(seq) = i64::try_from(line.seq) else { continue };
            if known.is_some_and(|k| !k.contains(&(line.app.clone(), line.env.clone()))) {
                skipped.insert(seq);
                continue;
            }
            rows.push((seq, line));
        }
        // Many rows per statement: one statement per line costs most of the time a batch takes.
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO lines (node, seq, at, app, env, source, process, replica, release, stream, text) ",
            );
            q.push_values(chunk, |mut b, (seq, l)| {
                b.push_bind(node)
                    .push_bind(*seq)
                    .push_bind(parse_time(&l.at).unwrap_or(now))
                    .push_bind(&l.app)
                    .push_bind(&l.env)
                    .push_bind(l.source.as_str())
                    .push_bind(&l.process)
                    .push_bind(l.replica)
                    .push_bind(l.release)
                    .push_bind(l.stream.as_str())
                    .push_bind(&l.text);
            });
            q.push(" ON CONFLICT (node, seq) DO NOTHING RETURNING id, app, env, length(CAST(text AS BLOB))");
            for row in q.build().fetch_all(&mut *tx).await? {
                let (id, app, env, len): (i64, String, String, i64) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
                new += 1;
                added += u64::try_from(len).unwrap_or(0);
                let newest = newest.entry(key(&app, &env)).or_insert(id);
                *newest = (*newest).max(id);
            }
        }
        // A resent batch (every line stored before) does not count its losses twice.
        if batch.lines.is_empty() || new > 0 {
            for d in batch.dropped.iter().filter(|d| d.lines > 0) {
                record_drop(&mut tx, &d.app, &d.env, now, mark, d.lines, "agent").await?;
            }
        }
        let mut through: i64 = sqlx::query_scalar("SELECT through FROM nodes WHERE node = ?")
            .bind(node)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(0);
        // An agent sends its oldest unacknowledged line first: a batch that starts past the gap
        // means the agent no longer holds the lines in it (its spool dropped them and counted
        // them as dropped). Waiting for them would stall the node's shipping for good.
        let first = batch.lines.iter().map(|l| l.seq).min().and_then(|s| i64::try_from(s).ok());
        if let Some(first) = first.filter(|f| *f > through + 1) {
            through = first - 1;
        }
        // The agent says so itself when its spool dropped lines: none up to here will come.
        through = through.max(i64::try_from(batch.forgotten_through).unwrap_or(0));
        let above: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM lines WHERE node = ? AND seq > ? ORDER BY seq LIMIT 100000")
                .bind(node)
                .bind(through)
                .fetch_all(&mut *tx)
                .await?;
        let mut next: std::collections::BTreeSet<i64> = above.into_iter().collect();
        next.extend(skipped.into_iter().filter(|s| *s > through));
        for seq in next {
            if seq != through + 1 {
                break;
            }
            through = seq;
        }
        sqlx::query(
            "INSERT INTO nodes (node, through) VALUES (?, ?)
             ON CONFLICT (node) DO UPDATE SET through = max(through, excluded.through)",
        )
        .bind(node)
        .bind(through)
        .execute(&mut *tx)
        .await?;
        let through: i64 = sqlx::query_scalar("SELECT through FROM nodes WHERE node = ?")
            .bind(node)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        if !newest.is_empty() {
            self.stored.send_modify(|m| m.extend(newest));
        }
        let g = &self.growth;
        let grown = g.bytes.fetch_add(added, Ordering::Relaxed) + added;
        if added > 0 && grown >= g.limit.load(Ordering::Relaxed) {
            g.wake.notify_one();
        }
        Ok(u64::try_from(through).unwrap_or(0))
    }

    /// Deletes every line of `app` (of its environment `env` when given) stored so far, and
    /// its loss records: the app or environment was deleted, and a new one of the same name
    /// must start with an empty log.
    pub async fn forget(&self, app: &str, env: Option<&str>) -> anyhow::Result<u64> {
        let mark = {
            let mut conn = self.pool.acquire().await?;
            last_id(&mut conn).await?
        };
        let mut gone = 0;
        loop {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query(
                "DELETE FROM lines WHERE id IN (SELECT id FROM lines WHERE app = ? AND (? IS NULL OR env = ?)
                 AND id <= ? LIMIT ?)",
            )
            .bind(app)
            .bind(env)
            .bind(env)
            .bind(mark)
            .bind(DELETE_CHUNK)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                if env.is_none() {
                    sqlx::query("DELETE FROM app_limits WHERE app = ?").bind(app).execute(&mut *tx).await?;
                }
                sqlx::query("DELETE FROM dropped WHERE app = ? AND (? IS NULL OR env = ?)")
                    .bind(app)
                    .bind(env)
                    .bind(env)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(gone);
            }
            tx.commit().await?;
            gone += done.rows_affected();
        }
    }

    /// Waits until `bytes` of text were stored since the previous call, or `wait` passes;
    /// retention calls it between runs so that a flood is trimmed as it comes.
    pub async fn wait_for_growth(&self, bytes: u64, wait: Duration) {
        let g = &self.growth;
        g.limit.store(bytes.max(1), Ordering::Relaxed);
        if g.bytes.load(Ordering::Relaxed) < bytes {
            let _ = tokio::time::timeout(wait, g.wake.notified()).await;
        }
        g.bytes.store(0, Ordering::Relaxed);
    }

    /// Waits until a line of `app`/`env` with an id above `after` is stored, or `wait` passes.
    pub async fn wait_for_lines(&self, app: &str, env: &str, after: i64, wait: Duration) {
        let mut rx = self.stored.subscribe();
        let key = key(app, env);
        let _ = tokio::time::timeout(wait, rx.wait_for(|m| m.get(&key).is_some_and(|id| *id > after))).await;
    }

    /// A page of `app`/`env`'s lines: the newest `n` matching in time order, or in follow mode
    /// the first `n` stored after `after`; with the lines lost in the span the page covers.
    pub async fn read(&self, app: &str, env: &str, f: &Filter) -> anyhow::Result<Page> {
        // One read transaction: the cursor and the lines come from the same snapshot.
        let mut tx = self.pool.begin().await?;
        let newest = last_id(&mut tx).await?;
        // A search matching few lines is answered from the text index, then the lines; one
        // matching many, from the environment's newest lines, which soon hold enough matches.
        let few = match (&f.fts, f.after) {
            (Some(fts), None) => {
                let matches: i64 = sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM (SELECT rowid FROM lines_fts WHERE lines_fts MATCH ? LIMIT {FEW_MATCHES})"
                ))
                .bind(fts)
                .fetch_one(&mut *tx)
                .await?;
                matches < FEW_MATCHES
            }
            _ => false,
        };
        // A search matching many lines looks among the newest matches first (the text index
        // reads them newest first without touching the rest), and among all only when those
        // hold too few of this environment's.
        let scopes: &[Option<u32>] = match (&f.fts, few, f.after) {
            (Some(_), false, None) => &[Some(NEWEST_MATCHES), None],
            _ => &[None],
        };
        let mut rows = Vec::new();
        for scope in scopes {
            rows = self.query(app, env, f, few, *scope).build().fetch_all(&mut *tx).await?;
            if rows.len() >= f.n as usize {
                break;
            }
        }
        let mut lines = rows.iter().map(entry).collect::<anyhow::Result<Vec<_>>>()?;
        let full = lines.len() as u64 >= u64::from(f.n);
        if f.after.is_none() {
            lines.reverse();
        }
        let cursor = match (f.after, full) {
            // More are waiting: continue after the last one read.
            (Some(_), true) => lines.last().map_or(newest, |l| l.id),
            (Some(after), false) => newest.max(after),
            (None, _) => newest,
        };
        let dropped = match f.after {
            // Follow pages: losses recorded since the previous page, each seen once. Lines aged
            // out long ago are not news to a follower.
            Some(after) => {
                sqlx::query_scalar::<_, i64>(
                    "SELECT COALESCE(SUM(lines), 0) FROM dropped
                     WHERE app = ? AND env = ? AND mark >= ? AND mark < ? AND why != 'age'",
                )
                .bind(app)
                .bind(env)
                .bind(after)
                .bind(cursor)
                .fetch_one(&mut *tx)
                .await?
            }
            None => {
                // The span: what was asked for, narrowed to the lines shown when there are more.
                let first = lines.first().filter(|_| full).map(|l| parse_time(&l.at).unwrap_or(i64::MIN));
                // Losses are recorded per minute: a span takes in the minute it starts in.
                let minute = |t: i64| t.saturating_sub(t.rem_euclid(MINUTE_NS));
                let lo = minute(f.since.unwrap_or(i64::MIN).max(first.unwrap_or(i64::MIN)));
                let hi = f.until.unwrap_or(i64::MAX);
                // Lines aged out count only when the caller asked for a time reaching back.
                let age = if f.since.is_some() { "" } else { "AND why != 'age'" };
                sqlx::query_scalar::<_, i64>(&format!(
                    "SELECT COALESCE(SUM(lines), 0) FROM dropped WHERE app = ? AND env = ? AND at >= ? AND at <= ? {age}"
                ))
                .bind(app)
                .bind(env)
                .bind(lo)
                .bind(hi)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        Ok(Page { lines, cursor, dropped: u64::try_from(dropped).unwrap_or(0) })
    }

    /// The statement of a read: `few` when the search matches few lines (read by the text
    /// index), `newest` to look only among the search's newest this many matches.
    fn query<'a>(
        &self,
        app: &'a str,
        env: &'a str,
        f: &'a Filter,
        few: bool,
        newest: Option<u32>,
    ) -> QueryBuilder<'a, Sqlite> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT l.id, l.node, l.at, l.source, l.process, l.replica, l.release, l.stream, l.text FROM ",
        );
        match (&f.fts, few) {
            // CROSS JOIN keeps SQLite from scanning the lines in time order instead.
            (Some(fts), true) => q
                .push("lines_fts CROSS JOIN lines l ON l.id = lines_fts.rowid WHERE lines_fts MATCH ")
                .push_bind(fts.clone())
                .push(" AND "),
            (Some(fts), false) => {
                q.push("lines l WHERE l.id IN (SELECT rowid FROM lines_fts WHERE lines_fts MATCH ")
                    .push_bind(fts.clone());
                // The text index applies a rowid bound itself: a follower reads only what is new.
                if let Some(after) = f.after {
                    q.push(" AND rowid > ").push_bind(after);
                }
                if let Some(newest) = newest {
                    q.push(" ORDER BY rowid DESC LIMIT ").push_bind(i64::from(newest));
                }
                q.push(") AND ")
            }
            (None, _) => q.push("lines l WHERE "),
        };
        q.push("l.app = ").push_bind(app).push(" AND l.env = ").push_bind(env);
        if let Some(p) = &f.process {
            q.push(" AND l.process = ").push_bind(p.clone());
        }
        if let Some(s) = f.source {
            q.push(" AND l.source = ").push_bind(s.as_str());
        }
        if let Some(t) = f.since {
            q.push(" AND l.at >= ").push_bind(t);
        }
        if let Some(t) = f.until {
            q.push(" AND l.at <= ").push_bind(t);
        }
        match f.after {
            Some(after) => q.push(" AND l.id > ").push_bind(after).push(" ORDER BY l.id"),
            None => q.push(" ORDER BY l.at DESC, l.id DESC"),
        };
        q.push(" LIMIT ").push_bind(i64::from(f.n));
        q
    }

    /// The node's acknowledged position.
    pub async fn through(&self, node: &str) -> anyhow::Result<u64> {
        let t: Option<i64> = sqlx::query_scalar("SELECT through FROM nodes WHERE node = ?")
            .bind(node)
            .fetch_optional(&self.pool)
            .await?;
        Ok(t.and_then(|t| u64::try_from(t).ok()).unwrap_or(0))
    }

    /// Bytes the store's pages hold (free pages, which new lines reuse, not counted).
    pub async fn used_bytes(&self) -> anyhow::Result<u64> {
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&self.pool).await?;
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count").fetch_one(&self.pool).await?;
        let size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(&self.pool).await?;
        Ok(u64::try_from((pages - free).max(0) * size).unwrap_or(0))
    }

    pub async fn count(&self) -> anyhow::Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM lines").fetch_one(&self.pool).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes lines written before `cutoff` (unix ns), then the oldest lines until the store
    /// holds at most `max_bytes`; what goes is recorded as dropped, per app, env and minute.
    pub async fn trim(&self, cutoff: i64, max_bytes: u64) -> anyhow::Result<Trimmed> {
        let mut trimmed = Trimmed::default();
        loop {
            let n = self
                .delete_where("id IN (SELECT id FROM lines WHERE at < ? ORDER BY id LIMIT ?)", cutoff, "age")
                .await?;
            trimmed.by_age += n;
            if n < DELETE_CHUNK as u64 {
                break;
            }
        }
        let used = self.used_bytes().await?;
        if used > max_bytes {
            // Down to 90% of the cap, so a store at its cap is not trimmed on every run; deleted
            // pages are reused, not returned, so the share of lines to go is an estimate.
            let lines = self.count().await?;
            let over = used - max_bytes * 9 / 10;
            let mut left = ((lines as u128 * over as u128).div_ceil(used as u128) as u64).max(1);
            while left > 0 {
                let chunk = left.min(DELETE_CHUNK as u64) as i64;
                let n = self
                    .delete_where("id IN (SELECT id FROM lines ORDER BY id LIMIT ?)", chunk, "size")
                    .await?;
                trimmed.by_size += n;
                if n == 0 {
                    break;
                }
                left = left.saturating_sub(n);
            }
        }
        if trimmed.by_size > 0 {
            // Deleted lines leave tombstones in the text index until its segments merge: a
            // bounded merge now, so the next run measures a store that shrank.
            sqlx::query("INSERT INTO lines_fts (lines_fts, rank) VALUES ('merge', 2000)")
                .execute(&self.pool)
                .await?;
        }
        // Losses are kept four times as long as lines, then forgotten too.
        let forget = cutoff.saturating_sub(now_ns().saturating_sub(cutoff).saturating_mul(3));
        sqlx::query("DELETE FROM dropped WHERE at < ?").bind(forget).execute(&self.pool).await?;
        Ok(trimmed)
    }

    /// Deletes the lines `selection` (binding `arg`, then a chunk size when it takes two) picks,
    /// recording them as dropped for `why`; answers how many went.
    pub(super) async fn delete_where(&self, selection: &str, arg: i64, why: &str) -> anyhow::Result<u64> {
        let mut tx = self.write_tx().await?;
        let ids: Vec<i64> = {
            let sql = format!("SELECT id FROM lines WHERE {selection}");
            let mut q = sqlx::query_scalar(&sql).bind(arg);
            if selection.matches('?').count() == 2 {
                q = q.bind(DELETE_CHUNK);
            }
            q.fetch_all(&mut *tx).await?
        };
        let (Some(lo), Some(hi)) = (ids.first().copied(), ids.last().copied()) else {
            return Ok(0);
        };
        let mark = last_id(&mut tx).await?;
        // The ids come oldest first; those between lo and hi that were not picked stay (an
        // age trim skips young lines among old ones).
        let picked = format!("id >= {lo} AND id <= {hi} AND {selection}");
        let groups = {
            let sql = format!(
                "SELECT app, env, at - (at % {MINUTE_NS}) AS minute, COUNT(*) AS n FROM lines WHERE {picked} GROUP BY app, env, minute"
            );
            let mut q = sqlx::query(&sql).bind(arg);
            if selection.matches('?').count() == 2 {
                q = q.bind(DELETE_CHUNK);
            }
            q.fetch_all(&mut *tx).await?
        };
        for g in &groups {
            let (app, env): (String, String) = (g.try_get("app")?, g.try_get("env")?);
            let (minute, n): (i64, i64) = (g.try_get("minute")?, g.try_get("n")?);
            record_drop(&mut tx, &app, &env, minute, mark, u64::try_from(n).unwrap_or(0), why).await?;
        }
        let sql = format!("DELETE FROM lines WHERE {picked}");
        let mut q = sqlx::query(&sql).bind(arg);
        if selection.matches('?').count() == 2 {
            q = q.bind(DELETE_CHUNK);
        }
        let n = q.execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}

/// The highest line id ever given (ids are never reused).
pub(crate) async fn last_id(tx: &mut sqlx::SqliteConnection) -> sqlx::Result<i64> {
    let id: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'lines'")
        .fetch_optional(&mut *tx)
        .await?;
    Ok(id.unwrap_or(0))
}

async fn record_drop(
    tx: &mut sqlx::SqliteConnection,
    app: &str,
    env: &str,
    at: i64,
    mark: i64,
    lines: u64,
    why: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO dropped (app, env, at, mark, lines, why) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(app)
        .bind(env)
        .bind(at)
        .bind(mark)
        .bind(i64::try_from(lines).unwrap_or(i64::MAX))
        .bind(why)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

fn entry(row: &sqlx::sqlite::SqliteRow) -> anyhow::Result<LogEntry> {
    let source: String = row.try_get("source")?;
    let stream: String = row.try_get("stream")?;
    Ok(LogEntry {
        id: row.try_get("id")?,
        at: format_time(row.try_get("at")?),
        source: LogSource::from_str(&source)?,
        process: row.try_get("process")?,
        replica: row.try_get("replica")?,
        release: row.try_get("release")?,
        node: row.try_get("node")?,
        stream: LogStream::from_str(&stream)?,
        text: row.try_get("text")?,
    })
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

//! The log store's reads for drains: an app's lines after a drain's position in store order
//! (per environment, each an index seek on `(app, env, id)`), how far behind a drain is, where
//! to skip to when it is too far behind, and what retention removed before it was sent.

use super::format::DrainLine;
use crate::logs::LogStore;
use protocol::logs::{LogSource, LogStream};
use sqlx::{QueryBuilder, Row, Sqlite};
use std::str::FromStr;

/// What a drain's read found.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    /// In store order (line id).
    pub lines: Vec<DrainLine>,
    /// The highest line id in the store when read: no line of these environments is between
    /// the drain's position and it but those read.
    pub newest: i64,
}

async fn newest_id(tx: &mut sqlx::SqliteConnection) -> sqlx::Result<i64> {
    let id: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'lines'")
        .fetch_optional(&mut *tx)
        .await?;
    Ok(id.unwrap_or(0))
}

fn line(row: &sqlx::sqlite::SqliteRow) -> anyhow::Result<DrainLine> {
    let source: String = row.try_get("source")?;
    let stream: String = row.try_get("stream")?;
    Ok(DrainLine {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        app: row.try_get("app")?,
        env: row.try_get("env")?,
        source: LogSource::from_str(&source)?,
        process: row.try_get("process")?,
        replica: row.try_get("replica")?,
        release: row.try_get("release")?,
        node: row.try_get("node")?,
        stream: LogStream::from_str(&stream)?,
        text: row.try_get("text")?,
    })
}

impl LogStore {
    /// The newest line id and the newest `dropped` row id: where a new drain starts.
    pub(crate) async fn drain_marks(&self) -> anyhow::Result<(i64, i64)> {
        let mut tx = self.pool.begin().await?;
        let lines = newest_id(&mut tx).await?;
        let dropped: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM dropped").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok((lines, dropped))
    }

    /// Up to `n` lines of `app`'s `envs` stored after line `after`, oldest first.
    pub(crate) async fn drain_lines(
        &self,
        app: &str,
        envs: &[String],
        after: i64,
        n: u32,
    ) -> anyhow::Result<Lines> {
        let mut tx = self.pool.begin().await?;
        let newest = newest_id(&mut tx).await?;
        let mut lines = Vec::new();
        for env in envs {
            let rows = sqlx::query(
                "SELECT id, node, at, app, env, source, process, replica, release, stream, text FROM lines
                 WHERE app = ? AND env = ? AND id > ? ORDER BY id LIMIT ?",
            )
            .bind(app)
            .bind(env)
            .bind(after)
            .bind(i64::from(n))
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                lines.push(line(row)?);
            }
        }
        tx.commit().await?;
        lines.sort_by_key(|l| l.id);
        lines.truncate(n as usize);
        Ok(Lines { lines, newest })
    }

    /// Lines of `app`'s `envs` stored after `after`, counting at most `cap` per environment.
    pub(crate) async fn drain_backlog(
        &self,
        app: &str,
        envs: &[String],
        after: i64,
        cap: u64,
    ) -> anyhow::Result<u64> {
        let mut total = 0u64;
        for env in envs {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT 1 FROM lines WHERE app = ? AND env = ? AND id > ? LIMIT ?)",
            )
            .bind(app)
            .bind(env)
            .bind(after)
            .bind(i64::try_from(cap).unwrap_or(i64::MAX))
            .fetch_one(&self.pool)
            .await?;
            total += u64::try_from(n).unwrap_or(0);
        }
        Ok(total)
    }

    /// When more than `keep` lines of `app`'s `envs` are stored after `after`: the position
    /// that leaves the newest `keep`, and how many lines it skips.
    pub(crate) async fn drain_skip(
        &self,
        app: &str,
        envs: &[String],
        after: i64,
        keep: u64,
    ) -> anyhow::Result<Option<(i64, u64)>> {
        if envs.is_empty() {
            return Ok(None);
        }
        let keep = i64::try_from(keep).unwrap_or(i64::MAX - 1);
        let mut tx = self.pool.begin().await?;
        // The (keep+1)-th newest line across the environments: each gives its newest keep+1.
        let mut q = QueryBuilder::<Sqlite>::new("SELECT id FROM (");
        for (i, env) in envs.iter().enumerate() {
            if i > 0 {
                q.push(" UNION ALL ");
            }
            q.push("SELECT id FROM (SELECT id FROM lines WHERE app = ")
                .push_bind(app)
                .push(" AND env = ")
                .push_bind(env.clone())
                .push(" AND id > ")
                .push_bind(after)
                .push(" ORDER BY id DESC LIMIT ")
                .push_bind(keep + 1)
                .push(")");
        }
        q.push(") ORDER BY id DESC LIMIT 1 OFFSET ").push_bind(keep);
        let cut: Option<i64> = q.build_query_scalar().fetch_optional(&mut *tx).await?;
        let Some(cut) = cut else {
            return Ok(None);
        };
        let mut skipped = 0u64;
        for env in envs {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM lines WHERE app = ? AND env = ? AND id > ? AND id <= ?",
            )
            .bind(app)
            .bind(env)
            .bind(after)
            .bind(cut)
            .fetch_one(&mut *tx)
            .await?;
            skipped += u64::try_from(n).unwrap_or(0);
        }
        tx.commit().await?;
        Ok(Some((cut, skipped)))
    }

    /// Lines of `app`'s `envs` that retention removed, recorded after `dropped` row `seen`,
    /// before a drain at `position` sent them. Answers the newest `dropped` row looked at and
    /// the count. Only a drain `behind` (it had unsent lines) can lose any. Retention removes
    /// the oldest lines first: a trim recorded when the store held lines past `position` took
    /// unsent lines when the environment's oldest remaining line is past `position` too (the
    /// trim's lines the drain had sent are then counted as well: an overcount of at most one
    /// trim, only for a drain that had fallen that far behind).
    pub(crate) async fn drain_trimmed(
        &self,
        app: &str,
        envs: &[String],
        seen: i64,
        position: i64,
        behind: bool,
    ) -> anyhow::Result<(i64, u64)> {
        let mut tx = self.pool.begin().await?;
        let newest: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM dropped").fetch_one(&mut *tx).await?;
        if !behind || newest <= seen {
            return Ok((newest.max(seen), 0));
        }
        let rows = sqlx::query(
            "SELECT env, mark, lines FROM dropped
             WHERE id > ? AND id <= ? AND app = ? AND why IN ('age', 'size') ORDER BY id",
        )
        .bind(seen)
        .bind(newest)
        .bind(app)
        .fetch_all(&mut *tx)
        .await?;
        let mut lost = 0u64;
        for row in rows {
            let (env, mark, lines): (String, i64, i64) =
                (row.try_get("env")?, row.try_get("mark")?, row.try_get("lines")?);
            if !envs.contains(&env) || mark <= position {
                continue;
            }
            let oldest: Option<i64> =
                sqlx::query_scalar("SELECT MIN(id) FROM lines WHERE app = ? AND env = ?")
                    .bind(app)
                    .bind(&env)
                    .fetch_one(&mut *tx)
                    .await?;
            if oldest.is_none_or(|o| o > position) {
                lost += u64::try_from(lines).unwrap_or(0);
            }
        }
        tx.commit().await?;
        Ok((newest.max(seen), lost))
    }
}

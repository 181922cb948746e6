//! Log drains in state.db: each one's sealed URL, its delivery position in the log store and its
//! counters. A drain goes with its app or environment (foreign keys, in the same delete).

use super::{now, Result, Store};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DrainRow {
    pub id: String,
    pub app: String,
    /// `None`: every environment of the app.
    pub env: Option<String>,
    /// Sealed (hex): open it with the data directory's secret box.
    pub url: String,
    pub created_at: String,
    pub created_by: String,
    /// The highest log store line id delivered or skipped.
    pub position: i64,
    pub delivered: i64,
    pub dropped: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_success_at: Option<String>,
}

/// What a step of a drain's worker changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainProgress {
    pub position: i64,
    /// Added to the counters.
    pub delivered: u64,
    pub dropped: u64,
    /// Lines were sent: the drain is healthy again.
    pub success: bool,
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    pub async fn insert_drain(&self, d: &DrainRow) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            "INSERT INTO drains (id, app, env, url, created_at, created_by, position)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&d.id)
        .bind(&d.app)
        .bind(&d.env)
        .bind(&d.url)
        .bind(&d.created_at)
        .bind(&d.created_by)
        .bind(d.position)
        .execute(ex)
        .await)?;
        Ok(())
    }

    pub async fn list_drains(&self, app: &str) -> Result<Vec<DrainRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM drains WHERE app = $1 ORDER BY created_at, id"
        )
        .bind(app)
        .fetch_all(ex)
        .await)?)
    }

    /// Every drain's id, for the worker that runs them.
    pub async fn drain_ids(&self) -> Result<Vec<String>> {
        Ok(on!(self.pool, |ex| sqlx::query_scalar("SELECT id FROM drains ORDER BY id").fetch_all(ex).await)?)
    }

    pub async fn get_drain(&self, id: &str) -> Result<Option<DrainRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM drains WHERE id = $1")
            .bind(id)
            .fetch_optional(ex)
            .await)?)
    }

    /// Deletes `app`'s drain `id`; false when it has none of that id.
    pub async fn delete_drain(&self, app: &str, id: &str) -> Result<bool> {
        let done = exec!(self.pool, |ex| sqlx::query("DELETE FROM drains WHERE app = $1 AND id = $2")
            .bind(app)
            .bind(id)
            .execute(ex)
            .await)?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a worker's step: the position only moves forward, counters add up.
    pub async fn drain_progress(&self, id: &str, p: &DrainProgress) -> Result<()> {
        let success = p.success.then(now);
        exec!(self.pool, |ex| {
            sqlx::query(
            "UPDATE drains SET position = CASE WHEN position > $1 THEN position ELSE $1 END, delivered = delivered + $2, dropped = dropped + $3,
                last_success_at = COALESCE($4, last_success_at),
                last_error = CASE WHEN $5 THEN NULL ELSE last_error END,
                last_error_at = CASE WHEN $6 THEN NULL ELSE last_error_at END
             WHERE id = $7",
        )
        .bind(p.position)
        .bind(count(p.delivered))
        .bind(count(p.dropped))
        .bind(success)
        .bind(p.success)
        .bind(p.success)
        .bind(id)
        .execute(ex)
        .await
        })?;
        Ok(())
    }

    /// Records why the drain's last attempt failed (one sentence, no URL in it).
    pub async fn drain_failed(&self, id: &str, error: &str) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            "UPDATE drains SET last_error = $1, last_error_at = $2 WHERE id = $3"
        )
        .bind(error)
        .bind(now())
        .bind(id)
        .execute(ex)
        .await)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(id: &str, env: Option<&str>) -> DrainRow {
        DrainRow {
            id: id.into(),
            app: "shop".into(),
            env: env.map(str::to_string),
            url: "sealed".into(),
            created_at: now(),
            created_by: "admin".into(),
            position: 5,
            delivered: 0,
            dropped: 0,
            last_error: None,
            last_error_at: None,
            last_success_at: None,
        }
    }

    #[tokio::test]
    async fn drains_count_up_and_go_with_their_app_or_environment() {
        let store = Store::open_in_memory().await.unwrap();
        store.create_app("shop").await.unwrap();
        store.create_env("shop", "staging").await.unwrap();
        store.insert_drain(&drain("d-1", None)).await.unwrap();
        store.insert_drain(&drain("d-2", Some("staging"))).await.unwrap();
        // An environment that does not exist is refused by the foreign key.
        assert!(store.insert_drain(&drain("d-3", Some("nope"))).await.is_err());

        store.drain_failed("d-1", "the drain refused the connection").await.unwrap();
        let p = DrainProgress { position: 9, delivered: 4, dropped: 1, success: true };
        store.drain_progress("d-1", &p).await.unwrap();
        // A position never goes back.
        let back = DrainProgress { position: 7, delivered: 1, ..Default::default() };
        store.drain_progress("d-1", &back).await.unwrap();
        let d = store.get_drain("d-1").await.unwrap().unwrap();
        assert_eq!((d.position, d.delivered, d.dropped), (9, 5, 1));
        assert!(d.last_error.is_none() && d.last_success_at.is_some());

        store.delete_env("shop", "staging").await.unwrap();
        assert_eq!(store.drain_ids().await.unwrap(), ["d-1"]);
        assert!(!store.delete_drain("other", "d-1").await.unwrap());
        store.delete_app("shop").await.unwrap();
        assert!(store.drain_ids().await.unwrap().is_empty());
    }
}

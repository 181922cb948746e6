//! The WAL archive's index: one row per stored segment or history file of a database, so
//! point-in-time recovery knows what it can replay and retention what it may delete.

use super::{BindKey, Result, Store};
use sqlx::types::Json;

/// One archived file (`000000010000000000000003.gz`, `00000002.history.gz`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WalSegment {
    pub app: String,
    pub env: String,
    pub name: String,
    #[sqlx(try_from = "i64")]
    pub size_bytes: u64,
    pub sha256: String,
    #[sqlx(json)]
    pub locations: Vec<String>,
    pub stored_at: String,
    pub stored_unix: i64,
}

impl Store {
    /// Records a stored segment; storing one again (an archiver retry) replaces its row.
    pub async fn put_wal_segment(&self, s: &WalSegment) -> Result<()> {
        self.delete_wal_segments(&s.app, &s.env, std::slice::from_ref(&s.name)).await?;
        exec!(self.pool, |ex| sqlx::query(
            "INSERT INTO wal_segments (app, env, name, size_bytes, sha256, locations, stored_at, stored_unix)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind_env(&s.app, &s.env)
        .bind(&s.name)
        .bind(s.size_bytes as i64)
        .bind(&s.sha256)
        .bind(Json(&s.locations))
        .bind(&s.stored_at)
        .bind(s.stored_unix)
        .execute(ex)
        .await)?;
        Ok(())
    }

    /// An environment's archive, in WAL order (names sort as the server writes them).
    pub async fn wal_segments(&self, app: &str, env: &str) -> Result<Vec<WalSegment>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM wal_segments WHERE app = $1 AND env = $2 ORDER BY name",
        )
        .bind_env(app, env)
        .fetch_all(ex)
        .await)?)
    }

    /// The archive of every environment of `app` (deleted ones too: it outlives them).
    pub async fn app_wal_segments(&self, app: &str) -> Result<Vec<WalSegment>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM wal_segments WHERE app = $1 ORDER BY env, name"
        )
        .bind(app)
        .fetch_all(ex)
        .await)?)
    }

    pub async fn delete_wal_segments(&self, app: &str, env: &str, names: &[String]) -> Result<()> {
        for name in names {
            exec!(self.pool, |ex| sqlx::query(
                "DELETE FROM wal_segments WHERE app = $1 AND env = $2 AND name = $3"
            )
            .bind_env(app, env)
            .bind(name)
            .execute(ex)
            .await)?;
        }
        Ok(())
    }
}

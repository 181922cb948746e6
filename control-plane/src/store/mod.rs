//! The control plane's state store: SQLite through sqlx, with migrations embedded in the binary.
//! Every read and write of desired state goes through here so another backend can replace it.

mod apps;
mod backups;
mod databases;
mod jobs;
mod releases;
mod subnets;

pub use apps::{EnvRow, NodeRow, Registrar};
pub use backups::DbTaskRow;
pub use databases::DatabaseRow;
pub use jobs::JobRow;
pub use releases::{InstanceRow, NewRelease, ReleaseRow};
pub use subnets::NetworkPool;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Errors callers branch on; anything else is an internal error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// The caller is not the one this belongs to (a node acting for another).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Embedded migrations, applied in order; the version is the index + 1.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_initial.sql"),
    include_str!("../../migrations/0002_manifest.sql"),
    include_str!("../../migrations/0003_config.sql"),
    include_str!("../../migrations/0004_jobs.sql"),
    include_str!("../../migrations/0005_databases.sql"),
    include_str!("../../migrations/0006_replicas.sql"),
    include_str!("../../migrations/0007_backups.sql"),
    include_str!("../../migrations/0008_db_port.sql"),
    include_str!("../../migrations/0009_names.sql"),
    include_str!("../../migrations/0010_db_roles.sql"),
    include_str!("../../migrations/0011_node_credentials.sql"),
    include_str!("../../migrations/0012_env_subnets.sql"),
];

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Where new environments' subnets come from.
    subnets: NetworkPool,
}

pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatting the current time as RFC 3339 cannot fail")
}

/// Unix seconds of a timestamp the store wrote with [`now`].
pub fn unix_seconds(rfc3339: &str) -> Option<i64> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

impl Store {
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .with_context(|| format!("opening the state database {}", path.display()))?;
        let store = Self { pool, subnets: NetworkPool::default() };
        store.migrate().await.context("migrating the state database")?;
        Ok(store)
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&self.pool)
            .await?;
        let applied: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await?;
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= applied {
                continue;
            }
            let mut tx = self.write_tx().await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await.with_context(|| format!("migration {version}"))?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version, "applied database migration");
        }
        Ok(())
    }

    /// A write transaction that takes the write lock up front: a deferred one that read first
    /// fails with SQLITE_BUSY (no retry) when another writer committed in between.
    async fn write_tx(&self) -> std::result::Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // --- tokens ---

    pub async fn insert_token(&self, hash: &str, user: &str, kind: &str) -> Result<()> {
        sqlx::query("INSERT OR IGNORE INTO tokens (hash, user, kind, created_at) VALUES (?, ?, ?, ?)")
            .bind(hash)
            .bind(user)
            .bind(kind)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The (user, kind) a token hash belongs to.
    pub async fn token(&self, hash: &str) -> Result<Option<(String, String)>> {
        Ok(sqlx::query_as("SELECT user, kind FROM tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    /// Existing environments keep their Docker names on upgrade, except those whose old names
    /// already collided with another environment's.
    #[tokio::test]
    async fn the_names_migration_keeps_old_names_unless_they_collided() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let at = MIGRATIONS.iter().position(|m| m.contains("ADD COLUMN legacy_names")).unwrap();
        for sql in &MIGRATIONS[..at] {
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        }
        for (app, env) in [("shop", "eu-production"), ("shop-eu", "production"), ("notes", "production")] {
            sqlx::query("INSERT OR IGNORE INTO apps (name, created_at) VALUES (?, '')")
                .bind(app)
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("INSERT INTO envs (app, name, created_at) VALUES (?, ?, '')")
                .bind(app)
                .bind(env)
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::raw_sql(MIGRATIONS[at]).execute(&pool).await.unwrap();
        let rows: Vec<(String, bool)> =
            sqlx::query_as("SELECT app, legacy_names FROM envs ORDER BY app").fetch_all(&pool).await.unwrap();
        let expected = [("notes", true), ("shop", false), ("shop-eu", false)];
        assert_eq!(rows, expected.map(|(a, l)| (a.to_string(), l)).to_vec());
        // Environments made after the upgrade get the new names.
        sqlx::query("INSERT INTO envs (app, name, created_at) VALUES ('notes', 'staging', '')")
            .execute(&pool)
            .await
            .unwrap();
        let legacy: bool = sqlx::query_scalar("SELECT legacy_names FROM envs WHERE name = 'staging'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(!legacy);
    }
}

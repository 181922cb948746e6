//! The control plane's state store: SQLite through sqlx, with migrations embedded in the binary.
//! Every read and write of desired state goes through here so another backend can replace it.

mod agents;
mod alerts;
mod apps;
mod backups;
mod databases;
mod drains;
mod edge;
mod events;
mod jobs;
mod nodes;
mod releases;
mod subnets;
mod users;

pub use agents::{NewCert, TokenRefused};
pub use alerts::{AlertRow, RuleRow, TargetRow};
pub use apps::{EnvRow, NodeRow};
pub use backups::DbTaskRow;
pub use databases::DatabaseRow;
pub use drains::{DrainProgress, DrainRow};
pub use edge::{CertRow, DomainRow};
pub use events::{ActivityFilter, EventRow, NewEvent};
pub use jobs::{CronRunRow, JobKind, JobRow, JobStatus};
pub use nodes::Allocation;
pub use releases::{InstanceRow, NewRelease, ReleaseRow};
pub use subnets::NetworkPool;
pub use users::{AuditFilter, AuditRecord, UserRow, UserToken};

#[cfg(test)]
mod tests;

use anyhow::Context;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool};
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

/// Binds the key of an environment, `(app, env)`, or of a release, `(app, env, version)`: the
/// columns most queries of the store select by, always in this order.
trait BindKey<'q>: Sized {
    fn bind_value<T: 'q + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>>(self, value: T) -> Self;

    fn bind_env(self, app: &'q str, env: &'q str) -> Self {
        self.bind_value(app).bind_value(env)
    }

    fn bind_release(self, app: &'q str, env: &'q str, version: u32) -> Self {
        self.bind_env(app, env).bind_value(version)
    }
}

/// Implements [`BindKey`] for one of sqlx's query types (`O` being the row type where it has one).
macro_rules! bind_key {
    ($($o:ident)? => $query:ty) => {
        impl<'q $(, $o)?> BindKey<'q> for $query {
            fn bind_value<T: 'q + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>>(self, value: T) -> Self {
                self.bind(value)
            }
        }
    };
}
bind_key!(=> sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>);
bind_key!(O => sqlx::query::QueryAs<'q, Sqlite, O, SqliteArguments<'q>>);
bind_key!(O => sqlx::query::QueryScalar<'q, Sqlite, O, SqliteArguments<'q>>);

/// Embedded migrations (`migrations/NNNN_name.sql`, version NNNN), applied by sqlx's migrator,
/// which records them in `_sqlx_migrations`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

protocol::string_enum! {
    /// What an API token may do: use the user API, or register a new node (the join token).
    pub enum TokenKind {
        User = "user",
        Join = "join",
    }
}

/// Whose an API token is.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Token {
    pub user: String,
    #[sqlx(try_from = "String")]
    pub kind: TokenKind,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Where new environments' subnets come from.
    subnets: NetworkPool,
    /// Notified when an event is committed: the central log's feeder waits on it.
    events_added: std::sync::Arc<tokio::sync::Notify>,
}

pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatting the current time as RFC 3339 cannot fail")
}

/// Now, in unix seconds.
pub fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 (UTC) of unix seconds, as [`now`] writes it.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatting a time as RFC 3339 cannot fail")
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
            .journal_mode(SqliteJournalMode::Wal);
        Self::connect(opts, SqlitePoolOptions::new().max_connections(4))
            .await
            .with_context(|| format!("opening the state database {}", path.display()))
    }

    /// A store that lives in memory, for tests: one connection that is never closed (the
    /// database goes with it).
    pub async fn open_in_memory() -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?;
        let pool = SqlitePoolOptions::new().max_connections(1).idle_timeout(None).max_lifetime(None);
        Self::connect(opts, pool).await
    }

    async fn connect(opts: SqliteConnectOptions, pool: SqlitePoolOptions) -> anyhow::Result<Self> {
        let opts = opts.foreign_keys(true).busy_timeout(Duration::from_secs(10));
        let store = Self {
            pool: pool.connect_with(opts).await?,
            subnets: NetworkPool::default(),
            events_added: Default::default(),
        };
        store.import_old_migrations().await.context("importing the migration history")?;
        MIGRATOR.run(&store.pool).await.context("migrating the state database")?;
        Ok(store)
    }

    /// Data directories from before sqlx's migrator list their migrations in
    /// `schema_migrations` (version = position, the same numbers as the files): those are
    /// marked applied for the migrator, once, and the old table goes.
    async fn import_old_migrations(&self) -> anyhow::Result<()> {
        use sqlx::migrate::Migrate;
        let mut tx = self.write_tx().await?;
        // Only SQLite data directories predate the migrator, so its catalogue is the one to ask.
        let old: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if old.is_none() {
            return Ok(());
        }
        let applied: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            .fetch_one(&mut *tx)
            .await?;
        tx.ensure_migrations_table().await?;
        for m in MIGRATOR.iter().filter(|m| m.version <= applied) {
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES (?, ?, TRUE, ?, 0) ON CONFLICT (version) DO NOTHING",
            )
            .bind(m.version)
            .bind(&*m.description)
            .bind(&*m.checksum)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DROP TABLE schema_migrations").execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(applied, "imported the migration history into sqlx's");
        Ok(())
    }

    /// The one way to open a write transaction. It takes the write lock up front: a deferred
    /// one that read first fails with SQLITE_BUSY (no retry) when another writer committed in
    /// between.
    async fn write_tx(&self) -> std::result::Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // --- tokens ---

    pub async fn insert_token(&self, hash: &str, user: &str, kind: TokenKind) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (hash, user, kind, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash)
        .bind(user)
        .bind(kind.as_str())
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whose a token (by its hash) is.
    pub async fn token(&self, hash: &str) -> Result<Option<Token>> {
        Ok(sqlx::query_as("SELECT user, kind FROM tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?)
    }
}

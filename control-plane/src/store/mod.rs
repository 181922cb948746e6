//! The control plane's state store: SQLite (one server) or PostgreSQL (several servers) through
//! sqlx, with migrations embedded in the binary. Every read and write of desired state goes
//! through here. One text of each query serves both databases: [`on!`] compiles it once per
//! backend (sqlx's `Any` driver decodes neither SQLite's booleans nor unsigned numbers).

/// Runs `$body` with `$db` bound to the backend's executor: `on!(self.pool, |ex| query.fetch_one(ex).await)`
/// on the pool, `on!(tx, |ex| ...)` in a [`Tx`]. The body is written once and type-checked
/// against each database, so its SQL must be portable (`$1` placeholders, `"user"` quoted).
macro_rules! on {
    ($target:expr, |$ex:ident| $body:expr) => {
        match $target.split() {
            $crate::store::Either::Sqlite($ex) => $body,
            $crate::store::Either::Postgres($ex) => $body,
        }
    };
}

/// [`on!`] for a statement (`.execute(ex)`): both backends' results become a [`Done`].
macro_rules! exec {
    ($target:expr, |$ex:ident| $body:expr) => {
        match $target.split() {
            $crate::store::Either::Sqlite($ex) => $body.map(|r| $crate::store::Done(r.rows_affected())),
            $crate::store::Either::Postgres($ex) => $body.map(|r| $crate::store::Done(r.rows_affected())),
        }
    };
}

mod agents;
mod alerts;
mod apps;
mod backups;
mod databases;
mod drains;
mod edge;
mod events;
mod jobs;
mod leader;
mod nodes;
mod releases;
mod subnets;
mod users;
mod wal;

pub use agents::{NewCert, TokenRefused};
pub use alerts::{AlertRow, RuleRow, TargetRow};
pub use apps::{EnvRow, NodeRow};
pub use backups::DbTaskRow;
pub use databases::DatabaseRow;
pub use drains::{DrainProgress, DrainRow};
pub use edge::{CertRow, DomainRow};
pub use events::{ActivityFilter, EventRow, NewEvent};
pub use jobs::{CronRunRow, JobKind, JobRow, JobStatus};
pub use leader::{Lead, LeaderRow};
pub use nodes::Allocation;
pub use releases::{InstanceRow, NewRelease, ReleaseRow};
pub use subnets::NetworkPool;
pub use users::{AuditFilter, AuditRecord, UserRow, UserToken};
pub use wal::WalSegment;

#[cfg(test)]
mod tests;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{
    Connection, Database, Encode, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Type,
};
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
    /// A write of a leader's loop, after another control plane took the lead.
    #[error("this control plane no longer leads (its term {0} ended); another one carries on")]
    Fenced(i64),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One of the two backends' values, for [`on!`] to match on.
pub(crate) enum Either<S, P> {
    Sqlite(S),
    Postgres(P),
}

/// The database the state lives in.
#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Pool {
    fn split(&self) -> Either<&SqlitePool, &PgPool> {
        match self {
            Pool::Sqlite(p) => Either::Sqlite(p),
            Pool::Postgres(p) => Either::Postgres(p),
        }
    }
}

/// A write transaction: at most one runs at a time on a database, whichever server opened it
/// (see [`Store::write_tx`]).
pub(crate) enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    fn split(&mut self) -> Either<&mut SqliteConnection, &mut PgConnection> {
        match self {
            Tx::Sqlite(t) => Either::Sqlite(&mut **t),
            Tx::Postgres(t) => Either::Postgres(&mut **t),
        }
    }

    async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }
}

/// What a statement did, on either database.
pub(crate) struct Done(u64);

impl Done {
    pub fn rows_affected(&self) -> u64 {
        self.0
    }
}

/// An unsigned number as the `BIGINT` both databases keep it in (PostgreSQL has no unsigned
/// types); saturates, as no count the store keeps comes near.
pub(crate) fn int<T: TryInto<i64>>(n: T) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// A nullable number column read into an `Option` of an unsigned field, with
/// `#[sqlx(try_from = "super::OptNum")]` (plain ones use `try_from = "i64"`): PostgreSQL has no
/// unsigned types, so both databases keep `BIGINT` and the store converts.
pub(crate) struct OptNum(Option<i64>);

impl<DB: Database> Type<DB> for OptNum
where
    i64: Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <i64 as Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <i64 as Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: Database> sqlx::Decode<'r, DB> for OptNum
where
    Option<i64>: sqlx::Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> std::result::Result<Self, sqlx::error::BoxDynError> {
        Ok(OptNum(<Option<i64> as sqlx::Decode<'r, DB>>::decode(value)?))
    }
}

impl<T: TryFrom<i64>> TryFrom<OptNum> for Option<T> {
    type Error = T::Error;

    fn try_from(n: OptNum) -> std::result::Result<Self, T::Error> {
        n.0.map(T::try_from).transpose()
    }
}

/// Binds the key of an environment, `(app, env)`, or of a release, `(app, env, version)`: the
/// columns most queries of the store select by, always in this order.
trait BindKey<'q, DB: Database>: Sized {
    fn bind_value<T: 'q + Encode<'q, DB> + Type<DB>>(self, value: T) -> Self;

    fn bind_env(self, app: &'q str, env: &'q str) -> Self
    where
        &'q str: Encode<'q, DB> + Type<DB>,
    {
        self.bind_value(app).bind_value(env)
    }

    fn bind_release(self, app: &'q str, env: &'q str, version: u32) -> Self
    where
        &'q str: Encode<'q, DB> + Type<DB>,
        i64: Encode<'q, DB> + Type<DB>,
    {
        self.bind_env(app, env).bind_value(i64::from(version))
    }
}

/// Implements [`BindKey`] for one of sqlx's query types (`O` being the row type where it has one).
macro_rules! bind_key {
    ($($o:ident)? => $query:ty) => {
        impl<'q, DB: Database $(, $o)?> BindKey<'q, DB> for $query {
            fn bind_value<T: 'q + Encode<'q, DB> + Type<DB>>(self, value: T) -> Self {
                self.bind(value)
            }
        }
    };
}
bind_key!(=> sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>);
bind_key!(O => sqlx::query::QueryAs<'q, DB, O, <DB as Database>::Arguments<'q>>);
bind_key!(O => sqlx::query::QueryScalar<'q, DB, O, <DB as Database>::Arguments<'q>>);

/// Embedded migrations (`migrations/NNNN_name.sql`, version NNNN), applied by sqlx's migrator,
/// which records them in `_sqlx_migrations`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// PostgreSQL's migrations: its first is the schema SQLite's first 22 made, under the same
/// version, so every later change is one file of the same number in each directory.
static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-postgres");

/// The key of the advisory lock every PostgreSQL write transaction holds (see [`Store::write_tx`]).
const WRITE_LOCK: i64 = 0x7061_6173_7772_6974; // "paaswrit"

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
    pool: Pool,
    /// Where new environments' subnets come from.
    subnets: NetworkPool,
    /// The leader's term its write transactions check ([`Store::fenced`]); none: unchecked.
    fence: Option<i64>,
    /// Notified when an event is committed: the central log's feeder waits on it.
    events_added: std::sync::Arc<tokio::sync::Notify>,
    /// Grows after each commit that placed replicas (a placement resets a replica's observed
    /// state, which a node's unchanged heartbeat must then write again).
    placed: std::sync::Arc<std::sync::Mutex<Placed>>,
}

/// Commits that placed replicas, counted, and per node the count after the last one that
/// placed there.
#[derive(Default)]
struct Placed {
    commits: u64,
    on: std::collections::HashMap<String, u64>,
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
        // A file on this machine does not go stale as a server connection may: no test query
        // before each use (one more hand-off to the connection's thread per query).
        let pool = SqlitePoolOptions::new().max_connections(4).test_before_acquire(false);
        Self::connect_sqlite(opts, pool)
            .await
            .with_context(|| format!("opening the state database {}", path.display()))
    }

    /// The store in a PostgreSQL database (`postgres://user:password@host/db`), which several
    /// servers may share.
    pub async fn open_postgres(url: &str) -> anyhow::Result<Self> {
        let invalid = || anyhow::anyhow!("the database URL is not a valid postgres:// URL");
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid());
        }
        // The URL's own parse error would quote it, password and all.
        let opts = PgConnectOptions::from_str(url).map_err(|_| invalid())?;
        let target = format!("{}:{}/{}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or(""));
        // One attempt first: a database that does not answer is an error now, not after the
        // pool's retries.
        PgConnection::connect_with(&opts)
            .await
            .with_context(|| format!("connecting to the state database at {target}"))?
            .close()
            .await?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .with_context(|| format!("connecting to the state database at {target}"))?;
        PG_MIGRATOR.run(&pool).await.with_context(|| format!("migrating the state database at {target}"))?;
        Ok(Self::with(Pool::Postgres(pool)))
    }

    /// A store that lives in memory, for tests: one connection that is never closed (the
    /// database goes with it).
    pub async fn open_in_memory() -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?;
        let pool = SqlitePoolOptions::new().max_connections(1).idle_timeout(None).max_lifetime(None);
        Self::connect_sqlite(opts, pool).await
    }

    fn with(pool: Pool) -> Self {
        Self {
            pool,
            subnets: NetworkPool::default(),
            fence: None,
            events_added: Default::default(),
            placed: Default::default(),
        }
    }

    async fn connect_sqlite(opts: SqliteConnectOptions, pool: SqlitePoolOptions) -> anyhow::Result<Self> {
        let opts = opts.foreign_keys(true).busy_timeout(Duration::from_secs(10));
        let pool = pool.connect_with(opts).await?;
        import_old_migrations(&pool).await.context("importing the migration history")?;
        MIGRATOR.run(&pool).await.context("migrating the state database")?;
        Ok(Self::with(Pool::Sqlite(pool)))
    }

    /// Whether the state lives in PostgreSQL (shared by every server).
    pub fn is_shared(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    /// A consistent copy of the SQLite state at `path`, taken while it serves (`VACUUM INTO`).
    pub async fn snapshot_into(&self, path: &Path) -> anyhow::Result<()> {
        let Pool::Sqlite(pool) = &self.pool else {
            anyhow::bail!("the state is in PostgreSQL: back it up with PostgreSQL's own tools");
        };
        let target = path.to_str().context("the snapshot path is not UTF-8")?;
        sqlx::query("VACUUM INTO $1").bind(target).execute(pool).await.context("snapshotting the state")?;
        Ok(())
    }

    /// The one way to open a write transaction. It takes the write lock up front, so writers
    /// run one at a time, as SQLite always does, and every read-then-write the store makes
    /// holds. On SQLite a deferred transaction that read first fails with SQLITE_BUSY (no
    /// retry) when another writer committed in between; on PostgreSQL an advisory lock held
    /// to the commit serializes the writers of every server sharing the database.
    /// A store [`Store::fenced`] to a term checks here, under that lock, that it still leads.
    /// Grows with each commit that placed replicas on `node` (in this process).
    pub fn placements(&self, node: &str) -> u64 {
        let placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        placed.on.get(node).copied().unwrap_or(0)
    }

    fn placed_now(&self, instances: &[InstanceRow]) {
        let mut placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        placed.commits += 1;
        let commits = placed.commits;
        for i in instances {
            placed.on.insert(i.node.clone(), commits);
        }
    }

    async fn write_tx(&self) -> Result<Tx> {
        let mut tx = match &self.pool {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(WRITE_LOCK).execute(&mut *tx).await?;
                Tx::Postgres(tx)
            }
        };
        self.check_fence(&mut tx).await?;
        Ok(tx)
    }

    /// A subquery of the strings in the JSON array bound as parameter `param` (`$6`).
    fn json_strings(&self, param: &str) -> String {
        match self.pool {
            Pool::Sqlite(_) => format!("SELECT value FROM json_each({param})"),
            Pool::Postgres(_) => format!("SELECT jsonb_array_elements_text(CAST({param} AS jsonb))"),
        }
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    // --- tokens ---

    pub async fn insert_token(&self, hash: &str, user: &str, kind: TokenKind) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            r#"INSERT INTO tokens (hash, "user", kind, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (hash) DO NOTHING"#,
        )
        .bind(hash)
        .bind(user)
        .bind(kind.as_str())
        .bind(now())
        .execute(ex)
        .await)?;
        Ok(())
    }

    /// Whose a token (by its hash) is.
    pub async fn token(&self, hash: &str) -> Result<Option<Token>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(r#"SELECT "user", kind FROM tokens WHERE hash = $1"#)
            .bind(hash)
            .fetch_optional(ex)
            .await)?)
    }
}

/// Data directories from before sqlx's migrator list their migrations in
/// `schema_migrations` (version = position, the same numbers as the files): those are
/// marked applied for the migrator, once, and the old table goes.
async fn import_old_migrations(pool: &SqlitePool) -> anyhow::Result<()> {
    use sqlx::migrate::Migrate;
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
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

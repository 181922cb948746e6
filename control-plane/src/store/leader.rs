//! Elections among control planes sharing one PostgreSQL database. The leader holds a session
//! advisory lock on a connection of its own: when its process dies or its connection breaks,
//! PostgreSQL frees the lock and another server takes it. Each election raises the `term` in
//! `leadership`; a store [`Store::fenced`] to a term checks it inside every write transaction
//! (under the write lock), so a server that lost the lead cannot write once another won it.
//! On SQLite there is one server, always the leader.

use super::{now, Pool, Result, Store, StoreError, Tx};
use sqlx::{Connection, PgConnection};
use std::time::Duration;

/// The advisory lock the leader holds for as long as it leads.
const LEADER_LOCK: i64 = 0x7061_6173_6c65_6164; // "paaslead"

/// The advisory lock a starting server holds while it makes or copies the shared keys.
const START_LOCK: i64 = 0x7061_6173_7374_6172; // "paasstar"

/// How long a leader's connection may take to answer before the server counts the lead lost.
const HOLD_TIMEOUT: Duration = Duration::from_secs(3);

/// A won election.
pub struct Lead {
    /// The connection holding the lock (PostgreSQL); none on SQLite.
    conn: Option<PgConnection>,
    pub term: i64,
}

/// Who leads, as the store says.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LeaderRow {
    pub term: i64,
    pub holder: String,
    pub api_url: String,
    pub elected_at: String,
}

impl Lead {
    /// Whether this server still leads: its lock's connection answers in time. A lead that
    /// does not hold is over for good (the lock may already be another's).
    pub async fn holds(&mut self) -> bool {
        let Some(conn) = &mut self.conn else { return true };
        matches!(tokio::time::timeout(HOLD_TIMEOUT, conn.ping()).await, Ok(Ok(())))
    }
}

impl Store {
    /// Tries to become leader as `holder` (serving the API at `api_url`): the lead when this
    /// server has it now, `None` while another holds it.
    pub async fn campaign(&self, holder: &str, api_url: &str) -> Result<Option<Lead>> {
        let conn = match &self.pool {
            Pool::Sqlite(_) => None,
            Pool::Postgres(pool) => {
                let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
                let won: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(LEADER_LOCK)
                    .fetch_one(&mut conn)
                    .await?;
                if !won {
                    return Ok(None);
                }
                // A leader cut off from the database must lose the lock within seconds, not
                // after the kernel's two-hour keepalive: PostgreSQL probes idle clients.
                for set in [
                    "SET tcp_keepalives_idle = 3",
                    "SET tcp_keepalives_interval = 1",
                    "SET tcp_keepalives_count = 3",
                ] {
                    sqlx::query(set).execute(&mut conn).await?;
                }
                Some(conn)
            }
        };
        let mut tx = self.write_tx().await?;
        let term: i64 = on!(tx, |ex| sqlx::query_scalar(
            "INSERT INTO leadership (id, term, holder, api_url, elected_at) VALUES (1, 1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET term = leadership.term + 1, holder = excluded.holder,
                 api_url = excluded.api_url, elected_at = excluded.elected_at
             RETURNING term"
        )
        .bind(holder)
        .bind(api_url)
        .bind(now())
        .fetch_one(ex)
        .await)?;
        let message = format!("Control plane {holder} leads (term {term})");
        super::events::insert(&mut tx, &super::NewEvent::new("", "", "platform.leader", &message)).await?;
        tx.commit().await?;
        self.event_added();
        Ok(Some(Lead { conn, term }))
    }

    /// While a server starts: held until dropped, so servers sharing the database make and
    /// copy their keys one at a time ([`Store::shared_file`]). None on SQLite.
    pub async fn start_lock(&self) -> Result<Option<PgConnection>> {
        let Pool::Postgres(pool) = &self.pool else { return Ok(None) };
        let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
        sqlx::query("SELECT pg_advisory_lock($1)").bind(START_LOCK).execute(&mut conn).await?;
        Ok(Some(conn))
    }

    /// A file every server sharing the database holds alike (a key, a bootstrap token).
    pub async fn shared_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(on!(self.pool, |ex| sqlx::query_scalar("SELECT content FROM shared_files WHERE name = $1")
            .bind(name)
            .fetch_optional(ex)
            .await)?)
    }

    /// Records a shared file the database does not hold yet; one it holds stays.
    pub async fn put_shared_file(&self, name: &str, content: &[u8]) -> Result<()> {
        exec!(self.pool, |ex| {
            sqlx::query(
            "INSERT INTO shared_files (name, content, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING"
        )
        .bind(name)
        .bind(content)
        .bind(now())
        .execute(ex)
        .await
        })?;
        Ok(())
    }

    /// Who leads now, if anyone ever did.
    pub async fn leader(&self) -> Result<Option<LeaderRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT term, holder, api_url, elected_at FROM leadership WHERE id = 1"
        )
        .fetch_optional(ex)
        .await)?)
    }

    /// This store for the leader of `term`: its write transactions fail with
    /// [`StoreError::Fenced`] once another server leads.
    pub fn fenced(&self, term: i64) -> Store {
        Store { fence: Some(term), ..self.clone() }
    }

    /// Refuses `tx` when this store is fenced to a term that is no longer the leader's.
    pub(super) async fn check_fence(&self, tx: &mut Tx) -> Result<()> {
        let Some(term) = self.fence else { return Ok(()) };
        let now: Option<i64> = on!(tx, |ex| sqlx::query_scalar("SELECT term FROM leadership WHERE id = 1")
            .fetch_optional(ex)
            .await)?;
        if now == Some(term) {
            Ok(())
        } else {
            Err(StoreError::Fenced(term))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paas_tests::pg::PgServer;

    /// Two servers on one database: one leads; when its connection ends the other takes over
    /// with the next term, and the first one's writes are refused from then on.
    #[tokio::test]
    async fn one_server_leads_and_a_deposed_one_writes_nothing() {
        let pg = PgServer::start();
        let a = Store::open_postgres(&pg.url("postgres")).await.unwrap();
        let b = Store::open_postgres(&pg.url("postgres")).await.unwrap();
        let lead_a = a.campaign("cp-a", "http://a").await.unwrap().expect("the first server leads");
        assert_eq!(lead_a.term, 1);
        assert!(b.campaign("cp-b", "http://b").await.unwrap().is_none(), "one leader at a time");
        let a_leader = a.fenced(lead_a.term);
        a_leader.create_app("shop").await.unwrap();

        drop(lead_a); // its connection closes: the lock is free
        let mut lead_b = loop {
            if let Some(lead) = b.campaign("cp-b", "http://b").await.unwrap() {
                break lead;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(lead_b.holds().await);
        assert_eq!(lead_b.term, 2);
        let err = a_leader.create_app("other").await.unwrap_err();
        assert!(matches!(err, StoreError::Fenced(1)), "{err:?}");
        assert!(b.fenced(2).create_app("other").await.is_ok());
        // Servers not fenced (the API) write whoever leads.
        a.create_app("third").await.unwrap();
        let row = a.leader().await.unwrap().unwrap();
        assert_eq!((row.term, row.holder.as_str(), row.api_url.as_str()), (2, "cp-b", "http://b"));
        a.close().await;
        b.close().await;
    }

    /// On SQLite the one server always leads, with a new term at each start.
    #[tokio::test]
    async fn a_sqlite_server_always_leads() {
        let store = Store::open_in_memory().await.unwrap();
        let mut first = store.campaign("cp", "http://a").await.unwrap().unwrap();
        assert!(first.holds().await);
        let second = store.campaign("cp", "http://a").await.unwrap().unwrap();
        assert_eq!((first.term, second.term), (1, 2));
        assert!(matches!(store.fenced(1).create_app("shop").await, Err(StoreError::Fenced(1))));
        store.fenced(2).create_app("shop").await.unwrap();
    }
}

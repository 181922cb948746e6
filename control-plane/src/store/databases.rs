//! Managed databases: one PostgreSQL per environment, where it runs and its sealed passwords.

use super::{now, BindKey, Result, Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DatabaseRow {
    pub app: String,
    pub env: String,
    #[sqlx(try_from = "i64")]
    pub version: u32,
    pub node: String,
    /// The app role's password (in `DATABASE_URL`), sealed.
    pub password: Vec<u8>,
    /// The `postgres` superuser's and the `replicator` role's passwords, sealed; empty for a
    /// database from before they had their own until [`Store::fill_database_secrets`] runs.
    pub superuser_password: Vec<u8>,
    pub replication_password: Vec<u8>,
    #[sqlx(try_from = "i64")]
    pub max_connections: u32,
    /// 0 or 1 streaming replica, on `replica_node`.
    #[sqlx(try_from = "i64")]
    pub replicas: u32,
    pub replica_node: String,
    /// Cron expression (UTC) or `off`.
    pub backup_schedule: String,
    #[sqlx(try_from = "i64")]
    pub keep_count: u32,
    #[sqlx(try_from = "i64")]
    pub keep_days: u32,
    /// Unix seconds of the last scheduled backup (0: none yet; count from `created_unix`).
    pub last_scheduled_at: i64,
    pub created_at: String,
    /// The primary's published port once known (0 until its first report).
    #[sqlx(try_from = "i64")]
    pub host_port: u16,
    /// The environment's Docker names predate `--` separators (from `envs`).
    pub legacy_names: bool,
    /// The volume each server runs on; empty: the one named after its container.
    pub primary_volume: String,
    pub replica_volume: String,
    /// A switchover stopped the primary and the replica has not taken over yet: the primary is
    /// in no assignment.
    pub fenced: bool,
}

impl DatabaseRow {
    /// The app's database and role name: the app name as a SQL identifier.
    pub fn database_name(&self) -> String {
        self.app.replace('-', "_")
    }

    pub fn docker_names(&self) -> protocol::DockerNames<'_> {
        protocol::DockerNames { app: &self.app, env: &self.env, legacy: self.legacy_names }
    }

    /// The volume the server of `role` runs on.
    pub fn volume(&self, role: protocol::agent::DbRole) -> String {
        let set = match role {
            protocol::agent::DbRole::Primary => &self.primary_volume,
            protocol::agent::DbRole::Replica => &self.replica_volume,
        };
        if set.is_empty() {
            self.docker_names().database(role.as_str())
        } else {
            set.clone()
        }
    }
}

/// Database rows with their environment's naming.
const SELECT: &str = "SELECT databases.*, envs.legacy_names FROM databases
    JOIN envs ON envs.app = databases.app AND envs.name = databases.env";

impl Store {
    pub async fn create_database(&self, db: &DatabaseRow) -> Result<()> {
        let done = exec!(self.pool, |ex| sqlx::query(
            "INSERT INTO databases
                 (app, env, version, node, password, max_connections, created_at, replicas, replica_node,
                  backup_schedule, keep_count, keep_days, last_scheduled_at, superuser_password,
                  replication_password)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (app, env) DO NOTHING",
        )
        .bind_env(&db.app, &db.env)
        .bind(super::int(db.version))
        .bind(&db.node)
        .bind(&db.password)
        .bind(super::int(db.max_connections))
        .bind(now())
        .bind(super::int(db.replicas))
        .bind(&db.replica_node)
        .bind(&db.backup_schedule)
        .bind(super::int(db.keep_count))
        .bind(super::int(db.keep_days))
        .bind(db.last_scheduled_at)
        .bind(&db.superuser_password)
        .bind(&db.replication_password)
        .execute(ex)
        .await)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("{}/{} already has a database", db.app, db.env)));
        }
        Ok(())
    }

    pub async fn get_database(&self, app: &str, env: &str) -> Result<DatabaseRow> {
        on!(self.pool, |ex| sqlx::query_as(&format!(
            "{SELECT} WHERE databases.app = $1 AND databases.env = $2"
        ))
        .bind_env(app, env)
        .fetch_optional(ex)
        .await)?
        .ok_or_else(|| {
            StoreError::NotFound(format!("{app}/{env} has no database; create one with `paas db create`"))
        })
    }

    /// Databases with their primary or their replica on `node`.
    pub async fn databases_for_node(&self, node: &str) -> Result<Vec<DatabaseRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(&format!("{SELECT} WHERE node = $1 OR replica_node = $2"))
            .bind(node)
            .bind(node)
            .fetch_all(ex)
            .await)?)
    }

    pub async fn all_databases(&self) -> Result<Vec<DatabaseRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(SELECT).fetch_all(ex).await)?)
    }

    pub async fn set_database_settings(
        &self,
        app: &str,
        env: &str,
        schedule: &str,
        keep_count: u32,
        keep_days: u32,
    ) -> Result<()> {
        exec!(self.pool, |ex| {
            sqlx::query("UPDATE databases SET backup_schedule = $1, keep_count = $2, keep_days = $3 WHERE app = $4 AND env = $5")
            .bind(schedule)
            .bind(super::int(keep_count))
            .bind(super::int(keep_days))
            .bind_env(app, env)
            .execute(ex)
            .await
        })?;
        Ok(())
    }

    /// Withholds the primary from its node's assignment (a switchover) or gives it back.
    /// The app role's new sealed password (`db rotate-credentials`).
    pub async fn set_database_password(&self, app: &str, env: &str, sealed: &[u8]) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query("UPDATE databases SET password = $1 WHERE app = $2 AND env = $3")
            .bind(sealed)
            .bind_env(app, env)
            .execute(ex)
            .await)?;
        Ok(())
    }

    pub async fn set_database_fenced(&self, app: &str, env: &str, fenced: bool) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query("UPDATE databases SET fenced = $1 WHERE app = $2 AND env = $3")
            .bind(fenced)
            .bind_env(app, env)
            .execute(ex)
            .await)?;
        Ok(())
    }

    /// The replica becomes the primary: the nodes swap, the primary runs on the replica's volume
    /// (`primary_volume`), the new replica on a fresh one, the new primary's port is learnt from
    /// its first report, and the fence is lifted. Only from the state `db` was read in (its
    /// primary's node), so it happens once; true when it did.
    pub async fn promote_replica(
        &self,
        db: &DatabaseRow,
        primary_volume: &str,
        replica_volume: &str,
    ) -> Result<bool> {
        let done = exec!(self.pool, |ex| sqlx::query(
            "UPDATE databases SET node = $1, replica_node = $2, primary_volume = $3, replica_volume = $4,
                 host_port = 0, fenced = $5 WHERE app = $6 AND env = $7 AND node = $8 AND replica_node = $9"
        )
        .bind(&db.replica_node)
        .bind(&db.node)
        .bind(primary_volume)
        .bind(replica_volume)
        .bind(false)
        .bind_env(&db.app, &db.env)
        .bind(&db.node)
        .bind(&db.replica_node)
        .execute(ex)
        .await)?;
        Ok(done.rows_affected() == 1)
    }

    /// Keeps the port Docker first picked for a primary; later reports change nothing.
    pub async fn keep_database_port(&self, app: &str, env: &str, port: u16) -> Result<bool> {
        let done = exec!(self.pool, |ex| sqlx::query(
            "UPDATE databases SET host_port = $1 WHERE app = $2 AND env = $3 AND host_port = 0"
        )
        .bind(super::int(port))
        .bind_env(app, env)
        .execute(ex)
        .await)?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives a database from before the platform's own roles its superuser and replication
    /// secrets (each only if it has none, so a second control plane racing here changes
    /// nothing the first wrote).
    pub async fn fill_database_secrets(
        &self,
        app: &str,
        env: &str,
        superuser_password: &[u8],
        replication_password: &[u8],
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for (column, value) in
            [("superuser_password", superuser_password), ("replication_password", replication_password)]
        {
            let sql = format!(
                "UPDATE databases SET {column} = $1 WHERE app = $2 AND env = $3 AND length({column}) = 0"
            );
            exec!(tx, |ex| sqlx::query(&sql).bind(value).bind_env(app, env).execute(ex).await)?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_last_scheduled(&self, app: &str, env: &str, unix: i64) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query(
            "UPDATE databases SET last_scheduled_at = $1 WHERE app = $2 AND env = $3"
        )
        .bind(unix)
        .bind_env(app, env)
        .execute(ex)
        .await)?;
        Ok(())
    }
}

//! Managed databases: one PostgreSQL per environment, where it runs and its sealed password.

use super::{now, Result, Store, StoreError};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct DatabaseRow {
    pub app: String,
    pub env: String,
    pub version: u32,
    pub node: String,
    pub password: Vec<u8>,
    pub max_connections: u32,
    /// 0 or 1 streaming replica, on `replica_node`.
    pub replicas: u32,
    pub replica_node: String,
    /// Cron expression (UTC) or `off`.
    pub backup_schedule: String,
    pub keep_count: u32,
    pub keep_days: u32,
    /// Unix seconds of the last scheduled backup (0: none yet; count from `created_unix`).
    pub last_scheduled_at: i64,
    pub created_at: String,
    /// The primary's published port once known (0 until its first report).
    pub host_port: u16,
    /// The environment's Docker names predate `--` separators (from `envs`).
    pub legacy_names: bool,
}

impl DatabaseRow {
    /// The app's database and role name: the app name as a SQL identifier.
    pub fn database_name(&self) -> String {
        self.app.replace('-', "_")
    }

    pub fn docker_names(&self) -> protocol::DockerNames<'_> {
        protocol::DockerNames { app: &self.app, env: &self.env, legacy: self.legacy_names }
    }
}

/// Database rows with their environment's naming.
const SELECT: &str = "SELECT databases.*, envs.legacy_names FROM databases
    JOIN envs ON envs.app = databases.app AND envs.name = databases.env";

fn row(r: &sqlx::sqlite::SqliteRow) -> DatabaseRow {
    DatabaseRow {
        app: r.get("app"),
        env: r.get("env"),
        version: r.get::<i64, _>("version") as u32,
        node: r.get("node"),
        password: r.get("password"),
        max_connections: r.get::<i64, _>("max_connections") as u32,
        replicas: r.get::<i64, _>("replicas") as u32,
        replica_node: r.get("replica_node"),
        backup_schedule: r.get("backup_schedule"),
        keep_count: r.get::<i64, _>("keep_count") as u32,
        keep_days: r.get::<i64, _>("keep_days") as u32,
        last_scheduled_at: r.get("last_scheduled_at"),
        created_at: r.get("created_at"),
        host_port: r.get::<i64, _>("host_port") as u16,
        legacy_names: r.get("legacy_names"),
    }
}

impl Store {
    pub async fn create_database(&self, db: &DatabaseRow) -> Result<()> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO databases
                 (app, env, version, node, password, max_connections, created_at, replicas, replica_node,
                  backup_schedule, keep_count, keep_days, last_scheduled_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&db.app)
        .bind(&db.env)
        .bind(db.version)
        .bind(&db.node)
        .bind(&db.password)
        .bind(db.max_connections)
        .bind(now())
        .bind(db.replicas)
        .bind(&db.replica_node)
        .bind(&db.backup_schedule)
        .bind(db.keep_count)
        .bind(db.keep_days)
        .bind(db.last_scheduled_at)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("{}/{} already has a database", db.app, db.env)));
        }
        Ok(())
    }

    pub async fn get_database(&self, app: &str, env: &str) -> Result<DatabaseRow> {
        sqlx::query(&format!("{SELECT} WHERE databases.app = ? AND databases.env = ?"))
            .bind(app)
            .bind(env)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| row(&r))
            .ok_or_else(|| {
                StoreError::NotFound(format!("{app}/{env} has no database; create one with `paas db create`"))
            })
    }

    /// Databases with their primary or their replica on `node`.
    pub async fn databases_for_node(&self, node: &str) -> Result<Vec<DatabaseRow>> {
        let rows = sqlx::query(&format!("{SELECT} WHERE node = ? OR replica_node = ?"))
            .bind(node)
            .bind(node)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(row).collect())
    }

    pub async fn all_databases(&self) -> Result<Vec<DatabaseRow>> {
        let rows = sqlx::query(SELECT).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(row).collect())
    }

    pub async fn set_database_settings(
        &self,
        app: &str,
        env: &str,
        schedule: &str,
        keep_count: u32,
        keep_days: u32,
    ) -> Result<()> {
        sqlx::query("UPDATE databases SET backup_schedule = ?, keep_count = ?, keep_days = ? WHERE app = ? AND env = ?")
            .bind(schedule)
            .bind(keep_count)
            .bind(keep_days)
            .bind(app)
            .bind(env)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keeps the port Docker first picked for a primary; later reports change nothing.
    pub async fn keep_database_port(&self, app: &str, env: &str, port: u16) -> Result<bool> {
        let done =
            sqlx::query("UPDATE databases SET host_port = ? WHERE app = ? AND env = ? AND host_port = 0")
                .bind(port)
                .bind(app)
                .bind(env)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_last_scheduled(&self, app: &str, env: &str, unix: i64) -> Result<()> {
        sqlx::query("UPDATE databases SET last_scheduled_at = ? WHERE app = ? AND env = ?")
            .bind(unix)
            .bind(app)
            .bind(env)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

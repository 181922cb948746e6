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
}

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
    }
}

impl Store {
    pub async fn create_database(&self, db: &DatabaseRow) -> Result<()> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO databases
                 (app, env, version, node, password, max_connections, created_at, replicas, replica_node)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("{}/{} already has a database", db.app, db.env)));
        }
        Ok(())
    }

    pub async fn get_database(&self, app: &str, env: &str) -> Result<DatabaseRow> {
        sqlx::query("SELECT * FROM databases WHERE app = ? AND env = ?")
            .bind(app)
            .bind(env)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| row(&r))
            .ok_or_else(|| {
                StoreError::NotFound(format!("{app}/{env} has no database; create one with `paas db create`"))
            })
    }

    pub async fn databases_for_node(&self, node: &str) -> Result<Vec<DatabaseRow>> {
        let rows =
            sqlx::query("SELECT * FROM databases WHERE node = ?").bind(node).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(row).collect())
    }
}

//! Apps, their environments and the nodes of the cluster.

use super::{now, Result, Store, StoreError};
use sqlx::Row;

#[derive(Debug, Clone)]
pub struct EnvRow {
    pub app: String,
    pub name: String,
    pub current_release: Option<u32>,
    pub target_release: Option<u32>,
    /// Replicas per process set with `scale`; they override the manifest's counts.
    pub formation: std::collections::BTreeMap<String, u32>,
}

impl EnvRow {
    /// How many replicas of `process` run: `scale` wins over the manifest.
    pub fn replicas(&self, manifest: &protocol::manifest::Manifest, process: &str) -> u32 {
        self.formation
            .get(process)
            .copied()
            .or_else(|| manifest.processes.get(process).map(|p| p.replicas))
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct NodeRow {
    pub name: String,
    pub private_addr: String,
    pub ingress: bool,
    pub last_seen: String,
}

fn env_row(r: &sqlx::sqlite::SqliteRow) -> EnvRow {
    EnvRow {
        app: r.get("app"),
        name: r.get("name"),
        current_release: r.get::<Option<i64>, _>("current_release").map(|v| v as u32),
        target_release: r.get::<Option<i64>, _>("target_release").map(|v| v as u32),
        formation: serde_json::from_str(&r.get::<String, _>("formation")).unwrap_or_default(),
    }
}

impl Store {
    /// Creates an app with its `production` environment.
    pub async fn create_app(&self, name: &str) -> Result<String> {
        let mut tx = self.write_tx().await?;
        let exists: Option<String> = sqlx::query_scalar("SELECT name FROM apps WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!("an app named {name:?} already exists")));
        }
        // `a-b` production would be served at the hostname of environment `b` of app `a`.
        if let Some((prefix, suffix)) = self.hostname_clash(&mut tx, name).await? {
            return Err(StoreError::Conflict(format!(
                "app name {name:?} would share its hostname with environment {suffix:?} of app {prefix:?}"
            )));
        }
        let created = now();
        sqlx::query("INSERT INTO apps (name, created_at) VALUES (?, ?)")
            .bind(name)
            .bind(&created)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO envs (app, name, created_at) VALUES (?, ?, ?)")
            .bind(name)
            .bind(protocol::PRODUCTION)
            .bind(&created)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn hostname_clash(
        &self,
        tx: &mut sqlx::SqliteConnection,
        name: &str,
    ) -> Result<Option<(String, String)>> {
        for (i, _) in name.match_indices('-') {
            let (app, env) = (&name[..i], &name[i + 1..]);
            let hit: Option<String> = sqlx::query_scalar("SELECT name FROM envs WHERE app = ? AND name = ?")
                .bind(app)
                .bind(env)
                .fetch_optional(&mut *tx)
                .await?;
            if hit.is_some() {
                return Ok(Some((app.to_string(), env.to_string())));
            }
        }
        Ok(None)
    }

    pub async fn list_apps(&self) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as("SELECT name, created_at FROM apps ORDER BY name").fetch_all(&self.pool).await?)
    }

    pub async fn get_app(&self, name: &str) -> Result<(String, String)> {
        sqlx::query_as("SELECT name, created_at FROM apps WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("there is no app named {name:?}")))
    }

    /// Deletes an app and everything it owns; its containers go once agents see their
    /// assignment shrink.
    pub async fn delete_app(&self, name: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        sqlx::query("DELETE FROM instances WHERE app = ?").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM deploy_events WHERE app = ?").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM releases WHERE app = ?").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM envs WHERE app = ?").bind(name).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM apps WHERE name = ?").bind(name).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("there is no app named {name:?}")));
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_envs(&self, app: &str) -> Result<Vec<EnvRow>> {
        let rows = sqlx::query("SELECT * FROM envs WHERE app = ? ORDER BY name = 'production' DESC, name")
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(env_row).collect())
    }

    pub async fn all_envs(&self) -> Result<Vec<EnvRow>> {
        let rows = sqlx::query("SELECT * FROM envs ORDER BY app, name").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(env_row).collect())
    }

    pub async fn get_env(&self, app: &str, env: &str) -> Result<EnvRow> {
        self.get_app(app).await?;
        sqlx::query("SELECT * FROM envs WHERE app = ? AND name = ?")
            .bind(app)
            .bind(env)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| env_row(&r))
            .ok_or_else(|| StoreError::NotFound(format!("app {app:?} has no environment named {env:?}")))
    }

    pub async fn set_target_release(&self, app: &str, env: &str, target: Option<u32>) -> Result<()> {
        sqlx::query("UPDATE envs SET target_release = ? WHERE app = ? AND name = ?")
            .bind(target.map(i64::from))
            .bind(app)
            .bind(env)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // --- nodes ---

    pub async fn upsert_node(&self, name: &str, private_addr: &str, ingress: bool) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (name, private_addr, ingress, last_seen) VALUES (?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET private_addr = excluded.private_addr,
                 ingress = excluded.ingress, last_seen = excluded.last_seen",
        )
        .bind(name)
        .bind(private_addr)
        .bind(ingress)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn touch_node(&self, name: &str) -> Result<()> {
        let done = sqlx::query("UPDATE nodes SET last_seen = ? WHERE name = ?")
            .bind(now())
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("node {name:?} is not registered")));
        }
        Ok(())
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeRow>> {
        let rows = sqlx::query("SELECT * FROM nodes ORDER BY name").fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|r| NodeRow {
                name: r.get("name"),
                private_addr: r.get("private_addr"),
                ingress: r.get("ingress"),
                last_seen: r.get("last_seen"),
            })
            .collect())
    }
}

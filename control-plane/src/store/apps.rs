//! Apps, their environments and the nodes of the cluster.

use super::{now, BindKey, Result, Store, StoreError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EnvRow {
    pub app: String,
    pub name: String,
    #[sqlx(try_from = "super::OptNum")]
    pub current_release: Option<u32>,
    #[sqlx(try_from = "super::OptNum")]
    pub target_release: Option<u32>,
    /// Replicas per process set with `scale`; they override the manifest's counts.
    #[sqlx(json)]
    pub formation: std::collections::BTreeMap<String, u32>,
    /// Config vars, sealed by [`crate::secrets::SecretBox`].
    pub config: Vec<u8>,
    /// Created before Docker names had `--` separators; see [`protocol::DockerNames`].
    pub legacy_names: bool,
    /// The environment whose generated hostname this one serves (`paas envs swap`); its own
    /// when `None`.
    #[sqlx(default)]
    pub host_env: Option<String>,
    /// Maintenance mode: the ingress serves a 503 page instead of the app.
    pub maintenance: bool,
}

impl EnvRow {
    /// The generated hostname it is served at (after any swap).
    pub fn hostname(&self, base_domain: &str) -> String {
        protocol::hostname(&self.app, self.host_env.as_deref().unwrap_or(&self.name), base_domain)
    }

    pub fn docker_names(&self) -> protocol::DockerNames<'_> {
        protocol::DockerNames { app: &self.app, env: &self.name, legacy: self.legacy_names }
    }

    /// How many replicas of `process` run: `scale` wins over the manifest.
    pub fn replicas(&self, manifest: &protocol::manifest::Manifest, process: &str) -> u32 {
        self.formation
            .get(process)
            .copied()
            .or_else(|| manifest.processes.get(process).map(|p| p.replicas))
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeRow {
    pub name: String,
    pub private_addr: String,
    pub ingress: bool,
    pub last_seen: String,
    /// `ready`, `draining` or `lost` (`nodes::Status` adds `suspect`, from memory).
    pub state: String,
    /// Raised each time the node is declared lost; see `Assignment::generation`.
    pub generation: i64,
    pub millicpus: i64,
    pub memory_bytes: i64,
}

impl NodeRow {
    /// What the node offers to reservations (zero: not reported).
    pub fn capacity(&self) -> protocol::agent::Capacity {
        protocol::agent::Capacity { millicpus: self.millicpus as u64, memory_bytes: self.memory_bytes as u64 }
    }
}

/// The first DNS label of an environment's hostname: `app` for production, else `app-env`.
pub fn host_label(app: &str, env: &str) -> String {
    protocol::hostname(app, env, "").trim_end_matches('.').to_string()
}

impl Store {
    /// Creates an app with its `production` environment.
    pub async fn create_app(&self, name: &str) -> Result<String> {
        let mut tx = self.write_tx().await?;
        let exists: Option<String> =
            on!(tx, |ex| sqlx::query_scalar("SELECT name FROM apps WHERE name = $1")
                .bind(name)
                .fetch_optional(ex)
                .await)?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!("an app named {name:?} already exists")));
        }
        if let Some((a, e)) = self.label_owner(&mut tx, name).await? {
            return Err(StoreError::Conflict(format!(
                "app name {name:?} would share its hostname with environment {e:?} of app {a:?}"
            )));
        }
        let created = now();
        exec!(tx, |ex| sqlx::query("INSERT INTO apps (name, created_at) VALUES ($1, $2)")
            .bind(name)
            .bind(&created)
            .execute(ex)
            .await)?;
        exec!(tx, |ex| sqlx::query("INSERT INTO envs (app, name, created_at) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(protocol::PRODUCTION)
            .bind(&created)
            .execute(ex)
            .await)?;
        self.allocate_subnet(&mut tx, name, protocol::PRODUCTION).await?;
        // The first line of the app's activity feed (and where it starts: see `activity`).
        super::events::insert(&mut tx, &super::NewEvent::new(name, "", "app.created", "App created")).await?;
        tx.commit().await?;
        self.event_added();
        Ok(created)
    }

    /// The environment already served under hostname label `label`, if any.
    async fn label_owner(&self, tx: &mut super::Tx, label: &str) -> Result<Option<(String, String)>> {
        let envs: Vec<(String, String)> =
            on!(tx, |ex| sqlx::query_as("SELECT app, name FROM envs").fetch_all(ex).await)?;
        Ok(envs.into_iter().find(|(a, e)| host_label(a, e) == label))
    }

    /// Adds an environment to an app; refused when its hostname is taken.
    pub async fn create_env(&self, app: &str, env: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let exists: Option<String> =
            on!(tx, |ex| sqlx::query_scalar("SELECT name FROM apps WHERE name = $1")
                .bind(app)
                .fetch_optional(ex)
                .await)?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("there is no app named {app:?}")));
        }
        let taken: Option<String> =
            on!(tx, |ex| sqlx::query_scalar("SELECT name FROM envs WHERE app = $1 AND name = $2")
                .bind_env(app, env)
                .fetch_optional(ex)
                .await)?;
        if taken.is_some() {
            return Err(StoreError::Conflict(format!(
                "app {app:?} already has an environment named {env:?}"
            )));
        }
        let label = host_label(app, env);
        if let Some((a, e)) = self.label_owner(&mut tx, &label).await? {
            return Err(StoreError::Conflict(format!(
                "environment {env:?} of {app:?} would share the hostname {label:?} with environment {e:?} of app {a:?}"
            )));
        }
        exec!(tx, |ex| sqlx::query("INSERT INTO envs (app, name, created_at) VALUES ($1, $2, $3)")
            .bind_env(app, env)
            .bind(now())
            .execute(ex)
            .await)?;
        self.allocate_subnet(&mut tx, app, env).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes an environment and all it owns; its containers go once agents see it.
    pub async fn delete_env(&self, app: &str, env: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for table in ["instances", "deploy_events", "releases"] {
            exec!(tx, |ex| sqlx::query(&format!("DELETE FROM {table} WHERE app = $1 AND env = $2"))
                .bind_env(app, env)
                .execute(ex)
                .await)?;
        }
        // Its platform events too (the audit log keeps who did what): a new environment of the
        // same name starts with none of them in `paas events`.
        exec!(tx, |ex| sqlx::query("DELETE FROM events WHERE app = $1 AND env = $2 AND actor IS NULL")
            .bind_env(app, env)
            .execute(ex)
            .await)?;
        let done = exec!(tx, |ex| sqlx::query("DELETE FROM envs WHERE app = $1 AND name = $2")
            .bind_env(app, env)
            .execute(ex)
            .await)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("app {app:?} has no environment named {env:?}")));
        }
        // A swap with it ends: the other environment serves its own hostname again, so a new
        // environment of this name cannot collide with it.
        exec!(tx, |ex| sqlx::query("UPDATE envs SET host_env = NULL WHERE app = $1 AND host_env = $2")
            .bind_env(app, env)
            .execute(ex)
            .await)?;
        tx.commit().await?;
        Ok(())
    }

    /// Swaps the hostnames (and custom domains) of two environments of `app` in one
    /// transaction; swapping again swaps back.
    pub async fn swap_hosts(&self, app: &str, a: &str, b: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let mut served = Vec::new();
        for env in [a, b] {
            let host: Option<Option<String>> =
                on!(tx, |ex| sqlx::query_scalar("SELECT host_env FROM envs WHERE app = $1 AND name = $2")
                    .bind_env(app, env)
                    .fetch_optional(ex)
                    .await)?;
            let Some(host) = host else {
                return Err(StoreError::NotFound(format!("app {app:?} has no environment named {env:?}")));
            };
            served.push(host.unwrap_or_else(|| env.to_string()));
        }
        // Each takes the other's; its own name is stored as NULL.
        for (env, host) in [(a, &served[1]), (b, &served[0])] {
            exec!(tx, |ex| sqlx::query("UPDATE envs SET host_env = $1 WHERE app = $2 AND name = $3")
                .bind((host != env).then_some(host))
                .bind_env(app, env)
                .execute(ex)
                .await)?;
        }
        exec!(tx, |ex| {
            sqlx::query(
            "UPDATE domains SET env = CASE env WHEN $1 THEN $2 ELSE $3 END WHERE app = $4 AND env IN ($5, $6)",
        )
        .bind(a)
        .bind(b)
        .bind(a)
        .bind(app)
        .bind(a)
        .bind(b)
        .execute(ex)
        .await
        })?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_env_config(&self, app: &str, env: &str, sealed: &[u8]) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query("UPDATE envs SET config = $1 WHERE app = $2 AND name = $3")
            .bind(sealed)
            .bind_env(app, env)
            .execute(ex)
            .await)?;
        Ok(())
    }

    /// Turns maintenance mode of an environment on or off.
    pub async fn set_maintenance(&self, app: &str, env: &str, enabled: bool) -> Result<()> {
        let done = exec!(self.pool, |ex| sqlx::query(
            "UPDATE envs SET maintenance = $1 WHERE app = $2 AND name = $3"
        )
        .bind(enabled)
        .bind_env(app, env)
        .execute(ex)
        .await)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("app {app:?} has no environment named {env:?}")));
        }
        Ok(())
    }

    pub async fn list_apps(&self) -> Result<Vec<(String, String)>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT name, created_at FROM apps ORDER BY name")
            .fetch_all(ex)
            .await)?)
    }

    pub async fn get_app(&self, name: &str) -> Result<(String, String)> {
        on!(self.pool, |ex| sqlx::query_as("SELECT name, created_at FROM apps WHERE name = $1")
            .bind(name)
            .fetch_optional(ex)
            .await)?
        .ok_or_else(|| StoreError::NotFound(format!("there is no app named {name:?}")))
    }

    /// Deletes an app and everything it owns; its containers go once agents see their
    /// assignment shrink.
    pub async fn delete_app(&self, name: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        exec!(tx, |ex| sqlx::query("DELETE FROM instances WHERE app = $1").bind(name).execute(ex).await)?;
        exec!(tx, |ex| sqlx::query("DELETE FROM deploy_events WHERE app = $1").bind(name).execute(ex).await)?;
        exec!(tx, |ex| sqlx::query("DELETE FROM releases WHERE app = $1").bind(name).execute(ex).await)?;
        exec!(tx, |ex| sqlx::query("DELETE FROM envs WHERE app = $1").bind(name).execute(ex).await)?;
        // With the app, so a new app of the same name starts with no one's rights.
        exec!(tx, |ex| sqlx::query("DELETE FROM grants WHERE app = $1").bind(name).execute(ex).await)?;
        // And its platform events (the audit log keeps who did what).
        exec!(tx, |ex| sqlx::query("DELETE FROM events WHERE app = $1 AND actor IS NULL")
            .bind(name)
            .execute(ex)
            .await)?;
        let done =
            exec!(tx, |ex| sqlx::query("DELETE FROM apps WHERE name = $1").bind(name).execute(ex).await)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("there is no app named {name:?}")));
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_envs(&self, app: &str) -> Result<Vec<EnvRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM envs WHERE app = $1 ORDER BY name = 'production' DESC, name"
        )
        .bind(app)
        .fetch_all(ex)
        .await)?)
    }

    pub async fn all_envs(&self) -> Result<Vec<EnvRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM envs ORDER BY app, name").fetch_all(ex).await)?)
    }

    pub async fn get_env(&self, app: &str, env: &str) -> Result<EnvRow> {
        self.get_app(app).await?;
        on!(self.pool, |ex| sqlx::query_as("SELECT * FROM envs WHERE app = $1 AND name = $2")
            .bind_env(app, env)
            .fetch_optional(ex)
            .await)?
        .ok_or_else(|| StoreError::NotFound(format!("app {app:?} has no environment named {env:?}")))
    }

    // --- nodes ---

    /// Records a node's registration again, by the node itself (`caller`, from its
    /// certificate), in one write transaction: the name must be the caller's own and the
    /// address not another node's. Joining is [`Store::join_node`].
    pub async fn register_node(
        &self,
        name: &str,
        private_addr: &str,
        ingress: bool,
        caller: &str,
    ) -> Result<()> {
        if caller != name {
            return Err(StoreError::Forbidden(format!(
                "this certificate belongs to node {caller:?}; a node can only register itself, not {name:?}"
            )));
        }
        let mut tx = self.write_tx().await?;
        Self::check_address(&mut tx, name, private_addr).await?;
        Self::upsert_node(&mut tx, name, private_addr, ingress).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Refuses `private_addr` when it is another node's, so two agents cannot both claim it.
    pub(super) async fn check_address(tx: &mut super::Tx, name: &str, private_addr: &str) -> Result<()> {
        let holder: Option<String> = on!(tx, |ex| sqlx::query_scalar(
            "SELECT name FROM nodes WHERE private_addr = $1 AND name != $2 LIMIT 1"
        )
        .bind(private_addr)
        .bind(name)
        .fetch_optional(ex)
        .await)?;
        match holder {
            Some(other) => Err(StoreError::Forbidden(format!(
                "{private_addr} is the private address of node {other:?}; a node cannot take another node's address"
            ))),
            None => Ok(()),
        }
    }

    pub(super) async fn upsert_node(
        tx: &mut super::Tx,
        name: &str,
        private_addr: &str,
        ingress: bool,
    ) -> Result<()> {
        exec!(tx, |ex| sqlx::query(
            "INSERT INTO nodes (name, private_addr, ingress, last_seen) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET private_addr = excluded.private_addr,
                 ingress = excluded.ingress, last_seen = excluded.last_seen",
        )
        .bind(name)
        .bind(private_addr)
        .bind(ingress)
        .bind(now())
        .execute(ex)
        .await)?;
        Ok(())
    }

    pub async fn touch_node(&self, name: &str) -> Result<()> {
        let done = exec!(self.pool, |ex| sqlx::query("UPDATE nodes SET last_seen = $1 WHERE name = $2")
            .bind(now())
            .bind(name)
            .execute(ex)
            .await)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("node {name:?} is not registered")));
        }
        Ok(())
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM nodes ORDER BY name").fetch_all(ex).await)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_registers_itself_again_never_another_or_its_address() {
        let store = Store::open_in_memory().await.unwrap();
        let forbidden = |r: Result<()>| assert!(matches!(r, Err(StoreError::Forbidden(_))), "{r:?}");
        store.register_node("old", "10.0.0.1", true, "old").await.unwrap();
        store.register_node("new", "10.0.0.2", false, "new").await.unwrap();
        forbidden(store.register_node("new", "10.0.0.1", false, "new").await);
        forbidden(store.register_node("old", "10.0.0.2", false, "new").await);
        // A node moves to a free address.
        store.register_node("new", "10.0.0.3", false, "new").await.unwrap();
        let nodes = store.list_nodes().await.unwrap();
        let addrs: Vec<_> = nodes.iter().map(|n| (n.name.as_str(), n.private_addr.as_str())).collect();
        assert_eq!(addrs, vec![("new", "10.0.0.3"), ("old", "10.0.0.1")]);
    }
}

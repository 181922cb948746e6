//! Releases, the containers placed for them (with the agents' reports), and deploy progress.

use super::{now, BindKey, Result, Store, StoreError};
use protocol::agent::ContainerStatus;
use protocol::api::{DeployEvent, Process, Release, ReleaseStatus};
use sqlx::types::Json;

pub type ReleaseRow = Release;

/// Deploy events kept per release (the newest; build output is most of them), and releases per
/// environment whose events are kept at all: older releases keep their status and error.
pub const MAX_RELEASE_EVENTS: i64 = 10_000;
const KEEP_RELEASE_EVENTS: u32 = 20;

/// What a new release is made of.
pub struct NewRelease {
    /// `build`, or the image reference deployed.
    pub source: String,
    pub created_by: String,
    /// Node that builds or resolves the image (unused when `image_id` is known already).
    pub build_node: String,
    pub manifest: protocol::manifest::Manifest,
    pub description: String,
    /// Known up front for rollbacks: the earlier release's image.
    pub image_id: Option<String>,
    /// Sealed snapshot of the config vars the release runs with, and their names.
    pub config: Vec<u8>,
    pub config_keys: Vec<String>,
    /// The `paas.toml` text the manifest came from (empty when there was none).
    pub manifest_text: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceRow {
    pub name: String,
    pub app: String,
    pub env: String,
    pub process: String,
    #[sqlx(try_from = "i64")]
    pub release: u32,
    #[sqlx(try_from = "i64")]
    pub replica: u32,
    pub node: String,
    pub state: String,
    pub healthy: bool,
    #[sqlx(try_from = "super::OptNum")]
    pub host_port: Option<u16>,
    #[sqlx(try_from = "i64")]
    pub restarts: u32,
    #[sqlx(json)]
    pub log_tail: Vec<String>,
    pub updated_at: String,
    pub reserve_millicpus: i64,
    pub reserve_memory_bytes: i64,
    /// Left out of the route table: a replica moving off a node, its replacement healthy.
    pub unrouted: bool,
}

impl InstanceRow {
    /// A replica just placed on `node`, before its agent reported anything.
    pub fn pending(
        names: &protocol::DockerNames<'_>,
        process: &str,
        release: u32,
        replica: u32,
        node: String,
        reserve: protocol::agent::Capacity,
    ) -> Self {
        Self {
            name: names.container(process, release, replica),
            app: names.app.to_string(),
            env: names.env.to_string(),
            process: process.to_string(),
            release,
            replica,
            node,
            state: "pending".into(),
            healthy: false,
            host_port: None,
            restarts: 0,
            log_tail: Vec::new(),
            updated_at: String::new(),
            reserve_millicpus: reserve.millicpus as i64,
            reserve_memory_bytes: reserve.memory_bytes as i64,
            unrouted: false,
        }
    }
}

/// A `releases` row; [`Release`] is what the API shows of it.
#[derive(sqlx::FromRow)]
struct ReleaseRecord {
    app: String,
    env: String,
    #[sqlx(try_from = "i64")]
    version: u32,
    #[sqlx(try_from = "String")]
    status: ReleaseStatus,
    source: String,
    image_id: Option<String>,
    created_at: String,
    created_by: String,
    error: Option<String>,
    description: String,
    #[sqlx(json)]
    manifest: protocol::manifest::Manifest,
    #[sqlx(json)]
    config_keys: Vec<String>,
}

impl From<ReleaseRecord> for Release {
    fn from(r: ReleaseRecord) -> Self {
        Release {
            app: r.app,
            env: r.env,
            version: r.version,
            status: r.status,
            source: r.source,
            image_id: r.image_id,
            created_at: r.created_at,
            created_by: r.created_by,
            error: r.error,
            description: r.description,
            manifest: r.manifest,
            config_keys: r.config_keys,
        }
    }
}

impl InstanceRow {
    pub fn to_process(&self, private_addr: Option<&str>) -> Process {
        Process {
            name: self.name.clone(),
            app: self.app.clone(),
            env: self.env.clone(),
            process: self.process.clone(),
            release: self.release,
            replica: self.replica,
            node: self.node.clone(),
            state: self.state.clone(),
            healthy: self.healthy,
            address: match (private_addr, self.host_port) {
                (Some(addr), Some(port)) => Some(format!("{addr}:{port}")),
                _ => None,
            },
            restarts: self.restarts,
            updated_at: self.updated_at.clone(),
            limits: None,
        }
    }
}

/// The SQL condition that a replica's row differs from a reported status: its values are the
/// query's first five, bound by [`bind_status`].
macro_rules! status_differs {
    () => {
        "(state != $1 OR healthy != $2 OR host_port IS DISTINCT FROM $3 OR restarts != $4 OR log_tail != $5)"
    };
}

/// Binds a reported status's values in the order [`status_differs`] (and the update) name them.
macro_rules! bind_status {
    ($query:expr, $s:expr) => {
        $query
            .bind(&$s.state)
            .bind($s.healthy)
            .bind($s.host_port.map(i64::from))
            .bind(i64::from($s.restarts))
            .bind(Json(&$s.log_tail))
    };
}

impl Store {
    /// Records a new release in `building` state. Refuses while another deploy of the same
    /// environment is unfinished, so two deploys never race for one environment.
    pub async fn create_release(&self, app: &str, env: &str, new: &NewRelease) -> Result<Release> {
        let mut tx = self.write_tx().await?;
        let busy: Option<i64> = on!(tx, |ex| {
            sqlx::query_scalar(
            "SELECT version FROM releases WHERE app = $1 AND env = $2 AND status IN ('building', 'deploying')",
        )
        .bind_env(app, env)
        .fetch_optional(ex)
        .await
        })?;
        if let Some(v) = busy {
            return Err(StoreError::Conflict(format!(
                "a deploy of {app}/{env} is in progress (release v{v}); wait for it to finish"
            )));
        }
        let version: i64 = on!(tx, |ex| sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app = $1 AND env = $2",
        )
        .bind_env(app, env)
        .fetch_one(ex)
        .await)?;
        let version = version as u32;
        exec!(tx, |ex| sqlx::query(
            "INSERT INTO releases (app, env, version, status, source, build_node, created_at, created_by,
                                   image_id, manifest, description, config, config_keys, manifest_text)
             VALUES ($1, $2, $3, 'building', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind_release(app, env, version)
        .bind(&new.source)
        .bind(&new.build_node)
        .bind(now())
        .bind(&new.created_by)
        .bind(&new.image_id)
        .bind(Json(&new.manifest))
        .bind(&new.description)
        .bind(&new.config)
        .bind(Json(&new.config_keys))
        .bind(&new.manifest_text)
        .execute(ex)
        .await)?;
        tx.commit().await?;
        self.get_release(app, env, version).await
    }

    pub async fn get_release(&self, app: &str, env: &str, version: u32) -> Result<Release> {
        Ok(self.release_columns::<ReleaseRecord>("*", app, env, version).await?.into())
    }

    /// Some `columns` of one release.
    async fn release_columns<T>(&self, columns: &str, app: &str, env: &str, version: u32) -> Result<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
        T: Send + Unpin,
    {
        on!(self.pool, |ex| sqlx::query_as(&format!(
            "SELECT {columns} FROM releases WHERE app = $1 AND env = $2 AND version = $3"
        ))
        .bind_release(app, env, version)
        .fetch_optional(ex)
        .await)?
        .ok_or_else(|| StoreError::NotFound(format!("{app}/{env} has no release v{version}")))
    }

    /// A release's sealed config snapshot and its `paas.toml` text.
    pub async fn release_inputs(&self, app: &str, env: &str, version: u32) -> Result<(Vec<u8>, String)> {
        self.release_columns("config, manifest_text", app, env, version).await
    }

    pub async fn list_releases(&self, app: &str, env: &str) -> Result<Vec<Release>> {
        let rows: Vec<ReleaseRecord> = on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM releases WHERE app = $1 AND env = $2 ORDER BY version DESC"
        )
        .bind_env(app, env)
        .fetch_all(ex)
        .await)?;
        Ok(rows.into_iter().map(Release::from).collect())
    }

    /// Images a prune must keep, in one query however many environments there are: each
    /// environment's current and target release's, and its rollback target's (the newest
    /// superseded release before the current one).
    pub async fn kept_images(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> =
            self.kept_images_by_env().await?.into_iter().map(|(_, _, id)| id).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// [`Store::kept_images`] with the environment that keeps each.
    pub async fn kept_images_by_env(&self) -> Result<Vec<(String, String, String)>> {
        Ok(on!(self.pool, |ex| {
            sqlx::query_as(
            "SELECT DISTINCT r.app, r.env, r.image_id FROM releases r JOIN envs e ON e.app = r.app AND e.name = r.env
             WHERE r.image_id IS NOT NULL AND (r.version = e.current_release OR r.version = e.target_release
               OR r.version = (SELECT MAX(p.version) FROM releases p WHERE p.app = e.app AND p.env = e.name
                               AND p.version < e.current_release AND p.status = 'superseded'))",
        )
        .fetch_all(ex)
        .await
        })?)
    }

    /// Per node, the environments it built a release of.
    pub async fn builders(&self) -> Result<Vec<(String, String, String)>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT DISTINCT build_node, app, env FROM releases WHERE build_node IS NOT NULL"
        )
        .fetch_all(ex)
        .await)?)
    }

    /// The images `node` should have (it built them or runs a replica of a release with
    /// them), none if it is lost: one query, however many images are kept.
    pub async fn images_on_node(&self, node: &str) -> Result<Vec<String>> {
        Ok(on!(self.pool, |ex| sqlx::query_scalar(
            "SELECT h.image_id FROM (
                 SELECT image_id FROM releases WHERE build_node = $1 AND image_id IS NOT NULL
                 UNION SELECT r.image_id FROM instances i JOIN releases r
                     ON r.app = i.app AND r.env = i.env AND r.version = i.release
                     WHERE i.node = $1 AND r.image_id IS NOT NULL
             ) h WHERE EXISTS (SELECT 1 FROM nodes n WHERE n.name = $1 AND n.state != 'lost')",
        )
        .bind(node)
        .fetch_all(ex)
        .await)?)
    }

    /// Releases a node must build: still building, assigned to it, with no result yet.
    pub async fn pending_builds(&self, node: &str) -> Result<Vec<Release>> {
        let rows: Vec<ReleaseRecord> = on!(self.pool, |ex| {
            sqlx::query_as(
            "SELECT * FROM releases WHERE build_node = $1 AND status = 'building' AND image_id IS NULL AND error IS NULL",
        )
        .bind(node)
        .fetch_all(ex)
        .await
        })?;
        Ok(rows.into_iter().map(Release::from).collect())
    }

    /// The node a release's build is assigned to (none for an image deploy).
    pub async fn build_node(&self, app: &str, env: &str, version: u32) -> Result<Option<String>> {
        let (node,) = self.release_columns("build_node", app, env, version).await?;
        Ok(node)
    }

    /// Records the outcome of a build (an image id, or why it failed).
    pub async fn set_build_result(
        &self,
        app: &str,
        env: &str,
        version: u32,
        image_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        exec!(self.pool, |ex| {
            sqlx::query(
            "UPDATE releases SET image_id = $1, error = $2 WHERE app = $3 AND env = $4 AND version = $5 AND status = 'building'",
        )
        .bind(image_id)
        .bind(error)
        .bind_release(app, env, version)
        .execute(ex)
        .await
        })?;
        Ok(())
    }

    pub async fn set_release_status(
        &self,
        app: &str,
        env: &str,
        version: u32,
        status: ReleaseStatus,
        error: Option<&str>,
    ) -> Result<()> {
        exec!(self.pool, |ex| {
            sqlx::query(
            "UPDATE releases SET status = $1, error = COALESCE($2, error) WHERE app = $3 AND env = $4 AND version = $5",
        )
        .bind(status.as_str())
        .bind(error)
        .bind_release(app, env, version)
        .execute(ex)
        .await
        })?;
        Ok(())
    }

    /// Sets the replicas of one process: records the formation, places added replicas and
    /// unassigns the ones past the new count (agents drain and remove them).
    pub async fn scale(
        &self,
        app: &str,
        env: &str,
        process: &str,
        replicas: u32,
        added: &[InstanceRow],
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let (Json(mut formation), target): (Json<std::collections::BTreeMap<String, u32>>, Option<i64>) = on!(
            tx,
            |ex| sqlx::query_as("SELECT formation, target_release FROM envs WHERE app = $1 AND name = $2")
                .bind_env(app, env)
                .fetch_one(ex)
                .await
        )?;
        // Checked again here, under the write lock: a rollout that started after the caller
        // looked would otherwise lose the replicas past the new count.
        if let Some(t) = target {
            return Err(StoreError::Conflict(format!(
                "a deploy of {app}/{env} is in progress (release v{t}); scale after it"
            )));
        }
        formation.insert(process.to_string(), replicas);
        exec!(tx, |ex| sqlx::query("UPDATE envs SET formation = $1 WHERE app = $2 AND name = $3")
            .bind(Json(&formation))
            .bind_env(app, env)
            .execute(ex)
            .await)?;
        insert_instances(&mut tx, added).await?;
        exec!(tx, |ex| sqlx::query(
            "DELETE FROM instances WHERE app = $1 AND env = $2 AND process = $3 AND replica > $4"
        )
        .bind_env(app, env)
        .bind(process)
        .bind(super::int(replicas))
        .execute(ex)
        .await)?;
        tx.commit().await?;
        self.placed_now(added);
        Ok(())
    }

    /// Places the containers of a release being rolled out and marks it the environment's target.
    /// Returns false, writing nothing, when the formation is no longer `formation` (the one the
    /// instances were counted from): a scale landed meanwhile, and the caller places again.
    pub async fn start_rollout(
        &self,
        app: &str,
        env: &str,
        version: u32,
        formation: &std::collections::BTreeMap<String, u32>,
        instances: &[InstanceRow],
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let Json(now): Json<std::collections::BTreeMap<String, u32>> =
            on!(tx, |ex| sqlx::query_scalar("SELECT formation FROM envs WHERE app = $1 AND name = $2")
                .bind_env(app, env)
                .fetch_one(ex)
                .await)?;
        if now != *formation {
            return Ok(false);
        }
        insert_instances(&mut tx, instances).await?;
        exec!(tx, |ex| sqlx::query(
            "UPDATE releases SET status = 'deploying' WHERE app = $1 AND env = $2 AND version = $3"
        )
        .bind_release(app, env, version)
        .execute(ex)
        .await)?;
        exec!(tx, |ex| sqlx::query("UPDATE envs SET target_release = $1 WHERE app = $2 AND name = $3")
            .bind(super::int(version))
            .bind_env(app, env)
            .execute(ex)
            .await)?;
        tx.commit().await?;
        self.placed_now(instances);
        Ok(true)
    }

    /// The switch: `version` becomes the served release and the previous one is superseded. Old
    /// containers stay assigned until the ingress nodes confirm ([`Self::retire_others`]).
    pub async fn switch_release(&self, app: &str, env: &str, version: u32) -> Result<()> {
        let mut tx = self.write_tx().await?;
        exec!(tx, |ex| sqlx::query(
            "UPDATE releases SET status = 'superseded' WHERE app = $1 AND env = $2 AND status = 'active'",
        )
        .bind_env(app, env)
        .execute(ex)
        .await)?;
        exec!(tx, |ex| sqlx::query(
            "UPDATE envs SET current_release = $1, target_release = NULL WHERE app = $2 AND name = $3"
        )
        .bind(super::int(version))
        .bind_env(app, env)
        .execute(ex)
        .await)?;
        tx.commit().await?;
        Ok(())
    }

    /// Unassigns the containers of every release but `version` (agents drain and remove them).
    /// Returns the nodes they ran on.
    pub async fn retire_others(&self, app: &str, env: &str, version: u32) -> Result<Vec<String>> {
        let mut nodes: Vec<String> = on!(self.pool, |ex| sqlx::query_scalar(
            "DELETE FROM instances WHERE app = $1 AND env = $2 AND release != $3 RETURNING node"
        )
        .bind_release(app, env, version)
        .fetch_all(ex)
        .await)?;
        nodes.sort();
        nodes.dedup();
        Ok(nodes)
    }

    /// A rollout that failed: its containers go, the served release stays untouched.
    pub async fn abort_rollout(&self, app: &str, env: &str, version: u32, error: &str) -> Result<()> {
        let mut tx = self.write_tx().await?;
        exec!(tx, |ex| sqlx::query("DELETE FROM instances WHERE app = $1 AND env = $2 AND release = $3")
            .bind_release(app, env, version)
            .execute(ex)
            .await)?;
        exec!(tx, |ex| sqlx::query(
            "UPDATE envs SET target_release = NULL WHERE app = $1 AND name = $2 AND target_release = $3",
        )
        .bind_release(app, env, version)
        .execute(ex)
        .await)?;
        exec!(tx, |ex| sqlx::query(
            "UPDATE releases SET status = 'failed', error = $1 WHERE app = $2 AND env = $3 AND version = $4",
        )
        .bind(error)
        .bind_release(app, env, version)
        .execute(ex)
        .await)?;
        tx.commit().await?;
        Ok(())
    }

    /// Releases left unfinished by a previous run of the control plane.
    pub async fn unfinished_releases(&self) -> Result<Vec<Release>> {
        let rows: Vec<ReleaseRecord> = on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM releases WHERE status IN ('building', 'deploying')"
        )
        .fetch_all(ex)
        .await)?;
        Ok(rows.into_iter().map(Release::from).collect())
    }

    // --- instances ---

    pub async fn instances_for_node(&self, node: &str) -> Result<Vec<InstanceRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM instances WHERE node = $1 ORDER BY name")
            .bind(node)
            .fetch_all(ex)
            .await)?)
    }

    pub async fn instances_for_env(&self, app: &str, env: &str) -> Result<Vec<InstanceRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as(
            "SELECT * FROM instances WHERE app = $1 AND env = $2 ORDER BY release, replica"
        )
        .bind_env(app, env)
        .fetch_all(ex)
        .await)?)
    }

    pub async fn get_instance(&self, name: &str) -> Result<Option<InstanceRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM instances WHERE name = $1")
            .bind(name)
            .fetch_optional(ex)
            .await)?)
    }

    /// Adds a container beside the serving ones (a restart's replacement) unless a deploy of
    /// the environment started: its rollout counts the replicas it replaces.
    pub async fn add_instance_unless_deploying(&self, instance: &InstanceRow) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let target: Option<i64> =
            on!(tx, |ex| sqlx::query_scalar("SELECT target_release FROM envs WHERE app = $1 AND name = $2")
                .bind_env(&instance.app, &instance.env)
                .fetch_one(ex)
                .await)?;
        if target.is_some() {
            return Ok(false);
        }
        insert_instances(&mut tx, std::slice::from_ref(instance)).await?;
        tx.commit().await?;
        self.placed_now(std::slice::from_ref(instance));
        Ok(true)
    }

    /// Unassigns one container: its node drains and stops it.
    pub async fn delete_instance(&self, name: &str) -> Result<()> {
        exec!(self.pool, |ex| sqlx::query("DELETE FROM instances WHERE name = $1")
            .bind(name)
            .execute(ex)
            .await)?;
        Ok(())
    }

    pub async fn all_instances(&self) -> Result<Vec<InstanceRow>> {
        Ok(on!(self.pool, |ex| sqlx::query_as("SELECT * FROM instances").fetch_all(ex).await)?)
    }

    /// The `statuses` that differ from what the store holds of their replica (the columns
    /// [`status_differs`] compares): one read of the node's rows, however many containers it
    /// reports, since every node's heartbeat comes here while deploys place.
    async fn report_changes<'a>(
        &self,
        node: &str,
        statuses: &'a [ContainerStatus],
    ) -> Result<Vec<&'a ContainerStatus>> {
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<InstanceRow> =
            on!(self.pool, |ex| sqlx::query_as("SELECT * FROM instances WHERE node = $1")
                .bind(node)
                .fetch_all(ex)
                .await)?;
        let rows: std::collections::HashMap<&str, &InstanceRow> =
            rows.iter().map(|r| (r.name.as_str(), r)).collect();
        let differs = |s: &&ContainerStatus| {
            rows.get(s.name.as_str()).is_some_and(|r| {
                r.state != s.state
                    || r.healthy != s.healthy
                    || r.host_port != s.host_port
                    || r.restarts != s.restarts
                    || r.log_tail != s.log_tail
            })
        };
        Ok(statuses.iter().filter(differs).collect())
    }

    /// Applies an agent's report; returns the environments whose replicas changed in a way
    /// that matters for routing or deploys (none: nothing did), so callers wake only those
    /// who wait on them.
    pub async fn apply_report(
        &self,
        node: &str,
        statuses: &[ContainerStatus],
    ) -> Result<Vec<(String, String)>> {
        // Most reports are heartbeats that change nothing: they take no write lock, which
        // every node's report each second would otherwise queue on. The others write only
        // the replicas that changed, each checked again under the lock.
        let statuses = self.report_changes(node, statuses).await?;
        if statuses.is_empty() {
            return Ok(Vec::new());
        }
        let (mut changed, mut events) = (Vec::new(), false);
        let mut tx = self.write_tx().await?;
        for s in statuses {
            let seen: Option<super::events::Seen> = on!(tx, |ex| sqlx::query_as(
                "SELECT app, env, process, replica, release, state, healthy, restarts FROM instances
                 WHERE name = $1 AND node = $2",
            )
            .bind(&s.name)
            .bind(node)
            .fetch_optional(ex)
            .await)?;
            let sql = concat!(
                "UPDATE instances SET state = $1, healthy = $2, host_port = $3, restarts = $4, log_tail = $5,
                 updated_at = $6 WHERE name = $7 AND node = $8 AND ",
                status_differs!()
            );
            let done = exec!(tx, |ex| bind_status!(sqlx::query(sql), s)
                .bind(now())
                .bind(&s.name)
                .bind(node)
                .execute(ex)
                .await)?;
            if done.rows_affected() > 0 {
                if let Some(seen) = &seen {
                    events |= super::events::replica_changed(&mut tx, seen, s).await?;
                    let env = (seen.app.clone(), seen.env.clone());
                    if !changed.contains(&env) {
                        changed.push(env);
                    }
                }
            }
        }
        tx.commit().await?;
        if events {
            self.event_added();
        }
        Ok(changed)
    }

    // --- deploy events ---

    pub async fn append_events(
        &self,
        app: &str,
        env: &str,
        version: u32,
        kind: &str,
        lines: &[String],
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let mut seq: i64 = on!(tx, |ex| {
            sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) FROM deploy_events WHERE app = $1 AND env = $2 AND version = $3",
        )
        .bind_release(app, env, version)
        .fetch_one(ex)
        .await
        })?;
        for line in lines {
            seq += 1;
            exec!(tx, |ex| {
                sqlx::query(
                "INSERT INTO deploy_events (app, env, version, seq, kind, text, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind_release(app, env, version)
            .bind(seq)
            .bind(kind)
            .bind(line)
            .bind(now())
            .execute(ex)
            .await
            })?;
        }
        exec!(tx, |ex| {
            sqlx::query(
            "DELETE FROM deploy_events WHERE app = $1 AND env = $2 AND (version = $3 AND seq <= $4 OR version <= $5)",
        )
        .bind_release(app, env, version)
        .bind(seq - MAX_RELEASE_EVENTS)
        .bind(i64::from(version) - i64::from(KEEP_RELEASE_EVENTS))
        .execute(ex)
        .await
        })?;
        tx.commit().await?;
        Ok(())
    }

    /// When release `version`'s newest deploy event was recorded (its rollout's end, once over).
    pub async fn last_deploy_event_at(&self, app: &str, env: &str, version: u32) -> Result<Option<String>> {
        Ok(on!(self.pool, |ex| sqlx::query_scalar(
            "SELECT MAX(at) FROM deploy_events WHERE app = $1 AND env = $2 AND version = $3"
        )
        .bind_release(app, env, version)
        .fetch_one(ex)
        .await)?)
    }

    pub async fn events_after(
        &self,
        app: &str,
        env: &str,
        version: u32,
        after: u64,
    ) -> Result<Vec<DeployEvent>> {
        let first: Option<i64> = on!(self.pool, |ex| sqlx::query_scalar(
            "SELECT MIN(seq) FROM deploy_events WHERE app = $1 AND env = $2 AND version = $3",
        )
        .bind_release(app, env, version)
        .fetch_one(ex)
        .await)?;
        // Events no longer kept are stood for by one line, numbered like the last of them.
        let gap = first.filter(|f| *f > after as i64 + 1).map(|f| (f - 1 - after as i64, f as u64 - 1));
        let after = gap.map_or(after, |(_, last)| last);
        let rows: Vec<(i64, String, String, String)> = on!(self.pool, |ex| {
            sqlx::query_as(
            "SELECT seq, kind, text, at FROM deploy_events WHERE app = $1 AND env = $2 AND version = $3 AND seq > $4
             ORDER BY seq LIMIT 1000",
        )
        .bind_release(app, env, version)
        .bind(after as i64)
        .fetch_all(ex)
        .await
        })?;
        let mut events: Vec<DeployEvent> = rows
            .into_iter()
            .map(|(seq, kind, text, at)| DeployEvent { seq: seq as u64, at, kind, text })
            .collect();
        if let (Some((n, seq)), Some(next)) = (gap, events.first()) {
            let marker = DeployEvent {
                seq,
                at: next.at.clone(),
                kind: next.kind.clone(),
                text: super::jobs::pruned_marker(n),
            };
            events.insert(0, marker);
        }
        Ok(events)
    }
}

pub(super) async fn insert_instances(tx: &mut super::Tx, instances: &[InstanceRow]) -> Result<()> {
    for i in instances {
        exec!(tx, |ex| sqlx::query(
            "INSERT INTO instances (name, app, env, process, release, replica, node, updated_at,
                 reserve_millicpus, reserve_memory_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (name) DO UPDATE SET app = excluded.app, env = excluded.env,
                 process = excluded.process, release = excluded.release, replica = excluded.replica,
                 node = excluded.node, state = 'pending', healthy = FALSE, host_port = NULL,
                 restarts = 0, log_tail = '[]', updated_at = excluded.updated_at,
                 reserve_millicpus = excluded.reserve_millicpus,
                 reserve_memory_bytes = excluded.reserve_memory_bytes, unrouted = FALSE",
        )
        .bind(&i.name)
        .bind_env(&i.app, &i.env)
        .bind(&i.process)
        .bind(super::int(i.release))
        .bind(super::int(i.replica))
        .bind(&i.node)
        .bind(now())
        .bind(i.reserve_millicpus)
        .bind(i.reserve_memory_bytes)
        .execute(ex)
        .await)?;
    }
    Ok(())
}

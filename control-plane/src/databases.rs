//! Managed PostgreSQL of an environment: creating one (placed by `assign`, credentials sealed
//! like config, `DATABASE_URL` set in the environment's config, which rolls the app out with
//! it), its backup settings, what `db info` shows, and the primary's published port.

use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::DatabaseRow;
use crate::{assign, backups, config, dbroles};
use protocol::agent::{ContainerStatus, DatabaseSpec, DbRole};
use protocol::api::{ConfigChange, CreateDatabase, DatabaseInfo, DatabaseServer, DatabaseSettings};
use protocol::DockerNames;
use std::collections::BTreeMap;
use std::time::Duration;

/// PostgreSQL major versions the default image can be built for (Debian bookworm's).
const VERSIONS: &[u32] = &[15];

fn url(spec: &DatabaseSpec, host: &str, port: u16, reveal: bool) -> String {
    let password = if reveal { spec.password.as_str() } else { "****" };
    format!("postgres://{}:{password}@{host}:{port}/{}", spec.user, spec.database)
}

/// The config change that points the app at its database: `DATABASE_URL` (and
/// `DATABASE_REPLICA_URL` with a replica) with the app role's current password.
async fn url_config(state: &AppState, row: &DatabaseRow) -> Result<ConfigChange> {
    let spec = assign::database_spec(state, row, DbRole::Primary).await?;
    let mut set =
        BTreeMap::from([("DATABASE_URL".to_string(), url(&spec, DbRole::Primary.as_str(), 5432, true))]);
    if row.replicas > 0 {
        set.insert("DATABASE_REPLICA_URL".to_string(), url(&spec, DbRole::Replica.as_str(), 5432, true));
    }
    Ok(ConfigChange { set, unset: Vec::new(), secret: false })
}

/// Creates the database of `app`/`env` and points the app at it.
pub async fn create(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    body: CreateDatabase,
) -> Result<DatabaseInfo> {
    let env_row = state.store.get_env(app, env).await?;
    let version = body.version.unwrap_or(15);
    if !VERSIONS.contains(&version) {
        return Err(DomainError::Invalid(format!("PostgreSQL {version} is not available; use 15")));
    }
    let max_connections = body.max_connections.unwrap_or(100);
    if !(10..=10_000).contains(&max_connections) {
        return Err(DomainError::Invalid("max_connections must be between 10 and 10000".into()));
    }
    let replicas = body.replicas.unwrap_or(1);
    if replicas > 1 {
        let why = "one streaming replica is supported for now (--replicas 0 or 1)";
        return Err(DomainError::Invalid(why.into()));
    }
    let (backup_schedule, keep_count, keep_days) = checked_settings(&body.settings, None)?;
    // Before looking for kept volumes: the database's own would be one.
    if state.store.get_database(app, env).await.is_ok() {
        return Err(DomainError::Conflict(format!("{app}/{env} already has a database")));
    }
    let names = protocol::DockerNames { app, env, legacy: env_row.legacy_names };
    let (node, replica_node) = placement(state, &names, replicas, body.reuse_volume).await?;
    let (password, superuser_password, replication_password) = dbroles::new_secrets(&state.secrets);
    let row = DatabaseRow {
        app: app.to_string(),
        env: env.to_string(),
        version,
        node,
        password,
        superuser_password,
        replication_password,
        max_connections,
        replicas,
        replica_node,
        backup_schedule,
        keep_count,
        keep_days,
        last_scheduled_at: 0,
        created_at: String::new(),
        host_port: 0,
        legacy_names: false,
        primary_volume: String::new(),
        replica_volume: String::new(),
        fenced: false,
    };
    if let Some(why) = dbroles::reserved_role(&row.database_name()) {
        return Err(DomainError::Invalid(why));
    }
    state.store.create_database(&row).await?;
    // Read back: the environment decides the Docker names.
    let row = state.store.get_database(app, env).await?;
    let servers = [DbRole::Primary, DbRole::Replica].map(|role| row.docker_names().database(role.as_str()));
    state.new_database_servers(&servers[..if replicas > 0 { 2 } else { 1 }]);
    let reused = body.reuse_volume;
    tracing::info!(app, env, version, node = %row.node, reused, user, "database created");
    state.bump();
    config::change(state, user, app, env, url_config(state, &row).await?).await?;
    info(state, &row, false).await
}

/// How long `db create` waits for a node that has not yet listed its volumes (one that just
/// started, or a control plane that just did): agents report every second.
const VOLUMES_WAIT: Duration = Duration::from_secs(10);

/// Where a new database's servers go, given the volumes an earlier database of the same names
/// left on the nodes (deleting an app or environment keeps them). A new database never starts
/// on one silently: its data carries the old passwords, so the app could not log in. Without
/// `reuse` a kept volume is refused by name; with it each server goes to the node holding its
/// volume, and the agent gives the app's role the new password once the server runs.
async fn placement(
    state: &AppState,
    names: &DockerNames<'_>,
    replicas: u32,
    reuse: bool,
) -> Result<(String, String)> {
    let ready = assign::ready_nodes(state).await?;
    let roles: &[DbRole] =
        if replicas > 0 { &[DbRole::Primary, DbRole::Replica] } else { &[DbRole::Primary] };
    // Per role: its volume's name (ours, from checked names) and the node holding it.
    let mut kept: Vec<(String, Option<String>)> = Vec::new();
    for role in roles {
        let volume = names.database(role.as_str());
        let mut holder = None;
        for node in &ready {
            let Some(list) = state.db_volumes(&node.name, VOLUMES_WAIT).await else {
                return Err(DomainError::Unavailable(format!(
                    "node {} has not said which database volumes it holds yet; try again in a few seconds",
                    node.name
                )));
            };
            if list.contains(&volume) {
                holder = Some(node.name.clone());
                break;
            }
        }
        kept.push((volume, holder));
    }
    let (app, env) = (names.app, names.env);
    if !reuse {
        if let Some((volume, Some(node))) = kept.iter().find(|(_, node)| node.is_some()) {
            return Err(DomainError::Conflict(format!(
                "the volume {volume} on node {node} still holds the data of an earlier database of {app}/{env}: remove it with `docker volume rm {volume}` on that node, or keep its data with `paas db create --reuse-volume`"
            )));
        }
        return assign::database_nodes(state, (None, None)).await;
    }
    let (volume, primary) = kept[0].clone();
    let Some(primary) = primary else {
        return Err(DomainError::Invalid(format!(
            "no ready node holds a volume {volume} to reuse; create the database without --reuse-volume"
        )));
    };
    assign::database_nodes(state, (Some(primary), kept.get(1).and_then(|(_, node)| node.clone()))).await
}

/// Validates settings over the current ones (or the defaults): schedule, keep, keep_days.
fn checked_settings(s: &DatabaseSettings, current: Option<&DatabaseRow>) -> Result<(String, u32, u32)> {
    let schedule = s
        .backup_schedule
        .clone()
        .or_else(|| current.map(|c| c.backup_schedule.clone()))
        .unwrap_or_else(|| backups::DEFAULT_SCHEDULE.to_string());
    let schedule = match backups::parse_schedule(&schedule) {
        Ok(Some(cron)) => cron.to_string(),
        Ok(None) => "off".to_string(),
        Err(e) => return Err(DomainError::Invalid(format!("the backup schedule is not valid: {e}"))),
    };
    let keep = s.keep.or(current.map(|c| c.keep_count)).unwrap_or(7);
    let keep_days = s.keep_days.or(current.map(|c| c.keep_days)).unwrap_or(30);
    if keep == 0 || keep > 1000 {
        return Err(DomainError::Invalid("--keep must be between 1 and 1000 backups".into()));
    }
    if keep_days == 0 || keep_days > 3650 {
        return Err(DomainError::Invalid("--keep-days must be between 1 and 3650".into()));
    }
    Ok((schedule, keep, keep_days))
}

/// The events `db info` shows as the database's timeline.
const TIMELINE: &[&str] = &["db.switchover", "db.failover", "db.failover.refused", "db.credentials.rotated"];

/// How long a rotation waits for the primary to take the new password before it rolls the app
/// out with it anyway (the store holds it; the agent keeps trying).
const ROTATE_WAIT: Duration = Duration::from_secs(30);

/// `paas db rotate-credentials`: a new password for the app's role, set on the primary, then
/// rolled out in `DATABASE_URL` as a release like any config change. Connections already open
/// stay open (PostgreSQL checks a password only at login); the old release's close when its
/// containers stop.
pub async fn rotate_credentials(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
) -> Result<protocol::api::ConfigChanged> {
    let row = state.store.get_database(app, env).await?;
    if row.fenced {
        return Err(DomainError::Conflict(format!("a switchover of {app}/{env}'s database is under way")));
    }
    if let Some(t) = state.store.get_env(app, env).await?.target_release {
        return Err(DomainError::Conflict(format!(
            "a deploy of {app}/{env} is in progress (release v{t}); rotate the credentials after it"
        )));
    }
    let primary = row.docker_names().database(DbRole::Primary.as_str());
    if !state.db_status(&primary).is_some_and(|s| s.healthy) {
        return Err(DomainError::Conflict(format!(
            "the primary of {app}/{env} is not healthy, so it could not take a new password (`paas db info` shows why)"
        )));
    }
    let sealed = state.secrets.seal(dbroles::generate_password().as_bytes());
    let old_password = row.password.clone();
    state.store.set_database_password(app, env, &sealed).await?;
    state.changed_database_servers(std::slice::from_ref(&primary));
    state.bump();
    // The agent sets the password before it reports from the new spec; its login check then
    // uses the new one.
    let deadline = std::time::Instant::now() + ROTATE_WAIT;
    let taken = loop {
        let fresh = state.db_reported_since_change(&primary);
        let status = state.db_status(&primary);
        let figures = status.as_ref().filter(|s| s.healthy).and_then(|s| s.db.as_ref());
        if fresh && figures.is_some_and(|f| f.login_error.is_none()) {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !taken {
        tracing::warn!(
            app,
            env,
            "the primary did not confirm the new password in time; rolling it out anyway"
        );
    }
    let row = state.store.get_database(app, env).await?;
    let change = url_config(state, &row).await?;
    let changed = match config::change(state, user, app, env, change).await {
        Ok(c) => c,
        Err(e) => {
            // The app keeps the URL it has: so does the role.
            state.store.set_database_password(app, env, &old_password).await?;
            state.bump();
            return Err(e);
        }
    };
    tracing::info!(app, env, user, confirmed = taken, "database credentials rotated");
    let msg = "Database credentials rotated: the app's role has a new password, which DATABASE_URL carries";
    state.store.add_event(app, env, "db.credentials.rotated", "info", msg).await?;
    state.events_changed();
    Ok(changed)
}

/// Changes a database's backup schedule and retention, and applies the retention at once.
pub async fn set_settings(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    body: &DatabaseSettings,
) -> Result<DatabaseInfo> {
    let row = state.store.get_database(app, env).await?;
    let (schedule, keep, keep_days) = checked_settings(body, Some(&row))?;
    state.store.set_database_settings(app, env, &schedule, keep, keep_days).await?;
    tracing::info!(app, env, schedule = %schedule, keep, keep_days, user, "database backup settings changed");
    backups::retention(state, app, env).await?;
    info(state, &state.store.get_database(app, env).await?, false).await
}

/// What `paas db info` shows: the servers as their agents last reported them, the URLs (the
/// password masked unless `reveal`), and the state of the backups.
pub async fn info(state: &AppState, row: &DatabaseRow, reveal: bool) -> Result<DatabaseInfo> {
    let nodes = state.store.list_nodes().await?;
    // A server that runs but that the app cannot log in to is not healthy: the agent's login
    // as the app's role failed, or DATABASE_URL no longer carries that role's credentials.
    let server = |spec: &DatabaseSpec, node: &str, url_problem: Option<String>| {
        let status = state.db_status(&spec.name);
        let addr = nodes.iter().find(|n| n.name == node).map(|n| n.private_addr.clone());
        let host_port = status.as_ref().and_then(|s| s.host_port);
        let node_url = addr.as_ref().zip(host_port).map(|(a, p)| url(spec, a, p, reveal));
        let figures = status.as_ref().and_then(|s| s.db.clone());
        let running = status.as_ref().is_some_and(|s| s.healthy);
        let login = figures.as_ref().and_then(|f| f.login_error.clone());
        let problem = url_problem.or(login).filter(|_| running);
        let server = DatabaseServer {
            name: spec.name.clone(),
            node: node.to_string(),
            state: status.as_ref().map_or_else(|| "pending".to_string(), |s| s.state.clone()),
            healthy: running && problem.is_none(),
            figures,
            address: addr.zip(host_port).map(|(a, p)| format!("{a}:{p}")),
            problem,
        };
        (server, node_url)
    };
    let primary = assign::database_spec(state, row, DbRole::Primary).await?;
    let config = state.secrets.open_map(&state.store.get_env(&row.app, &row.env).await?.config)?;
    let credentials = format!("//{}:{}@", primary.user, primary.password);
    let url_problem = match config.get("DATABASE_URL") {
        Some(u) if u.contains(&credentials) => None,
        Some(_) => Some("DATABASE_URL in the environment's config carries other credentials than this database's app role, so the app cannot log in with them".to_string()),
        // Unset by hand: the app does not use this database through it.
        None => None,
    };
    let (primary_server, node_url) = server(&primary, &row.node, url_problem);
    let (replica, replica_node_url) = if row.replicas > 0 {
        let spec = assign::database_spec(state, row, DbRole::Replica).await?;
        let (s, u) = server(&spec, &row.replica_node, None);
        (Some(s), u)
    } else {
        (None, None)
    };
    let all = state.store.list_backups(&row.app, &row.env).await?;
    Ok(DatabaseInfo {
        backup_schedule: row.backup_schedule.clone(),
        next_backup_at: backups::next_due_text(row),
        keep: row.keep_count,
        keep_days: row.keep_days,
        last_backup: all.first().cloned(),
        last_verified: all.iter().find(|b| b.verification == protocol::api::Verification::Ok).cloned(),
        warnings: backups::warnings(row, &all),
        archive: backups::archive(state, row, &all).await?,
        timeline: state.store.events_of_kinds(&row.app, &row.env, TIMELINE, 10).await?,
        app: row.app.clone(),
        env: row.env.clone(),
        version: row.version,
        max_connections: row.max_connections,
        url: url(&primary, DbRole::Primary.as_str(), 5432, reveal),
        node_url,
        replica_url: (row.replicas > 0).then(|| url(&primary, DbRole::Replica.as_str(), 5432, reveal)),
        replica_node_url,
        revealed: reveal,
        primary: primary_server,
        replica,
    })
}

/// Takes in the database servers a node reported. A primary keeps the port Docker first gave
/// it (replicas elsewhere follow that address); the store is asked only when a port is new.
pub async fn observed(
    state: &AppState,
    node: &str,
    servers: Vec<ContainerStatus>,
    volumes: Option<Vec<String>>,
    assignment_index: u64,
) -> Result<()> {
    if let Some(volumes) = volumes {
        state.set_db_volumes(node, volumes);
    }
    let new_ports = state.set_db_status(node, servers, assignment_index);
    if new_ports.is_empty() {
        return Ok(());
    }
    for db in state.store.databases_for_node(node).await?.into_iter().filter(|d| d.host_port == 0) {
        let name = db.docker_names().database(DbRole::Primary.as_str());
        if let Some(port) = new_ports.iter().find(|s| s.name == name).and_then(|s| s.host_port) {
            if state.store.keep_database_port(&db.app, &db.env, port).await? {
                state.bump();
            }
        }
    }
    Ok(())
}

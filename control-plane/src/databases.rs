//! Managed PostgreSQL of an environment: creating one (placed by `assign`, credentials sealed
//! like config, `DATABASE_URL` set in the environment's config, which rolls the app out with
//! it), its backup settings, what `db info` shows, and the primary's published port.

use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::DatabaseRow;
use crate::{assign, backups, config, dbroles};
use protocol::agent::{ContainerStatus, DatabaseSpec, DbRole};
use protocol::api::{ConfigChange, CreateDatabase, DatabaseInfo, DatabaseServer, DatabaseSettings};
use std::collections::BTreeMap;

/// PostgreSQL major versions the default image can be built for (Debian bookworm's).
const VERSIONS: &[u32] = &[15];

fn url(spec: &DatabaseSpec, host: &str, port: u16, reveal: bool) -> String {
    let password = if reveal { spec.password.as_str() } else { "****" };
    format!("postgres://{}:{password}@{host}:{port}/{}", spec.user, spec.database)
}

/// Creates the database of `app`/`env` and points the app at it.
pub async fn create(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    body: CreateDatabase,
) -> Result<DatabaseInfo> {
    state.store.get_env(app, env).await?;
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
    let (node, replica_node) = assign::database_nodes(state).await?;
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
    };
    if let Some(why) = dbroles::reserved_role(&row.database_name()) {
        return Err(DomainError::Invalid(why));
    }
    state.store.create_database(&row).await?;
    // Read back: the environment decides the Docker names.
    let row = state.store.get_database(app, env).await?;
    tracing::info!(app, env, version, node = %row.node, user, "database created");
    state.bump();
    let spec = assign::database_spec(state, &row, DbRole::Primary).await?;
    let mut set =
        BTreeMap::from([("DATABASE_URL".to_string(), url(&spec, DbRole::Primary.as_str(), 5432, true))]);
    if replicas > 0 {
        set.insert("DATABASE_REPLICA_URL".to_string(), url(&spec, DbRole::Replica.as_str(), 5432, true));
    }
    config::change(state, user, app, env, ConfigChange { set, unset: Vec::new(), secret: false }).await?;
    info(state, &row, false).await
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
    let server = |spec: &DatabaseSpec, node: &str| {
        let status = state.db_status(&spec.name);
        let addr = nodes.iter().find(|n| n.name == node).map(|n| n.private_addr.clone());
        let host_port = status.as_ref().and_then(|s| s.host_port);
        let node_url = addr.as_ref().zip(host_port).map(|(a, p)| url(spec, a, p, reveal));
        let server = DatabaseServer {
            name: spec.name.clone(),
            node: node.to_string(),
            state: status.as_ref().map_or_else(|| "pending".to_string(), |s| s.state.clone()),
            healthy: status.as_ref().is_some_and(|s| s.healthy),
            figures: status.as_ref().and_then(|s| s.db.clone()),
            address: addr.zip(host_port).map(|(a, p)| format!("{a}:{p}")),
        };
        (server, node_url)
    };
    let primary = assign::database_spec(state, row, DbRole::Primary).await?;
    let (primary_server, node_url) = server(&primary, &row.node);
    let (replica, replica_node_url) = if row.replicas > 0 {
        let spec = assign::database_spec(state, row, DbRole::Replica).await?;
        let (s, u) = server(&spec, &row.replica_node);
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
pub async fn observed(state: &AppState, node: &str, servers: Vec<ContainerStatus>) -> Result<()> {
    let new_ports = state.set_db_status(node, servers);
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

//! `/api/v1/apps/{app}/envs/{env}/db`: managed PostgreSQL for an environment. Creating one
//! places its primary on a node, generates credentials (sealed like config) and sets
//! `DATABASE_URL` in the environment's config, which rolls the app out with it.

use super::auth::Caller;
use super::envs::apply_config_change;
use super::error::{ApiError, ApiResult};
use crate::assign;
use crate::backups;
use crate::dbroles;
use crate::state::AppState;
use crate::store::DatabaseRow;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use protocol::agent::DbRole;
use protocol::api::{
    ConfigChange, CreateDatabase, DatabaseInfo, DatabaseServer, DatabaseSettings, Verification,
};
use serde::Deserialize;
use std::collections::BTreeMap;

/// PostgreSQL major versions the default image can be built for (Debian bookworm's).
const VERSIONS: &[u32] = &[15];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app}/envs/{env}/db", get(info).post(create))
        .route("/apps/{app}/envs/{env}/db/settings", axum::routing::post(settings))
}

fn url(spec: &protocol::agent::DatabaseSpec, host: &str, port: u16, reveal: bool) -> String {
    let password = if reveal { spec.password.as_str() } else { "****" };
    format!("postgres://{}:{password}@{host}:{port}/{}", spec.user, spec.database)
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(body): Json<CreateDatabase>,
) -> ApiResult<(StatusCode, Json<DatabaseInfo>)> {
    state.store.get_env(&app, &env).await?;
    let version = body.version.unwrap_or(15);
    if !VERSIONS.contains(&version) {
        return Err(ApiError::Unprocessable(format!("PostgreSQL {version} is not available; use 15")));
    }
    let max_connections = body.max_connections.unwrap_or(100);
    if !(10..=10_000).contains(&max_connections) {
        return Err(ApiError::Unprocessable("max_connections must be between 10 and 10000".into()));
    }
    let replicas = body.replicas.unwrap_or(1);
    if replicas > 1 {
        return Err(ApiError::Unprocessable(
            "one streaming replica is supported for now (--replicas 0 or 1)".into(),
        ));
    }
    let (backup_schedule, keep_count, keep_days) = checked_settings(&body.settings, None)?;
    let nodes = assign::ready_nodes(&state).await.map_err(ApiError::Internal)?;
    let node = nodes.first().map(|n| n.name.clone()).ok_or_else(|| {
        ApiError::Unavailable("no node is available to run the database; is a node agent running?".into())
    })?;
    // The replica goes on another node when there is one.
    let replica_node = nodes.iter().find(|n| n.name != node).map_or_else(|| node.clone(), |n| n.name.clone());
    let (password, superuser_password, replication_password) = dbroles::new_secrets(&state.secrets);
    let row = DatabaseRow {
        app: app.clone(),
        env: env.clone(),
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
        return Err(ApiError::Unprocessable(why));
    }
    state.store.create_database(&row).await?;
    // Read back: the environment decides the Docker names.
    let row = state.store.get_database(&app, &env).await?;
    tracing::info!(app = %app, env = %env, version, node = %row.node, user = %caller.user, "database created");
    state.bump();
    let spec = assign::database_spec(&state, &row, DbRole::Primary).await?;
    let mut set =
        BTreeMap::from([("DATABASE_URL".to_string(), url(&spec, DbRole::Primary.as_str(), 5432, true))]);
    if replicas > 0 {
        set.insert("DATABASE_REPLICA_URL".to_string(), url(&spec, DbRole::Replica.as_str(), 5432, true));
    }
    let change = ConfigChange { set, unset: Vec::new() };
    apply_config_change(&state, &caller.user, &app, &env, change).await?;
    Ok((StatusCode::CREATED, Json(view(&state, &row, false).await?)))
}

/// Validates settings over the current ones (or the defaults): schedule, keep, keep_days.
fn checked_settings(s: &DatabaseSettings, current: Option<&DatabaseRow>) -> ApiResult<(String, u32, u32)> {
    let schedule = s
        .backup_schedule
        .clone()
        .or_else(|| current.map(|c| c.backup_schedule.clone()))
        .unwrap_or_else(|| backups::DEFAULT_SCHEDULE.to_string());
    let schedule = match backups::parse_schedule(&schedule) {
        Ok(Some(cron)) => cron.to_string(),
        Ok(None) => "off".to_string(),
        Err(e) => return Err(ApiError::Unprocessable(format!("the backup schedule is not valid: {e}"))),
    };
    let keep = s.keep.or(current.map(|c| c.keep_count)).unwrap_or(7);
    let keep_days = s.keep_days.or(current.map(|c| c.keep_days)).unwrap_or(30);
    if keep == 0 || keep > 1000 {
        return Err(ApiError::Unprocessable("--keep must be between 1 and 1000 backups".into()));
    }
    if keep_days == 0 || keep_days > 3650 {
        return Err(ApiError::Unprocessable("--keep-days must be between 1 and 3650".into()));
    }
    Ok((schedule, keep, keep_days))
}

async fn settings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(body): Json<DatabaseSettings>,
) -> ApiResult<Json<DatabaseInfo>> {
    let row = state.store.get_database(&app, &env).await?;
    let (schedule, keep, keep_days) = checked_settings(&body, Some(&row))?;
    state.store.set_database_settings(&app, &env, &schedule, keep, keep_days).await?;
    tracing::info!(app = %app, env = %env, schedule = %schedule, keep, keep_days, user = %caller.user, "database backup settings changed");
    backups::retention(&state, &app, &env).await.map_err(ApiError::Internal)?;
    let row = state.store.get_database(&app, &env).await?;
    Ok(Json(view(&state, &row, false).await?))
}

#[derive(Deserialize)]
struct RevealQuery {
    #[serde(default)]
    reveal: bool,
}

async fn info(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<RevealQuery>,
) -> ApiResult<Json<DatabaseInfo>> {
    state.store.get_env(&app, &env).await?;
    let row = state.store.get_database(&app, &env).await?;
    Ok(Json(view(&state, &row, q.reveal).await?))
}

async fn view(state: &AppState, row: &DatabaseRow, reveal: bool) -> ApiResult<DatabaseInfo> {
    let nodes = state.store.list_nodes().await?;
    let server = |spec: &protocol::agent::DatabaseSpec, node: &str| {
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
        last_verified: all.iter().find(|b| b.verification == Verification::Ok).cloned(),
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

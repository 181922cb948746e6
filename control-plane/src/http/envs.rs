//! `/api/v1/apps/{app}/envs...`: environments, their config vars, promotion between
//! environments and maintenance mode.

use super::auth::Caller;
use super::error::ApiResult;
use super::routes::{Api, AuditNote, Need};
use crate::state::AppState;
use crate::{apps, config, releases};
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::{Extension, Json};
use protocol::access::Role::{Admin, Deployer, Viewer};
use protocol::api::{
    App, ConfigChange, ConfigChanged, ConfigVars, CreateEnv, MaintenanceMode, Promote, Release,
    SetMaintenance, SwapEnvs,
};

pub fn routes() -> Api {
    Api::new()
        .on(Method::POST, "/apps/{app}/envs", Need::App(Admin), "env.create", create)
        .on(Method::DELETE, "/apps/{app}/envs/{env}", Need::App(Admin), "env.delete", remove)
        .get("/apps/{app}/envs/{env}/config", Need::App(Viewer), list_config)
        .on(
            Method::POST,
            "/apps/{app}/envs/{env}/config",
            Need::App(Deployer),
            "config.change",
            change_config,
        )
        .on(Method::POST, "/apps/{app}/envs/{env}/promote", Need::App(Deployer), "promote", promote)
        .on(Method::POST, "/apps/{app}/envs/{env}/swap", Need::App(Deployer), "env.swap", swap)
        .on(
            Method::PUT,
            "/apps/{app}/envs/{env}/maintenance",
            Need::App(Deployer),
            "env.maintenance",
            maintenance,
        )
}

async fn swap(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(body): Json<SwapEnvs>,
) -> ApiResult<Json<App>> {
    Ok(Json(apps::swap_envs(&state, &caller.user, &app, &env, &body.with).await?))
}

async fn maintenance(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(body): Json<SetMaintenance>,
) -> ApiResult<(Extension<AuditNote>, Json<MaintenanceMode>)> {
    let mode = apps::set_maintenance(&state, &caller.user, &app, &env, body.enabled).await?;
    let note = AuditNote(format!("Maintenance mode {}", if mode.enabled { "on" } else { "off" }));
    Ok((Extension(note), Json(mode)))
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    Json(body): Json<CreateEnv>,
) -> ApiResult<(StatusCode, Json<App>)> {
    Ok((StatusCode::CREATED, Json(apps::create_env(&state, &caller.user, &app, body.name).await?)))
}

async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    apps::delete_env(&state, &caller.user, &app, &env).await?;
    Ok(Json(serde_json::json!({ "deleted": format!("{app}/{env}") })))
}

async fn list_config(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<super::Reveal>,
) -> ApiResult<Json<ConfigVars>> {
    Ok(Json(config::vars(&state, &caller, &app, &env, q.reveal).await?))
}

/// 202 when the change rolls out as a new release, 200 when nothing runs yet.
async fn change_config(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(change): Json<ConfigChange>,
) -> ApiResult<(StatusCode, Extension<AuditNote>, Json<ConfigChanged>)> {
    // Names only (checked by the change), never values: the note goes to the audit log.
    let set = (!change.set.is_empty())
        .then(|| format!("Set config {}", Vec::from_iter(change.set.keys().cloned()).join(", ")));
    let verb = if set.is_some() { "unset" } else { "Unset" };
    let unset = (!change.unset.is_empty()).then(|| format!("{verb} config {}", change.unset.join(", ")));
    let note = AuditNote(Vec::from_iter(set.into_iter().chain(unset)).join("; "));
    let changed = config::change(&state, &caller.user, &app, &env, change).await?;
    let status = if changed.release.is_some() { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Extension(note), Json(changed)))
}

async fn promote(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, to)): Path<(String, String)>,
    Json(body): Json<Promote>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    let release = releases::promote(&state, &caller.user, &app, &body.from, &to).await?;
    Ok((StatusCode::ACCEPTED, Json(release)))
}

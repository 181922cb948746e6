//! `/api/v1/apps/{app}/envs...`: environments, their config vars (sealed at rest, masked unless
//! revealed; a change rolls out as a new release) and promotion between environments.

use super::apps::app_view;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::NewRelease;
use crate::{assign, deploy};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use protocol::api::{
    App, ConfigChange, ConfigChanged, ConfigVars, CreateEnv, Promote, Release, ReleaseStatus,
};
use protocol::{manifest, EnvName};
use serde::Deserialize;
use std::collections::BTreeMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app}/envs", post(create))
        .route("/apps/{app}/envs/{env}", delete(remove))
        .route("/apps/{app}/envs/{env}/config", get(list_config).post(change_config))
        .route("/apps/{app}/envs/{env}/promote", post(promote))
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    Json(body): Json<CreateEnv>,
) -> ApiResult<(StatusCode, Json<App>)> {
    let env = EnvName::new(body.name)?;
    state.store.create_env(&app, env.as_str()).await?;
    tracing::info!(app = %app, env = %env, user = %caller.user, "environment created");
    state.bump();
    let (name, created) = state.store.get_app(&app).await?;
    Ok((StatusCode::CREATED, Json(app_view(&state, &name, created).await?)))
}

async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    if env == protocol::PRODUCTION {
        return Err(ApiError::Conflict("production cannot be deleted; delete the app instead".into()));
    }
    state.store.delete_env(&app, &env).await?;
    let _ = std::fs::remove_dir_all(state.sources_dir().join(&app).join(&env));
    tracing::info!(app = %app, env = %env, user = %caller.user, "environment deleted");
    state.bump();
    Ok(Json(serde_json::json!({ "deleted": format!("{app}/{env}") })))
}

fn masked(app: &str, env: &str, vars: BTreeMap<String, String>, reveal: bool) -> ConfigVars {
    let vars = if reveal { vars } else { vars.into_keys().map(|k| (k, "****".to_string())).collect() };
    ConfigVars { app: app.to_string(), env: env.to_string(), vars, revealed: reveal }
}

#[derive(Deserialize)]
struct RevealQuery {
    #[serde(default)]
    reveal: bool,
}

async fn list_config(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<RevealQuery>,
) -> ApiResult<Json<ConfigVars>> {
    let row = state.store.get_env(&app, &env).await?;
    let vars = state.secrets.open_map(&row.config)?;
    if q.reveal {
        tracing::info!(app = %app, env = %env, user = %caller.user, "config revealed");
    }
    Ok(Json(masked(&app, &env, vars, q.reveal)))
}

/// Applies a config change and, when the environment runs a release, rolls out a new release
/// with the same image and the new values.
async fn change_config(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(change): Json<ConfigChange>,
) -> ApiResult<(StatusCode, Json<ConfigChanged>)> {
    let changed = apply_config_change(&state, &caller.user, &app, &env, change).await?;
    let status = if changed.release.is_some() { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok((status, Json(changed)))
}

/// Validates and applies a config change; when the environment runs a release, starts a new
/// release with it. Also used by the database commands to set `DATABASE_URL`.
pub(super) async fn apply_config_change(
    state: &AppState,
    user: &str,
    app: &str,
    env: &str,
    change: ConfigChange,
) -> ApiResult<ConfigChanged> {
    let (app, env) = (app.to_string(), env.to_string());
    if change.set.is_empty() && change.unset.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to change: give KEY=VALUE pairs to set or keys to unset".into(),
        ));
    }
    for key in change.set.keys().chain(&change.unset) {
        protocol::names::check_config_key(key).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    }
    if let Some((k, _)) = change.set.iter().find(|(_, v)| v.contains('\0')) {
        return Err(ApiError::Unprocessable(format!("the value of {k} contains a NUL byte")));
    }
    let _guard = state.config_lock.lock().await;
    let row = state.store.get_env(&app, &env).await?;
    if let Some(t) = row.target_release {
        return Err(ApiError::Conflict(format!(
            "a deploy of {app}/{env} is in progress (release v{t}); change config after it"
        )));
    }
    let mut vars = state.secrets.open_map(&row.config)?;
    if let Some(k) = change.unset.iter().find(|k| !vars.contains_key(*k) && !change.set.contains_key(*k)) {
        return Err(ApiError::Unprocessable(format!("{k} is not set in {app}/{env}")));
    }
    for k in &change.unset {
        vars.remove(k);
    }
    vars.extend(change.set.clone());
    let sealed = state.secrets.seal_map(&vars);

    let mut what = Vec::new();
    if !change.set.is_empty() {
        what.push(format!("Set {}", change.set.keys().cloned().collect::<Vec<_>>().join(", ")));
    }
    if !change.unset.is_empty() {
        what.push(format!("Unset {}", change.unset.join(", ")));
    }
    let release = match row.current_release {
        Some(current) => {
            let base = state.store.get_release(&app, &env, current).await?;
            let (_, manifest_text) = state.store.release_inputs(&app, &env, current).await?;
            let node = assign::build_node(state).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
            let new = NewRelease {
                source: base.source.clone(),
                created_by: user.to_string(),
                build_node: node,
                manifest: base.manifest.clone(),
                manifest_text,
                description: what.join("; "),
                image_id: base.image_id.clone(),
                config: sealed.clone(),
                config_keys: vars.keys().cloned().collect(),
            };
            let release = state.store.create_release(&app, &env, &new).await?;
            state.store.set_env_config(&app, &env, &sealed).await?;
            state
                .deploy_event(&app, &env, release.version, "stage", std::slice::from_ref(&new.description))
                .await;
            state.bump();
            deploy::spawn(state.clone(), release.clone());
            Some(release)
        }
        None => {
            state.store.set_env_config(&app, &env, &sealed).await?;
            None
        }
    };
    // Names only: values never reach the log.
    tracing::info!(app = %app, env = %env, user = %user, change = %what.join("; "), "config changed");
    Ok(ConfigChanged { vars: masked(&app, &env, vars, false), release })
}

/// Build once, promote everywhere: the image `from` runs, with the target's own config and
/// the target's overrides of the same paas.toml.
async fn promote(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, to)): Path<(String, String)>,
    Json(body): Json<Promote>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    if body.from == to {
        return Err(ApiError::Unprocessable("promote from one environment to another, not to itself".into()));
    }
    let from_row = state.store.get_env(&app, &body.from).await?;
    let to_row = state.store.get_env(&app, &to).await?;
    let current = from_row
        .current_release
        .ok_or_else(|| ApiError::Conflict(format!("{app}/{} runs no release to promote", body.from)))?;
    let source = state.store.get_release(&app, &body.from, current).await?;
    let image = match (&source.image_id, source.status) {
        (Some(id), ReleaseStatus::Active) => id.clone(),
        _ => return Err(ApiError::Conflict(format!("{app}/{} v{current} is not serving", body.from))),
    };
    let (_, manifest_text) = state.store.release_inputs(&app, &body.from, current).await?;
    let manifest =
        manifest::parse(&manifest_text, &to).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let (config, config_keys) = state.config_snapshot(&to_row)?;
    let node = assign::build_node(&state).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let new = NewRelease {
        source: source.source.clone(),
        created_by: caller.user.clone(),
        build_node: node,
        manifest,
        manifest_text,
        description: format!("Promotion of {} v{current}", body.from),
        image_id: Some(image),
        config,
        config_keys,
    };
    let release = state.store.create_release(&app, &to, &new).await?;
    tracing::info!(app = %app, from = %body.from, env = %to, release = release.version, user = %caller.user, "promotion started");
    state.deploy_event(&app, &to, release.version, "stage", std::slice::from_ref(&new.description)).await;
    state.bump();
    deploy::spawn(state.clone(), release.clone());
    Ok((StatusCode::ACCEPTED, Json(release)))
}

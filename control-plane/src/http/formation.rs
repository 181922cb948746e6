//! `/api/v1/apps/{app}/envs/{env}/rollback` and `/scale`: releases made from earlier ones, and
//! replica counts changed in place.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::NewRelease;
use crate::{assign, deploy};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use protocol::api::{Formation, Release, ReleaseStatus, Rollback, Scale};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app}/envs/{env}/rollback", post(rollback))
        .route("/apps/{app}/envs/{env}/scale", post(scale))
}

/// A new release with an earlier release's image and manifest, deployed blue/green like any
/// other; no build, since the image is kept.
async fn rollback(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    body: Option<Json<Rollback>>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    let to = body.and_then(|Json(b)| b.to);
    let env_row = state.store.get_env(&app, &env).await?;
    let current = env_row.current_release.ok_or_else(|| {
        ApiError::Conflict(format!("{app}/{env} has no release serving yet; nothing to roll back"))
    })?;
    let releases = state.store.list_releases(&app, &env).await?;
    let target = match to {
        Some(v) => releases
            .iter()
            .find(|r| r.version == v)
            .ok_or_else(|| ApiError::NotFound(format!("{app}/{env} has no release v{v}")))?,
        // The release that served before the current one.
        None => releases
            .iter()
            .find(|r| r.version < current && r.status == ReleaseStatus::Superseded)
            .ok_or_else(|| {
                ApiError::Conflict(format!("{app}/{env} has no earlier release to roll back to"))
            })?,
    };
    if target.version == current {
        return Err(ApiError::Conflict(format!("v{current} is already serving {app}/{env}")));
    }
    let Some(image) = target.image_id.clone().filter(|_| target.status != ReleaseStatus::Failed) else {
        return Err(ApiError::Conflict(format!("v{} never served; pick a release that did", target.version)));
    };
    let node = assign::build_node(&state).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    // The old release's config snapshot comes back with it, not only its image.
    let (config, manifest_text) = state.store.release_inputs(&app, &env, target.version).await?;
    let new = NewRelease {
        source: target.source.clone(),
        created_by: caller.user.clone(),
        build_node: node,
        manifest: target.manifest.clone(),
        manifest_text,
        description: format!("Rollback to v{}", target.version),
        image_id: Some(image),
        config,
        config_keys: target.config_keys.clone(),
    };
    let release = state.store.create_release(&app, &env, &new).await?;
    tracing::info!(app = %app, env = %env, release = release.version, to = target.version, user = %caller.user, "rollback started");
    state.deploy_event(&app, &env, release.version, "stage", std::slice::from_ref(&new.description)).await;
    state.bump();
    deploy::spawn(state.clone(), release.clone());
    Ok((StatusCode::ACCEPTED, Json(release)))
}

/// Adds or removes replicas of the serving release without touching the healthy ones.
async fn scale(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(body): Json<Scale>,
) -> ApiResult<Json<Formation>> {
    protocol::names::check_process(&body.process).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    if body.replicas > 100 {
        return Err(ApiError::Unprocessable("at most 100 replicas per process".into()));
    }
    let env_row = state.store.get_env(&app, &env).await?;
    if let Some(t) = env_row.target_release {
        return Err(ApiError::Conflict(format!(
            "a deploy of {app}/{env} is in progress (release v{t}); scale after it"
        )));
    }
    let mut added = Vec::new();
    if let Some(current) = env_row.current_release {
        let release = state.store.get_release(&app, &env, current).await?;
        if !release.manifest.processes.contains_key(&body.process) {
            let known: Vec<&str> = release.manifest.processes.keys().map(String::as_str).collect();
            return Err(ApiError::Unprocessable(format!(
                "release v{current} has no process {:?} (it has: {})",
                body.process,
                known.join(", ")
            )));
        }
        let running = state
            .store
            .instances_for_env(&app, &env)
            .await?
            .iter()
            .filter(|i| i.release == current && i.process == body.process)
            .map(|i| i.replica)
            .max()
            .unwrap_or(0);
        if body.replicas > running {
            added = assign::place(&state, &app, &env, &body.process, current, running + 1..=body.replicas)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        }
    }
    state.store.scale(&app, &env, &body.process, body.replicas, &added).await?;
    tracing::info!(app = %app, env = %env, process = %body.process, replicas = body.replicas, user = %caller.user, "scaled");
    state.bump();
    let env_row = state.store.get_env(&app, &env).await?;
    Ok(Json(Formation { app, env, processes: env_row.formation }))
}

//! `/api/v1/apps/{app}/envs/{env}/rollback`, `/restart` and `/scale`: releases made from earlier
//! ones (or the serving one again), and replica counts changed in place.

use super::auth::Caller;
use super::error::ApiResult;
use super::routes::{Api, AuditNote, Need};
use crate::releases;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::{Extension, Json};
use protocol::access::Role::Deployer;
use protocol::api::{Formation, ProcessRestart, Release, Rollback, Scale};

pub fn routes() -> Api {
    Api::new()
        .on(Method::POST, "/apps/{app}/envs/{env}/rollback", Need::App(Deployer), "rollback", rollback)
        .on(Method::POST, "/apps/{app}/envs/{env}/restart", Need::App(Deployer), "restart", restart)
        .on(Method::POST, "/apps/{app}/envs/{env}/scale", Need::App(Deployer), "scale", scale)
        .on(
            Method::POST,
            "/apps/{app}/envs/{env}/processes/{process}/restart",
            Need::App(Deployer),
            "restart",
            restart_process,
        )
}

async fn rollback(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    body: Option<Json<Rollback>>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    let to = body.and_then(|Json(b)| b.to);
    let release = releases::rollback(&state, &caller.user, &app, &env, to).await?;
    Ok((StatusCode::ACCEPTED, Json(release)))
}

async fn restart(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Release>)> {
    let release = releases::restart(&state, &caller.user, &app, &env).await?;
    Ok((StatusCode::ACCEPTED, Json(release)))
}

async fn restart_process(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env, process)): Path<(String, String, String)>,
) -> ApiResult<Json<ProcessRestart>> {
    Ok(Json(crate::restarts::restart_process(&state, &caller.user, &app, &env, &process).await?))
}

async fn scale(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(body): Json<Scale>,
) -> ApiResult<(Extension<AuditNote>, Json<Formation>)> {
    let formation = releases::scale(&state, &caller.user, &app, &env, &body.process, body.replicas).await?;
    let note = AuditNote(format!("Scaled {} to {}", body.process, body.replicas));
    Ok((Extension(note), Json(formation)))
}

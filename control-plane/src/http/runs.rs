//! `/api/v1/apps/{app}/envs/{env}/runs`: one-off commands in a fresh container of the current
//! release, with its config; output is followed by long polling.

use super::auth::Caller;
use super::error::ApiResult;
use super::routes::{Api, Need};
use crate::runs;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::{Extension, Json};
use protocol::access::Role::Deployer;
use protocol::api::{RunCommand, RunOutput};

pub fn routes() -> Api {
    Api::new()
        .on(Method::POST, "/apps/{app}/envs/{env}/runs", Need::App(Deployer), "run", start)
        // A run's output can print anything the app can read, config values included.
        .get("/apps/{app}/envs/{env}/runs/{id}", Need::App(Deployer), output)
}

async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(body): Json<RunCommand>,
) -> ApiResult<(StatusCode, Json<RunOutput>)> {
    let id = runs::start(&state, &caller.user, &app, &env, body.command).await?;
    let out = RunOutput { id, lines: Vec::new(), next: 0, finished: false, exit_code: None, error: None };
    Ok((StatusCode::ACCEPTED, Json(out)))
}

/// Output after line `after`; waits up to `wait` seconds (max 60).
async fn output(
    State(state): State<AppState>,
    Path((app, env, id)): Path<(String, String, String)>,
    Query(q): Query<super::Poll>,
) -> ApiResult<Json<RunOutput>> {
    Ok(Json(runs::output(&state, &app, &env, &id, q.after, q.wait()).await?))
}

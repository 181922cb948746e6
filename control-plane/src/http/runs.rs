//! `/api/v1/apps/{app}/envs/{env}/runs`: one-off commands in a fresh container of the current
//! release, with its config; output is followed by long polling, or the user joins the run
//! (`.../runs/{id}/attach`, see `attach`). `.../cron`: the serving
//! release's `[cron]` jobs, whose runs are one-off jobs too.

use super::auth::Caller;
use super::error::ApiResult;
use super::routes::{Api, Need};
use crate::runs;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::{Extension, Json};
use protocol::access::Role::{Deployer, Viewer};
use protocol::api::{CronStatus, RunCommand, RunOutput};

pub fn routes() -> Api {
    Api::new()
        .on(Method::POST, "/apps/{app}/envs/{env}/runs", Need::App(Deployer), "run", start)
        // A run's output can print anything the app can read, config values included.
        .get("/apps/{app}/envs/{env}/runs/{id}", Need::App(Deployer), output)
        .get("/apps/{app}/envs/{env}/runs/{id}/attach", Need::App(Deployer), super::attach::user)
        .get("/apps/{app}/envs/{env}/cron", Need::App(Viewer), cron)
}

async fn cron(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
) -> ApiResult<Json<Vec<CronStatus>>> {
    Ok(Json(crate::scheduled::list(&state, &app, &env).await?))
}

async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(body): Json<RunCommand>,
) -> ApiResult<(StatusCode, Json<RunOutput>)> {
    let id = runs::start(&state, &caller.user, &app, &env, body.command, body.attach).await?;
    Ok((StatusCode::ACCEPTED, Json(RunOutput::started(id))))
}

/// Output after line `after`; waits up to `wait` seconds (max 60).
async fn output(
    State(state): State<AppState>,
    Path((app, env, id)): Path<(String, String, String)>,
    Query(q): Query<super::Poll>,
) -> ApiResult<Json<RunOutput>> {
    Ok(Json(runs::output(&state, &app, &env, &id, q.after, q.wait()).await?))
}

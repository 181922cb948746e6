//! `/api/v1/apps/{app}/envs/{env}/runs`: one-off commands in a fresh container of the current
//! release, with its config; output is followed by long polling.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use crate::assign;
use crate::state::AppState;
use crate::store::{JobKind, JobRow, JobStatus};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use protocol::api::{RunCommand, RunOutput};
use serde::Deserialize;
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app}/envs/{env}/runs", post(start))
        .route("/apps/{app}/envs/{env}/runs/{id}", get(output))
}

async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(body): Json<RunCommand>,
) -> ApiResult<(StatusCode, Json<RunOutput>)> {
    if body.command.is_empty() || body.command[0].is_empty() {
        return Err(ApiError::Unprocessable(
            "give the command to run, e.g. `paas run --app A -- ls -l`".into(),
        ));
    }
    let row = state.store.get_env(&app, &env).await?;
    let release = row
        .current_release
        .ok_or_else(|| ApiError::Conflict(format!("{app}/{env} runs no release yet; deploy first")))?;
    let node = assign::build_node(&state).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let id =
        format!("run-{}", crate::tokens::generate().trim_start_matches("paas_").get(..12).unwrap_or("0"));
    let job = JobRow {
        id: id.clone(),
        app: app.clone(),
        env: env.clone(),
        release,
        node,
        kind: JobKind::Run,
        command: body.command,
        status: JobStatus::Pending,
        exit_code: None,
        error: None,
    };
    state.store.create_job(&job, &caller.user).await?;
    // The command line may hold secrets: log its program only.
    tracing::info!(app = %app, env = %env, release, job = %id, program = %job.command[0], user = %caller.user, "one-off run started");
    state.bump();
    let out = RunOutput { id, lines: Vec::new(), next: 0, finished: false, exit_code: None, error: None };
    Ok((StatusCode::ACCEPTED, Json(out)))
}

#[derive(Deserialize)]
struct OutputQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait: u64,
}

async fn output(
    State(state): State<AppState>,
    Path((app, env, id)): Path<(String, String, String)>,
    Query(q): Query<OutputQuery>,
) -> ApiResult<Json<RunOutput>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(60));
    let mut rx = state.subscribe_events();
    loop {
        let job = state.store.get_job(&id).await?;
        if job.app != app || job.env != env {
            return Err(ApiError::NotFound(format!("{app}/{env} has no run {id:?}")));
        }
        let (lines, next) = state.store.job_output_after(&id, q.after).await?;
        if !lines.is_empty() || job.done() || tokio::time::Instant::now() >= deadline {
            // Output first: a finished run is reported finished only once its output is read.
            let finished = job.done() && lines.is_empty();
            return Ok(Json(RunOutput {
                id,
                lines,
                next,
                finished,
                exit_code: if finished { job.exit_code } else { None },
                error: if finished { job.error } else { None },
            }));
        }
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
    }
}

//! Backups over HTTP. `/api/v1/apps/{app}/envs/{env}/db/...`: take, list, verify and restore
//! backups, run psql, follow database tasks; `/api/v1/events`. `/agent/v1/...`: the agent's
//! dump upload and download, its progress signals and its task results.

use super::auth::{Caller, NodeCaller};
use super::error::{ApiError, ApiResult};
use crate::backups;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use protocol::agent::{DbTaskKind, DbTaskResult};
use protocol::api::{
    Backup, BackupStatus, BackupTrigger, DbTaskView, Event, PsqlCommand, StartRestore, Verification,
};
use serde::Deserialize;
use serde_json::{json, Value};

const DB: &str = "/apps/{app}/envs/{env}/db";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(&format!("{DB}/backups"), get(list).post(create))
        .route(&format!("{DB}/backups/{{id}}"), get(show))
        .route(&format!("{DB}/backups/{{id}}/verify"), post(verify))
        .route(&format!("{DB}/restores"), post(restore))
        .route(&format!("{DB}/psql"), post(psql))
        .route(&format!("{DB}/tasks/{{id}}"), get(task))
        .route("/events", get(events))
}

pub fn agent_routes() -> Router<AppState> {
    Router::new()
        .route("/backups/{id}/data", axum::routing::put(upload).get(download))
        .route("/db-tasks/{id}/result", post(task_result))
        .route("/db-tasks/{id}/progress", post(task_progress))
}

/// A backup of this environment, or not found (ids are global; paths are per environment).
async fn env_backup(state: &AppState, app: &str, env: &str, id: &str) -> ApiResult<Backup> {
    let b = state.store.get_backup(id).await?;
    if b.app != app || b.env != env {
        return Err(ApiError::NotFound(format!(
            "{app}/{env} has no backup {id}; `paas db backups` lists them"
        )));
    }
    Ok(b)
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Backup>)> {
    let db = state.store.get_database(&app, &env).await?;
    let b = backups::start_backup(&state, &db, BackupTrigger::Manual).await?;
    tracing::info!(app = %app, env = %env, backup = %b.id, user = %caller.user, "backup requested");
    Ok((StatusCode::ACCEPTED, Json(b)))
}

async fn list(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Backup>>> {
    state.store.get_database(&app, &env).await?;
    Ok(Json(state.store.list_backups(&app, &env).await?))
}

async fn show(
    State(state): State<AppState>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> ApiResult<Json<Backup>> {
    Ok(Json(env_backup(&state, &app, &env, &id).await?))
}

async fn verify(
    State(state): State<AppState>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> ApiResult<(StatusCode, Json<Backup>)> {
    let b = env_backup(&state, &app, &env, &id).await?;
    if b.verification == Verification::Running {
        return Err(ApiError::Conflict(format!("backup {id} is being verified already")));
    }
    if b.status != BackupStatus::Stored {
        return Err(ApiError::Unprocessable(format!(
            "backup {id} is {}, so there is nothing to verify",
            b.status
        )));
    }
    backups::start_verify(&state, &b).await.map_err(ApiError::Internal)?;
    Ok((StatusCode::ACCEPTED, Json(state.store.get_backup(&id).await?)))
}

async fn restore(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(req): Json<StartRestore>,
) -> ApiResult<(StatusCode, Json<DbTaskView>)> {
    let db = state.store.get_database(&app, &env).await?;
    let b = env_backup(&state, &app, &env, &req.backup).await?;
    if req.confirm == req.to_new {
        return Err(ApiError::Unprocessable(
            "restoring into the environment's database replaces its data: pass --confirm (a safety backup is taken first), or --to-new to restore into a new database".into(),
        ));
    }
    if b.status != BackupStatus::Stored {
        return Err(ApiError::Unprocessable(format!(
            "backup {} is {}, so it cannot be restored",
            b.id, b.status
        )));
    }
    if req.confirm && b.verification == Verification::Failed {
        return Err(ApiError::Unprocessable(format!(
            "backup {} failed verification ({}); restore it with --to-new to inspect it",
            b.id,
            b.verification_error.as_deref().unwrap_or("unknown error")
        )));
    }
    backups::refuse_while_running(&state, &db, "restore once it has finished").await?;
    let t = backups::start_restore(&state, &db, &b, req.to_new).await.map_err(ApiError::Internal)?;
    tracing::info!(app = %app, env = %env, backup = %b.id, to_new = req.to_new, user = %caller.user, "restore requested");
    Ok((StatusCode::ACCEPTED, Json(t.view())))
}

async fn psql(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
    Json(req): Json<PsqlCommand>,
) -> ApiResult<(StatusCode, Json<DbTaskView>)> {
    let db = state.store.get_database(&app, &env).await?;
    if db.replicas == 0 && req.replica {
        return Err(ApiError::Unprocessable(format!("{app}/{env} has no replica")));
    }
    let t = backups::start_psql(&state, &db, req.replica, req.args, req.input)
        .await
        .map_err(ApiError::Internal)?;
    Ok((StatusCode::ACCEPTED, Json(t.view())))
}

async fn task(
    State(state): State<AppState>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> ApiResult<Json<DbTaskView>> {
    let t = state.store.get_db_task(&id).await?;
    if t.app != app || t.env != env {
        return Err(ApiError::NotFound(format!("{app}/{env} has no database task {id}")));
    }
    Ok(Json(t.view()))
}

#[derive(Deserialize)]
struct Since {
    #[serde(default)]
    since: i64,
}

async fn events(State(state): State<AppState>, Query(q): Query<Since>) -> ApiResult<Json<Vec<Event>>> {
    Ok(Json(state.store.events_since(q.since).await?))
}

/// Refuses a node that holds no unfinished task of one of `kinds` for backup `id`: only the
/// node dumping a backup uploads it, only one verifying or restoring it downloads it.
async fn check_backup_task(
    state: &AppState,
    caller: &NodeCaller,
    id: &str,
    kinds: &[DbTaskKind],
) -> ApiResult<()> {
    let tasks = state.store.open_tasks_for_backup(id, &caller.0).await?;
    match tasks.iter().any(|t| kinds.contains(&t.kind)) {
        true => Ok(()),
        false => Err(ApiError::Forbidden(format!(
            "node {:?} holds no {} task for backup {id}, so it cannot read or write that backup's data",
            caller.0,
            kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(" or ")
        ))),
    }
}

async fn upload(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    check_backup_task(&state, &caller, &id, &[DbTaskKind::Backup]).await?;
    let b = state.store.get_backup(&id).await?;
    if b.status != BackupStatus::Running {
        return Err(ApiError::Conflict(format!("backup {id} is {}, not running", b.status)));
    }
    let (size, sha) =
        state.backup_storage.receive(&b, body.into_data_stream()).await.map_err(ApiError::Internal)?;
    tracing::info!(app = %b.app, env = %b.env, backup = %id, size, "backup upload received");
    backups::upload_received(&state, b, size, &sha).await.map_err(ApiError::Internal)?;
    Ok(Json(json!({ "size_bytes": size, "sha256": sha })))
}

/// Streams a checked copy; a corrupt or truncated backup is refused with the reason.
async fn download(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    check_backup_task(&state, &caller, &id, &[DbTaskKind::Verify, DbTaskKind::Restore]).await?;
    let b = state.store.get_backup(&id).await?;
    let copy =
        state.backup_storage.checked_copy(&b).await.map_err(|e| ApiError::Unprocessable(format!("{e:#}")))?;
    let file = tokio::fs::File::open(&copy.path).await.map_err(|e| ApiError::Internal(e.into()))?;
    // The copy (maybe a temporary fetched from S3) lives as long as the stream.
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 16).map(move |chunk| {
        let _keep = &copy;
        chunk
    });
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from_stream(stream)))
}

async fn task_result(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
    Json(result): Json<DbTaskResult>,
) -> ApiResult<Json<Value>> {
    let t = state.store.get_db_task(&id).await?;
    caller.must_be(&t.node, format_args!("database task {id}"))?;
    tracing::info!(app = %t.app, env = %t.env, task = %id, ok = result.error.is_none(), "database task finished");
    backups::task_finished(&state, &t, &result).await.map_err(ApiError::Internal)?;
    Ok(Json(json!({ "ok": true })))
}

/// The agent is still working on a task (sent every few seconds while it runs); the answer says
/// whether the task is still open, or was given up.
async fn task_progress(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let t = state.store.get_db_task(&id).await?;
    caller.must_be(&t.node, format_args!("database task {id}"))?;
    let open = t.status.is_open();
    if open {
        state.task_progressed(&id);
    }
    Ok(Json(json!({ "open": open })))
}

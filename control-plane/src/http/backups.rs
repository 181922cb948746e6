//! Backups over HTTP. `/api/v1/apps/{app}/envs/{env}/db/...`: take, list, verify and restore
//! backups, import dumps, download their dumps, run psql, follow database tasks; `/api/v1/events`. `/agent/v1/...`: the agent's
//! dump upload and download, its progress signals and its task results.

use super::auth::{Caller, NodeCaller};
use super::error::ApiResult;
use super::routes::{Api, Need};
use crate::backups;
use crate::state::AppState;
use crate::store::ActivityFilter;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use protocol::access::Role::{Admin, Deployer, Viewer};
use protocol::agent::DbTaskResult;
use protocol::api::{Backup, DbTaskView, Event, PsqlCommand, RunOutput, StartRestore};
use serde::Deserialize;
use serde_json::{json, Value};

const DB: &str = "/apps/{app}/envs/{env}/db";

pub fn routes() -> Api {
    Api::new()
        .get(&format!("{DB}/backups"), Need::App(Viewer), list)
        .on(Method::POST, &format!("{DB}/backups"), Need::App(Deployer), "db.backup", create)
        .get(&format!("{DB}/backups/{{id}}"), Need::App(Viewer), show)
        // The dump is all of the app's data, which a viewer cannot otherwise read (psql and
        // revealed config need a deployer too).
        .get(&format!("{DB}/backups/{{id}}/data"), Need::App(Deployer), data)
        .on(Method::POST, &format!("{DB}/backups/{{id}}/verify"), Need::App(Deployer), "db.verify", verify)
        .on(Method::POST, &format!("{DB}/restores"), Need::App(Admin), "db.restore", restore)
        // The body is the dump (pg_dump -Fc), streamed.
        .on(Method::POST, &format!("{DB}/imports"), Need::App(Admin), "db.import", import)
        .on(Method::POST, &format!("{DB}/psql"), Need::App(Deployer), "db.psql", psql)
        // Joined like a run: `GET .../runs/{id}/attach`.
        .on(Method::POST, &format!("{DB}/psql/attach"), Need::App(Deployer), "db.psql", psql_attached)
        // A task's output is what `db psql` printed: query results.
        .get(&format!("{DB}/tasks/{{id}}"), Need::App(Deployer), task)
        .get("/events", Need::Signed, events)
}

pub fn agent_routes() -> Router<AppState> {
    Router::new()
        .route("/backups/{id}/data", axum::routing::put(upload).get(download))
        .route("/db-tasks/{id}/result", post(task_result))
        .route("/db-tasks/{id}/wal", axum::routing::get(task_wal))
        .route("/databases/{app}/{env}/wal/{system}/{name}", axum::routing::put(wal_upload))
        .route("/db-tasks/{id}/progress", post(task_progress))
}

#[derive(Deserialize)]
struct CreateQuery {
    /// A physical base backup for point-in-time recovery instead of a dump.
    #[serde(default)]
    base: bool,
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<CreateQuery>,
) -> ApiResult<(StatusCode, Json<Backup>)> {
    let db = state.store.get_database(&app, &env).await?;
    let trigger = protocol::api::BackupTrigger::Manual;
    let b = if q.base {
        backups::start_base_backup(&state, &db, trigger).await?
    } else {
        backups::start_backup(&state, &db, trigger).await?
    };
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
    Ok(Json(backups::env_backup(&state, &app, &env, &id).await?))
}

async fn verify(
    State(state): State<AppState>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> ApiResult<(StatusCode, Json<Backup>)> {
    Ok((StatusCode::ACCEPTED, Json(backups::verify(&state, &app, &env, &id).await?)))
}

async fn restore(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(req): Json<StartRestore>,
) -> ApiResult<(StatusCode, Json<DbTaskView>)> {
    let t = backups::restore(&state, &caller.user, &app, &env, &req).await?;
    Ok((StatusCode::ACCEPTED, Json(t.view())))
}

#[derive(Deserialize)]
struct ImportQuery {
    #[serde(default)]
    confirm: bool,
    #[serde(default)]
    to_new: bool,
}

async fn import(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<DbTaskView>)> {
    let body = body.into_data_stream();
    let t = backups::import(&state, &caller.user, &app, &env, q.to_new, q.confirm, body).await?;
    Ok((StatusCode::ACCEPTED, Json(t.view())))
}

async fn psql_attached(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(req): Json<PsqlCommand>,
) -> ApiResult<(StatusCode, Json<RunOutput>)> {
    let id = crate::attach::start_psql(&state, &caller.user, &app, &env, req.replica).await?;
    Ok((StatusCode::ACCEPTED, Json(RunOutput::started(id))))
}

async fn psql(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
    Json(req): Json<PsqlCommand>,
) -> ApiResult<(StatusCode, Json<DbTaskView>)> {
    Ok((StatusCode::ACCEPTED, Json(backups::psql(&state, &app, &env, req).await?.view())))
}

async fn task(
    State(state): State<AppState>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> ApiResult<Json<DbTaskView>> {
    Ok(Json(backups::env_task(&state, &app, &env, &id).await?.view()))
}

#[derive(Deserialize)]
struct EventsQuery {
    /// Only events after this id (oldest first), for polling.
    since: Option<i64>,
    app: Option<String>,
    env: Option<String>,
    n: Option<u32>,
}

/// The activity feed of the apps the caller can see.
async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Vec<Event>>> {
    let filter = ActivityFilter {
        after: q.since,
        app: q.app,
        env: q.env,
        visible: caller.visible_apps(),
        limit: q.n.unwrap_or(100).clamp(1, 1000),
    };
    Ok(Json(state.store.activity(&filter).await?))
}

async fn upload(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let (size, sha) = backups::receive(&state, &caller.0, &id, body.into_data_stream()).await?;
    Ok(Json(json!({ "size_bytes": size, "sha256": sha })))
}

/// One archived WAL file from the node running the primary.
async fn wal_upload(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path((app, env, system, name)): Path<(String, String, String, String)>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let body = body.into_data_stream();
    let seg = backups::receive_wal(&state, &caller.0, &app, &env, &system, &name, body).await?;
    Ok(Json(json!({ "size_bytes": seg.size_bytes, "sha256": seg.sha256 })))
}

/// The archived WAL a recover task replays, as a tar stream.
async fn task_wal(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let body = backups::wal_for_task(&state, &caller.0, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], body))
}

/// Streams a checked copy; a corrupt or truncated backup is refused with the reason.
async fn download(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let copy = backups::checked_copy(&state, &caller.0, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], stream(copy).await?))
}

/// A user's download of a backup's dump: a checked copy, streamed; the client checks what it
/// wrote against the backup's recorded size and SHA-256.
async fn data(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env, id)): Path<(String, String, String)>,
) -> ApiResult<impl IntoResponse> {
    let (b, copy) = backups::download(&state, &caller, &app, &env, &id).await?;
    let length = b.size_bytes.unwrap_or(0).to_string();
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_LENGTH, length)],
        stream(copy).await?,
    ))
}

/// The copy's bytes as a body that is read as it is sent, never whole; the copy (maybe a
/// temporary fetched from S3) lives as long as the stream.
async fn stream(copy: crate::backups::CheckedCopy) -> ApiResult<Body> {
    let file = tokio::fs::File::open(&copy.path).await.map_err(anyhow::Error::from)?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 16).map(move |chunk| {
        let _keep = &copy;
        chunk
    });
    Ok(Body::from_stream(stream))
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
    backups::task_finished(&state, &t, &result).await?;
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

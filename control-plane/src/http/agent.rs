//! `/agent/v1`, on the agent listener: the CA certificate and joining (open to a client without
//! a certificate; joining takes a one-time join token), certificate renewal, registration, the
//! long-polled assignment watch, status reports, shipped log lines, the build hand-off
//! (source download, build output, result) and images travelling between nodes. Every route but the first two takes a [`NodeCaller`] and serves only the
//! node its request concerns.

use super::auth::NodeCaller;
use super::error::{ApiError, ApiResult};
use super::server::PeerCertificate;
use crate::assign;
use crate::error::DomainError;
use crate::identity::{self, JoinError};
use crate::state::AppState;
use crate::store::{JobKind, JobRow};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use protocol::agent::{
    BuildLog, BuildResult, JobLog, JobResult, NodeReport, RegisterNode, RegisteredNode, WatchResponse,
};
use protocol::logs::{LogAck, LogBatchRef};
use protocol::tls::{JoinRequest, KeyProof, NodeCertificate};
use protocol::{AppName, EnvName};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ca", get(ca))
        .route("/join", post(join))
        .route("/nodes", post(register))
        .route("/nodes/{node}/certificate", post(renew))
        .route("/nodes/{node}/watch", get(watch))
        .route("/nodes/{node}/report", post(report))
        .route("/nodes/{node}/logs", post(ship_logs))
        .route("/nodes/{node}/metrics", post(metrics_sample))
        .route("/builds/{app}/{env}/{release}/source", get(source))
        .route("/builds/{app}/{env}/{release}/log", post(build_log))
        .route("/builds/{app}/{env}/{release}/result", post(build_result))
        .route("/images/{id}", axum::routing::put(image_upload).get(image_download))
        .route("/images/{id}/pushed", axum::routing::post(image_pushed))
        .route("/jobs/{id}/log", post(job_log))
        .route("/jobs/{id}/result", post(job_result))
        .route("/jobs/{id}/attach", get(super::attach::agent))
}

/// The CA certificate, for an agent to check against the hash in its join token.
async fn ca(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/x-pem-file")], state.ca.pem().to_string())
}

/// A new node joins with a one-time join token (bearer) and the public key it made; the answer
/// is its certificate.
async fn join(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<JoinRequest>,
) -> ApiResult<Json<NodeCertificate>> {
    let secret = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let (name, addr) = (req.node.name.clone(), req.node.private_addr.clone());
    match identity::join(&state, secret, req).await {
        Ok(cert) => Ok(Json(cert)),
        Err(e) => {
            tracing::warn!(node = %name, addr = %addr, error = ?e, "join refused");
            Err(match e {
                JoinError::Token(why) => ApiError::Unauthorized(why),
                JoinError::Domain(e) => e.into(),
            })
        }
    }
}

/// A node with a certificate registers again (its address or ingress role may have changed).
async fn register(
    State(state): State<AppState>,
    caller: NodeCaller,
    Json(mut node): Json<RegisterNode>,
) -> ApiResult<Json<RegisteredNode>> {
    identity::check_registration(&mut node)?;
    let before = state.store.node(&node.name).await.ok();
    state.store.register_node(&node.name, &node.private_addr, node.ingress, &caller.0).await.inspect_err(|e| {
        tracing::warn!(node = %node.name, addr = %node.private_addr, by = %caller.0, error = %e, "node registration refused");
    })?;
    state.store.set_node_capacity(&node.name, node.capacity).await?;
    tracing::info!(node = %node.name, addr = %node.private_addr, ingress = node.ingress, protocol = node.protocol, "node registered");
    crate::nodes::registered(&state, before, &node).await?;
    Ok(Json(RegisteredNode { name: node.name }))
}

/// A node renews its certificate, for a new key, over its current one.
async fn renew(
    State(state): State<AppState>,
    caller: NodeCaller,
    Extension(PeerCertificate(current)): Extension<PeerCertificate>,
    Path(node): Path<String>,
    Json(proof): Json<KeyProof>,
) -> ApiResult<Json<NodeCertificate>> {
    caller.must_be(&node, format_args!("the certificate of node {node:?}"))?;
    Ok(Json(identity::renew(&state, &node, &current, &proof).await?))
}

#[derive(Deserialize)]
struct WatchQuery {
    #[serde(default)]
    index: u64,
    #[serde(default)]
    wait: u64,
}

/// Blocking query: answers at once when the state index is past `index` (or the agent's index
/// is from another run of the control plane), otherwise when the node's assignment changes or
/// `wait` runs out.
async fn watch(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(node): Path<String>,
    Query(q): Query<WatchQuery>,
) -> ApiResult<Json<WatchResponse>> {
    caller.must_be(&node, format_args!("the assignment of node {node:?}"))?;
    crate::nodes::seen(&state, &node).await?;
    // The agent asks to watch past `index` only after applying it.
    state.applied.raise(&node, q.index);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(120));
    let mut applied = q.index;
    // Read once per request, not per wake: a node's role changes only when it registers again.
    let routes = state.store.node(&node).await?.ingress;
    loop {
        if applied != 0 && applied <= state.index() {
            let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
            state.wait_past_for(&node, applied, wait, routes).await;
        }
        let index = state.index();
        // A worker node needs a view holding the changes that concern it, not those since for
        // other nodes (a report, another deploy): the last view read serves most wakes. A
        // node's first watch takes a current one.
        let needed = if routes || applied == 0 { index } else { state.last_for(&node).min(index) };
        let view = state.watches.view(&state, needed).await?;
        let assignment = assign::assignment_in(&state, &node, &view).await?;
        // A change this node's assignment does not show (another node's replica, an app it
        // runs nothing of) is not sent: it already runs exactly this.
        let waiting = tokio::time::Instant::now() < deadline;
        if waiting && applied != 0 && state.watches.unchanged(&node, applied, index, &assignment) {
            state.applied.raise(&node, index);
            applied = index;
            continue;
        }
        state.watches.sent(&node, index, &assignment);
        return Ok(Json(WatchResponse { index, assignment }));
    }
}

async fn report(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(node): Path<String>,
    Json(report): Json<NodeReport>,
) -> ApiResult<Json<Value>> {
    caller.must_be(&node, format_args!("the reports of node {node:?}"))?;
    crate::nodes::seen(&state, &node).await?;
    let digest = crate::assign_view::digest(&(report.generation, &report.containers));
    if !crate::nodes::heard_again(&state, &node, digest) {
        let placements = state.store.placements(&node);
        let current = crate::nodes::reported(&state, &node, report.generation).await?;
        if current {
            let changed = state.store.apply_report(&node, &report.containers).await?;
            if !changed.is_empty() {
                state.bump_envs(&changed);
            }
        }
        if current {
            crate::nodes::report_counted(&state, &node, digest, placements);
        }
    }
    // After the store has it, so whoever waits on the observation reads it from the store.
    state.observed.raise(&node, report.observed_at_ms);
    state.node_static_ready(&node, report.static_ready);
    state.upkeep.reported(&node, report.disk, report.pruned);
    state.upkeep.reported_purges(&node, report.purged);
    let (servers, volumes) = (report.databases, report.volumes);
    crate::databases::observed(&state, &node, servers, volumes, report.assignment_index).await?;
    Ok(Json(json!({ "ok": true })))
}

/// A node ships a batch of log lines; the answer says how far its lines are stored.
async fn ship_logs(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(node): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<LogAck>> {
    caller.must_be(&node, format_args!("the logs of node {node:?}"))?;
    // Read borrowing the body: a batch holds thousands of lines.
    let batch: LogBatchRef<'_> = serde_json::from_slice(&body)
        .map_err(|e| DomainError::Invalid(format!("the log batch is not valid JSON of a batch: {e}")))?;
    Ok(Json(crate::logs::ship(&state, &node, &batch).await?))
}

async fn metrics_sample(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(node): Path<String>,
    Json(sample): Json<protocol::metrics::NodeSample>,
) -> ApiResult<Json<Value>> {
    caller.must_be(&node, format_args!("the metrics of node {node:?}"))?;
    crate::metrics::record(&state, &node, sample).await?;
    Ok(Json(json!({ "ok": true })))
}

/// Checks that `caller` builds release `release` of `app`/`env`, whose names are validated first
/// (they become a path under the sources directory).
async fn check_builder(
    state: &AppState,
    caller: &NodeCaller,
    app: &str,
    env: &str,
    release: u32,
) -> ApiResult<(AppName, EnvName)> {
    let (app, env) = (AppName::new(app)?, EnvName::new(env)?);
    let Some(node) = state.store.build_node(app.as_str(), env.as_str(), release).await? else {
        return Err(DomainError::NotFound(format!("{app}/{env} v{release} is not built from source")).into());
    };
    caller.must_be(&node, format_args!("the build of {app}/{env} v{release}"))?;
    Ok((app, env))
}

async fn source(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path((app, env, release)): Path<(String, String, u32)>,
) -> ApiResult<impl IntoResponse> {
    let (app, env) = check_builder(&state, &caller, &app, &env, release).await?;
    let file = crate::releases::source_bundle(&state, app.as_str(), env.as_str(), release).await?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok(([(header::CONTENT_TYPE, "application/gzip")], body))
}

async fn build_log(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path((app, env, release)): Path<(String, String, u32)>,
    Json(log): Json<BuildLog>,
) -> ApiResult<Json<Value>> {
    check_builder(&state, &caller, &app, &env, release).await?;
    state.deploy_event(&app, &env, release, "build", &log.lines).await;
    Ok(Json(json!({ "ok": true })))
}

async fn build_result(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path((app, env, release)): Path<(String, String, u32)>,
    Json(result): Json<BuildResult>,
) -> ApiResult<Json<Value>> {
    check_builder(&state, &caller, &app, &env, release).await?;
    let error = match (&result.image_id, &result.error) {
        (_, Some(e)) => Some(e.as_str()),
        (Some(_), None) => None,
        (None, None) => Some("the build finished without an image"),
    };
    state.store.set_build_result(&app, &env, release, result.image_id.as_deref(), error).await?;
    tracing::info!(app = %app, env = %env, release, ok = error.is_none(), "build finished");
    // The builder's assignment loses the build; the deploy waits on its environment.
    state.bump_nodes(std::slice::from_ref(&caller.0), &[(app, env)]);
    Ok(Json(json!({ "ok": true })))
}

/// A node sends an image the control plane asked for (`Assignment::send_images`).
async fn image_upload(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let received = crate::images::receive(&state, &caller.0, &id, body.into_data_stream()).await?;
    let stored = matches!(received, crate::images::Received::Stored { .. });
    Ok(Json(json!({ "stored": stored })))
}

/// A node pushed an image the control plane asked for to the platform's registry.
async fn image_pushed(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    crate::images::pushed(&state, &caller.0, &id).await?;
    Ok(Json(json!({ "ok": true })))
}

/// A node fetches an image it must run and lacks.
async fn image_download(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let (file, size) = crate::images::send(&state, &caller.0, &id).await?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 16));
    let headers =
        [(header::CONTENT_TYPE, "application/x-tar".to_string()), (header::CONTENT_LENGTH, size.to_string())];
    Ok((headers, body))
}

async fn job_log(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
    Json(log): Json<JobLog>,
) -> ApiResult<Json<Value>> {
    let job = state.store.get_job(&id).await?;
    caller.must_be(&job.node, format_args!("job {id}"))?;
    state.store.append_job_output(&id, &log.lines).await?;
    // A release phase's output is part of its deploy's progress.
    if job.kind == JobKind::Release {
        state.deploy_event(&job.app, &job.env, job.release, "release", &log.lines).await;
    }
    state.events_changed();
    Ok(Json(json!({ "ok": true })))
}

async fn job_result(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
    Json(result): Json<JobResult>,
) -> ApiResult<Json<Value>> {
    let job = state.store.get_job(&id).await?;
    caller.must_be(&job.node, format_args!("job {id}"))?;
    state.store.finish_job(&id, result.exit_code, result.error.as_deref()).await?;
    state.attach.forget(&id);
    tracing::info!(app = %job.app, env = %job.env, release = job.release, job = %id, exit_code = ?result.exit_code, "job finished");
    if job.kind == JobKind::Cron && !job.done() {
        let ended = JobRow { exit_code: result.exit_code, error: result.error.clone(), ..job };
        crate::scheduled::finished(&state, &ended).await;
    }
    state.bump();
    state.events_changed();
    Ok(Json(json!({ "ok": true })))
}

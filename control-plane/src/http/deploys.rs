//! `/api/v1/apps/{app}/envs/{env}/...`: deploys (source upload or image), releases, deploy
//! progress and the processes that run.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::NewRelease;
use crate::{assign, deploy, source};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use protocol::api::{DeployEvents, DeployImage, Process, Release};
use protocol::manifest;
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Largest source bundle accepted; a bigger one almost always means a missing `.dockerignore`.
const MAX_SOURCE_BYTES: u64 = 512 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{app}/envs/{env}/deploys", post(create))
        .route("/apps/{app}/envs/{env}/releases", get(releases))
        .route("/apps/{app}/envs/{env}/releases/{version}/events", get(events))
        .route("/apps/{app}/envs/{env}/processes", get(processes))
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    req: Request,
) -> ApiResult<(StatusCode, Json<Release>)> {
    let env_row = state.store.get_env(&app, &env).await?;
    let (config, config_keys) = state.config_snapshot(&env_row)?;
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let node = assign::build_node(&state).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let new = |source: &str, manifest, manifest_text, description: String| NewRelease {
        source: source.to_string(),
        created_by: caller.user.clone(),
        build_node: node.clone(),
        manifest,
        manifest_text,
        description,
        image_id: None,
        config: config.clone(),
        config_keys: config_keys.clone(),
    };
    let release = if content_type.starts_with("application/json") {
        let bytes = axum::body::to_bytes(req.into_body(), 256 * 1024)
            .await
            .map_err(|e| ApiError::BadRequest(format!("reading the request failed: {e}")))?;
        let body: DeployImage = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("invalid deploy request: {e}")))?;
        let image = body.image.trim();
        if image.is_empty() || image.chars().any(char::is_whitespace) || image == "build" {
            return Err(ApiError::Unprocessable(format!("{image:?} is not an image reference")));
        }
        let text = body.paas_toml.unwrap_or_default();
        let manifest = manifest::parse(&text, &env).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        let n = new(image, manifest, text, format!("Deploy of image {image}"));
        state.store.create_release(&app, &env, &n).await?
    } else if content_type.starts_with("application/gzip") {
        // Stream the upload to disk first so a broken upload never creates a release.
        let dir = state.sources_dir().join(&app).join(&env);
        tokio::fs::create_dir_all(&dir).await.map_err(anyhow::Error::from)?;
        let tmp = dir.join(format!("upload-{}.tmp", rand_suffix()));
        if let Err(e) = save_upload(req.into_body(), &tmp).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let (path, env_name) = (tmp.clone(), env.clone());
        let parsed = tokio::task::spawn_blocking(move || source::manifest_from_bundle(&path, &env_name))
            .await
            .map_err(anyhow::Error::from)?;
        let (manifest, text) = match parsed {
            Ok(m) => m,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(ApiError::Unprocessable(e.to_string()));
            }
        };
        let n = new("build", manifest, text, "Deploy of a source upload".into());
        match state.store.create_release(&app, &env, &n).await {
            Ok(r) => {
                tokio::fs::rename(&tmp, dir.join(format!("{}.tar.gz", r.version)))
                    .await
                    .map_err(anyhow::Error::from)?;
                r
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e.into());
            }
        }
    } else {
        return Err(ApiError::BadRequest(
            "send the source as application/gzip (a tar.gz) or an image as application/json".into(),
        ));
    };
    tracing::info!(app = %app, env = %env, release = release.version, user = %caller.user, source = %release.source, "deploy started");
    state
        .deploy_event(
            &app,
            &env,
            release.version,
            "stage",
            &[format!("Release v{} created", release.version)],
        )
        .await;
    state.bump();
    deploy::spawn(state.clone(), release.clone());
    Ok((StatusCode::ACCEPTED, Json(release)))
}

fn rand_suffix() -> String {
    use rand::Rng;
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

async fn save_upload(body: Body, path: &std::path::Path) -> ApiResult<()> {
    let mut file = tokio::fs::File::create(path).await.map_err(anyhow::Error::from)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("the upload was interrupted: {e}")))?;
        total += chunk.len() as u64;
        if total > MAX_SOURCE_BYTES {
            return Err(ApiError::Unprocessable(format!(
                "the source bundle is larger than {} MiB; add a .dockerignore",
                MAX_SOURCE_BYTES >> 20
            )));
        }
        file.write_all(&chunk).await.map_err(anyhow::Error::from)?;
    }
    if total == 0 {
        return Err(ApiError::BadRequest("the source upload is empty".into()));
    }
    file.flush().await.map_err(anyhow::Error::from)?;
    Ok(())
}

async fn releases(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Release>>> {
    state.store.get_env(&app, &env).await?;
    Ok(Json(state.store.list_releases(&app, &env).await?))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait: u64,
}

/// Deploy progress after `after`; waits up to `wait` seconds (max 60) when there is nothing new
/// and the release is unfinished.
async fn events(
    State(state): State<AppState>,
    Path((app, env, version)): Path<(String, String, u32)>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<DeployEvents>> {
    let wait = Duration::from_secs(q.wait.min(60));
    let mut rx = state.subscribe_events();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let release = state.store.get_release(&app, &env, version).await?;
        let events = state.store.events_after(&app, &env, version, q.after).await?;
        let done = release.status.is_finished();
        if !events.is_empty() || done || tokio::time::Instant::now() >= deadline {
            let next = events.last().map(|e| e.seq).unwrap_or(q.after);
            return Ok(Json(DeployEvents { events, next, release, url: state.url_for(&app, &env) }));
        }
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
    }
}

async fn processes(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Process>>> {
    state.store.get_env(&app, &env).await?;
    let nodes: HashMap<String, String> =
        state.store.list_nodes().await?.into_iter().map(|n| (n.name, n.private_addr)).collect();
    let mut manifests = HashMap::new();
    let mut out = Vec::new();
    for i in state.store.instances_for_env(&app, &env).await? {
        if let std::collections::hash_map::Entry::Vacant(e) = manifests.entry(i.release) {
            e.insert(state.store.get_release(&app, &env, i.release).await?.manifest);
        }
        let mut p = i.to_process(nodes.get(&i.node).map(String::as_str));
        p.limits = manifests[&i.release].processes.get(&i.process).map(|p| p.limits);
        out.push(p);
    }
    Ok(Json(out))
}

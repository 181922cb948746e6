//! `/api/v1/apps/{app}/envs/{env}/...`: deploys (source upload or image), releases, deploy
//! progress and the processes that run.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::routes::{Api, Need};
use crate::state::AppState;
use crate::{apps, releases};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::Method;
use axum::http::{header, StatusCode};
use axum::{Extension, Json};
use futures_util::StreamExt;
use protocol::access::Role::{Deployer, Viewer};
use protocol::api::{DeployEvents, DeployImage, Process, Release};
use tokio::io::AsyncWriteExt;

use protocol::api::MAX_SOURCE_BYTES;

pub fn routes() -> Api {
    Api::new()
        .on(Method::POST, "/apps/{app}/envs/{env}/deploys", Need::App(Deployer), "deploy", create)
        .get("/apps/{app}/envs/{env}/releases", Need::App(Viewer), releases)
        .get("/apps/{app}/envs/{env}/releases/{version}/events", Need::App(Viewer), events)
        .get("/apps/{app}/envs/{env}/processes", Need::App(Viewer), processes)
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    req: Request,
) -> ApiResult<(StatusCode, Json<Release>)> {
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let release = if content_type.starts_with("application/json") {
        let bytes = axum::body::to_bytes(req.into_body(), 256 * 1024)
            .await
            .map_err(|e| ApiError::BadRequest(format!("reading the request failed: {e}")))?;
        let body: DeployImage = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("invalid deploy request: {e}")))?;
        releases::deploy_image(&state, &caller.user, &app, &env, &body.image, body.paas_toml).await?
    } else if content_type.starts_with("application/gzip") {
        state.store.get_env(&app, &env).await?;
        // Streamed to disk first, so a broken upload never creates a release.
        let dir = state.sources_dir().join(&app).join(&env);
        tokio::fs::create_dir_all(&dir).await.map_err(anyhow::Error::from)?;
        let tmp = dir.join(format!("upload-{:016x}.tmp", rand::random::<u64>()));
        if let Err(e) = save_upload(req.into_body(), &tmp).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        releases::deploy_upload(&state, &caller.user, &app, &env, &tmp).await?
    } else {
        return Err(ApiError::BadRequest(
            "send the source as application/gzip (a tar.gz) or an image as application/json".into(),
        ));
    };
    Ok((StatusCode::ACCEPTED, Json(release)))
}

async fn save_upload(body: Body, path: &std::path::Path) -> ApiResult<()> {
    let mut file = tokio::fs::File::create(path).await.map_err(anyhow::Error::from)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("the upload was interrupted: {e}")))?;
        total += chunk.len() as u64;
        if total > MAX_SOURCE_BYTES {
            let mib = MAX_SOURCE_BYTES >> 20;
            let why = format!("the source bundle is larger than {mib} MiB; add a .dockerignore");
            return Err(crate::error::DomainError::Invalid(why).into());
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

/// Deploy progress after `after`; waits up to `wait` seconds (max 60).
async fn events(
    State(state): State<AppState>,
    Path((app, env, version)): Path<(String, String, u32)>,
    Query(q): Query<super::Poll>,
) -> ApiResult<Json<DeployEvents>> {
    Ok(Json(releases::events(&state, &app, &env, version, q.after, q.wait()).await?))
}

async fn processes(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Process>>> {
    Ok(Json(apps::processes(&state, &app, &env).await?))
}

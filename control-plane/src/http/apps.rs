//! `/api/v1/apps`: create, list, show and delete apps.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use protocol::api::{App, CreateApp, EnvSummary, WhoAmI};
use protocol::AppName;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/apps", get(list).post(create))
        .route("/apps/{app}", get(show).delete(delete))
}

async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI { user: caller.user, server_version: env!("CARGO_PKG_VERSION").to_string() })
}

pub(super) async fn app_view(state: &AppState, name: &str, created_at: String) -> ApiResult<App> {
    let mut envs = Vec::new();
    for e in state.store.list_envs(name).await? {
        let instances = state.store.instances_for_env(name, &e.name).await?;
        let healthy = instances
            .iter()
            .filter(|i| Some(i.release) == e.current_release && i.process == "web" && i.healthy)
            .count() as u32;
        let replicas = match e.current_release {
            Some(v) => e.replicas(&state.store.get_release(name, &e.name, v).await?.manifest, "web"),
            None => e.formation.get("web").copied().unwrap_or(1),
        };
        let status = if e.target_release.is_some() {
            "deploying"
        } else if e.current_release.is_none() {
            "idle"
        } else if healthy < replicas {
            "degraded"
        } else {
            "running"
        };
        envs.push(EnvSummary {
            hostname: protocol::hostname(name, &e.name, &state.config.base_domain),
            url: state.url_for(name, &e.name),
            current_release: e.current_release,
            target_release: e.target_release,
            status: status.to_string(),
            replicas,
            healthy_replicas: healthy,
            name: e.name,
        });
    }
    Ok(App { name: name.to_string(), created_at, envs })
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<App>>> {
    let mut out = Vec::new();
    for (name, created) in state.store.list_apps().await? {
        out.push(app_view(&state, &name, created).await?);
    }
    Ok(Json(out))
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<CreateApp>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<App>)> {
    let Json(body) =
        body.map_err(|e| ApiError::BadRequest(format!("invalid request body: {}", e.body_text())))?;
    let name = AppName::new(body.name)?;
    let created = state.store.create_app(name.as_str()).await?;
    tracing::info!(app = %name, user = %caller.user, "app created");
    state.bump();
    Ok((StatusCode::CREATED, Json(app_view(&state, name.as_str(), created).await?)))
}

async fn show(State(state): State<AppState>, Path(app): Path<String>) -> ApiResult<Json<App>> {
    let (name, created) = state.store.get_app(&app).await?;
    Ok(Json(app_view(&state, &name, created).await?))
}

async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    state.store.delete_app(&app).await?;
    let _ = std::fs::remove_dir_all(state.sources_dir().join(&app));
    tracing::info!(app = %app, user = %caller.user, "app deleted");
    state.bump();
    Ok(Json(serde_json::json!({ "deleted": app })))
}

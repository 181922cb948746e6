//! `/api/v1/apps`: create, list, show and delete apps.

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::routes::{Api, AuditNote, Need};
use crate::apps;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::{Extension, Json};
use protocol::access::Role::{Admin, Viewer};
use protocol::api::{App, AppDeleted, CreateApp, WhoAmI};

pub fn routes() -> Api {
    Api::new()
        .get("/whoami", Need::Signed, whoami)
        .get("/apps", Need::Signed, list)
        .on(Method::POST, "/apps", Need::Platform, "app.create", create)
        .get("/apps/{app}", Need::App(Viewer), show)
        .on(Method::DELETE, "/apps/{app}", Need::App(Admin), "app.delete", delete)
}

async fn whoami(Extension(caller): Extension<Caller>) -> Json<WhoAmI> {
    Json(WhoAmI {
        user: caller.user,
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        grants: caller.grants,
    })
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<App>>> {
    Ok(Json(apps::list(&state, &caller).await?))
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<CreateApp>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<App>)> {
    let Json(body) =
        body.map_err(|e| ApiError::BadRequest(format!("invalid request body: {}", e.body_text())))?;
    Ok((StatusCode::CREATED, Json(apps::create(&state, &caller.user, body.name).await?)))
}

async fn show(State(state): State<AppState>, Path(app): Path<String>) -> ApiResult<Json<App>> {
    Ok(Json(apps::view(&state, &app).await?))
}

/// `?purge=true` removes the app's database volumes, networks and images too;
/// `&purge_backups=true` its backups.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Purge {
    purge: bool,
    purge_backups: bool,
}

async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    Query(q): Query<Purge>,
) -> ApiResult<(Extension<AuditNote>, Json<AppDeleted>)> {
    let done = apps::delete(&state, &caller.user, &app, q.purge, q.purge_backups).await?;
    let what = match (q.purge, q.purge_backups) {
        (false, _) => "Deleted (database volumes, images and backups kept)",
        (true, false) => "Deleted with --purge (database volumes, networks, images; backups kept)",
        (true, true) => "Deleted with --purge --purge-backups (database volumes, networks, images, backups)",
    };
    Ok((Extension(AuditNote(what.into())), Json(done)))
}

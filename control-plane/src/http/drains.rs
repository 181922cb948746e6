//! `/api/v1/apps/{app}/drains`: an app's log drains. Listing shows URLs masked; adding and
//! removing need the deployer role. Removing by URL takes it in the body, so it stays out of
//! paths, access logs and the audit log.

use super::auth::Caller;
use super::error::ApiResult;
use super::routes::{Api, Need};
use crate::drains;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::{Extension, Json};
use protocol::access::Role::{Deployer, Viewer};
use protocol::drains::{AddDrain, Drain, RemoveDrain};

pub fn routes() -> Api {
    Api::new()
        .get("/apps/{app}/drains", Need::App(Viewer), list)
        .on(Method::POST, "/apps/{app}/drains", Need::App(Deployer), "drain.add", add)
        .on(Method::DELETE, "/apps/{app}/drains", Need::App(Deployer), "drain.remove", remove_by_url)
        .on(Method::DELETE, "/apps/{app}/drains/{id}", Need::App(Deployer), "drain.remove", remove)
}

async fn list(State(state): State<AppState>, Path(app): Path<String>) -> ApiResult<Json<Vec<Drain>>> {
    Ok(Json(drains::list(&state, &app).await?))
}

async fn add(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    Json(body): Json<AddDrain>,
) -> ApiResult<(StatusCode, Json<Drain>)> {
    Ok((StatusCode::CREATED, Json(drains::add(&state, &caller.user, &app, body).await?)))
}

async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, id)): Path<(String, String)>,
) -> ApiResult<Json<Drain>> {
    Ok(Json(drains::remove(&state, &caller.user, &app, Some(&id), None).await?))
}

async fn remove_by_url(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    Json(body): Json<RemoveDrain>,
) -> ApiResult<Json<Drain>> {
    Ok(Json(drains::remove(&state, &caller.user, &app, None, Some(&body.url)).await?))
}

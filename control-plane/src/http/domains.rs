//! `/api/v1/apps/{app}/domains`: an app's custom domains. Listing needs the viewer role; adding
//! and removing, the deployer role (they change what the ingress serves).

use super::auth::Caller;
use super::error::ApiResult;
use super::routes::{Api, Need};
use crate::edge::domains;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::{Extension, Json};
use protocol::access::Role::{Deployer, Viewer};
use protocol::domains::{AddDomain, Domain};

pub fn routes() -> Api {
    Api::new()
        .get("/apps/{app}/domains", Need::App(Viewer), list)
        .on(Method::POST, "/apps/{app}/domains", Need::App(Deployer), "domain.add", add)
        .on(Method::DELETE, "/apps/{app}/domains/{domain}", Need::App(Deployer), "domain.remove", remove)
}

async fn list(State(state): State<AppState>, Path(app): Path<String>) -> ApiResult<Json<Vec<Domain>>> {
    Ok(Json(domains::list(&state, &app).await?))
}

async fn add(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    Json(body): Json<AddDomain>,
) -> ApiResult<(StatusCode, Json<Domain>)> {
    Ok((StatusCode::CREATED, Json(domains::add(&state, &caller.user, &app, body).await?)))
}

async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, domain)): Path<(String, String)>,
) -> ApiResult<Json<Domain>> {
    Ok(Json(domains::remove(&state, &caller.user, &app, &domain).await?))
}

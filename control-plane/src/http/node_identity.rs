//! `/api/v1/nodes/tokens` and `DELETE /api/v1/nodes/{node}`: the admin's side of node
//! identity, a one-time join token for a new node and removing a node (its certificates stop
//! working on its next request).

use super::auth::Caller;
use super::error::ApiResult;
use super::routes::{Api, Need};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::{Extension, Json};
use protocol::tls::{CreateJoinToken, JoinTokenCreated};
use serde_json::{json, Value};
use std::time::Duration;

pub fn routes() -> Api {
    Api::new().on(Method::POST, "/nodes/tokens", Need::Platform, "node.token", create_token).on(
        Method::DELETE,
        "/nodes/{node}",
        Need::Platform,
        "node.remove",
        remove,
    )
}

async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<CreateJoinToken>,
) -> ApiResult<Json<JoinTokenCreated>> {
    let ttl = Duration::from_secs(req.ttl_secs);
    Ok(Json(crate::identity::create_join_token(&state, &caller.user, ttl).await?))
}

async fn remove(State(state): State<AppState>, Path(node): Path<String>) -> ApiResult<Json<Value>> {
    crate::identity::remove_node(&state, &node).await?;
    Ok(Json(json!({ "removed": node })))
}

//! `/api/v1/nodes`: the machines running a node agent, and prunes asked of them.

use super::error::ApiResult;
use super::routes::{Api, Need};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::Json;
use protocol::api::{Node, NodeDrain};

pub fn routes() -> Api {
    Api::new()
        .get("/nodes", Need::Platform, list)
        .on(Method::POST, "/nodes/{node}/prune", Need::Platform, "node.prune", prune)
        .on(Method::POST, "/nodes/{node}/drain", Need::Platform, "node.drain", drain)
        .on(Method::POST, "/nodes/{node}/undrain", Need::Platform, "node.undrain", undrain)
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Node>>> {
    Ok(Json(crate::nodes::views(&state).await?))
}

/// Moves the node's replicas away and answers once none is left there.
async fn drain(State(state): State<AppState>, Path(node): Path<String>) -> ApiResult<Json<NodeDrain>> {
    Ok(Json(crate::nodes::drain(&state, &node).await?))
}

async fn undrain(
    State(state): State<AppState>,
    Path(node): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    crate::nodes::undrain(&state, &node).await?;
    Ok(Json(serde_json::json!({ "ok": true })))
}

/// Asks a ready node to prune now and answers what it removed.
async fn prune(
    State(state): State<AppState>,
    Path(node): Path<String>,
) -> ApiResult<Json<protocol::agent::PruneOutcome>> {
    Ok(Json(crate::upkeep::prune(&state, &node).await?))
}

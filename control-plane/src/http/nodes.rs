//! `/api/v1/nodes`: the machines running a node agent, and prunes asked of them.

use super::error::{ApiError, ApiResult};
use crate::assign::node_is_ready;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::api::Node;

pub fn routes() -> Router<AppState> {
    Router::new().route("/nodes", get(list)).route("/nodes/{node}/prune", post(prune))
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Node>>> {
    let nodes = state.store.list_nodes().await?;
    Ok(Json(
        nodes
            .into_iter()
            .map(|n| Node {
                status: if node_is_ready(&n) { "ready" } else { "down" }.to_string(),
                disk: state.upkeep.disk(&n.name),
                name: n.name,
                private_addr: n.private_addr,
                ingress: n.ingress,
                last_seen: n.last_seen,
            })
            .collect(),
    ))
}

/// Asks a ready node to prune now and answers what it removed. The agent waits for builds
/// running there to end first, so this can take as long as a build.
async fn prune(
    State(state): State<AppState>,
    Path(node): Path<String>,
) -> ApiResult<Json<protocol::agent::PruneOutcome>> {
    let nodes = state.store.list_nodes().await?;
    let row = nodes
        .iter()
        .find(|n| n.name == node)
        .ok_or_else(|| ApiError::NotFound(format!("no node {node:?}")))?;
    if !node_is_ready(row) {
        return Err(ApiError::Unavailable(format!(
            "node {node} is down; it can prune once its agent is back"
        )));
    }
    let id = state.upkeep.request_prune(&node);
    state.bump();
    let wait = std::time::Duration::from_secs(600);
    match state.upkeep.wait_pruned(&node, id, wait).await {
        Some(outcome) => match outcome.error {
            Some(e) => Err(ApiError::Unavailable(format!("node {node} could not prune: {e}"))),
            None => Ok(Json(outcome)),
        },
        None => Err(ApiError::Unavailable(format!("node {node} did not prune within ten minutes"))),
    }
}

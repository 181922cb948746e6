//! `/api/v1/nodes`: the machines running a node agent.

use super::error::ApiResult;
use crate::assign::node_is_ready;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use protocol::api::Node;

pub fn routes() -> Router<AppState> {
    Router::new().route("/nodes", get(list))
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Node>>> {
    let nodes = state.store.list_nodes().await?;
    Ok(Json(
        nodes
            .into_iter()
            .map(|n| Node {
                status: if node_is_ready(&n) { "ready" } else { "down" }.to_string(),
                name: n.name,
                private_addr: n.private_addr,
                ingress: n.ingress,
                last_seen: n.last_seen,
            })
            .collect(),
    ))
}

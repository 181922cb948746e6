//! `/api/v1/nodes`: the machines running a node agent, and prunes asked of them.

use super::error::ApiResult;
use super::routes::{Api, Need};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::Json;
use protocol::api::Node;

pub fn routes() -> Api {
    Api::new().get("/nodes", Need::Platform, list).on(
        Method::POST,
        "/nodes/{node}/prune",
        Need::Platform,
        "node.prune",
        prune,
    )
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Node>>> {
    Ok(Json(crate::assign::nodes(&state).await?))
}

/// Asks a ready node to prune now and answers what it removed.
async fn prune(
    State(state): State<AppState>,
    Path(node): Path<String>,
) -> ApiResult<Json<protocol::agent::PruneOutcome>> {
    Ok(Json(crate::upkeep::prune(&state, &node).await?))
}

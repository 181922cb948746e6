//! `/api/v1/nodes`: the machines running a node agent.

use super::error::ApiResult;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use protocol::api::Node;

pub fn routes() -> Router<AppState> {
    Router::new().route("/nodes", get(list))
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<Node>>> {
    Ok(Json(crate::assign::nodes(&state).await?))
}

//! `/api/v1/apps/{app}/envs/{env}/logs`: an environment's central logs, filtered and searched,
//! with a long-polled follow mode (`after` + `wait`).

use super::error::ApiResult;
use super::routes::{Api, Need};
use crate::logs::{self, Params};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::Json;
use protocol::access::Role::Viewer;
use protocol::logs::LogPage;

pub fn routes() -> Api {
    Api::new().get("/apps/{app}/envs/{env}/logs", Need::App(Viewer), read)
}

async fn read(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult<Json<LogPage>> {
    Ok(Json(logs::read(&state, &app, &env, &params).await?))
}

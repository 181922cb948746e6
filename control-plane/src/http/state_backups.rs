//! `/api/v1/platform/state-backups`: the platform's own sealed state backups (admins only):
//! take one now, list them.

use super::error::ApiResult;
use super::routes::{Api, Need};
use crate::state::AppState;
use crate::state_backup::{self, StateBackup};
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::Json;

pub fn routes() -> Api {
    Api::new().get("/platform/state-backups", Need::Platform, list).on(
        Method::POST,
        "/platform/state-backups",
        Need::Platform,
        "platform.backup",
        take,
    )
}

async fn take(State(state): State<AppState>) -> ApiResult<(StatusCode, Json<StateBackup>)> {
    Ok((StatusCode::CREATED, Json(state_backup::take_now(&state).await?)))
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<StateBackup>>> {
    Ok(Json(state_backup::list(&state).map_err(crate::error::DomainError::Internal)?))
}

//! `/api/v1/apps/{app}/envs/{env}/db`: managed PostgreSQL for an environment: create it, show
//! it, change its backup settings, hand the primary's role to the replica, rotate the app
//! role's password.

use super::auth::Caller;
use super::error::ApiResult;
use super::routes::{Api, Need};
use crate::databases;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::http::StatusCode;
use axum::{Extension, Json};
use protocol::access::Role::{Admin, Viewer};
use protocol::api::{ConfigChanged, CreateDatabase, DatabaseInfo, DatabaseSettings};

pub fn routes() -> Api {
    Api::new()
        .get("/apps/{app}/envs/{env}/db", Need::App(Viewer), info)
        .on(Method::POST, "/apps/{app}/envs/{env}/db", Need::App(Admin), "db.create", create)
        .on(Method::POST, "/apps/{app}/envs/{env}/db/settings", Need::App(Admin), "db.settings", settings)
        .on(Method::POST, "/apps/{app}/envs/{env}/db/failover", Need::App(Admin), "db.failover", failover)
        .on(
            Method::POST,
            "/apps/{app}/envs/{env}/db/rotate-credentials",
            Need::App(Admin),
            "db.rotate-credentials",
            rotate_credentials,
        )
}

/// A new password for the app's role, rolled out in DATABASE_URL as a release.
async fn rotate_credentials(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<ConfigChanged>)> {
    let changed = databases::rotate_credentials(&state, &caller.user, &app, &env).await?;
    Ok((StatusCode::ACCEPTED, Json(changed)))
}

/// Switchover: the replica becomes the primary; answers once the new primary does.
async fn failover(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
) -> ApiResult<Json<DatabaseInfo>> {
    let row = crate::failover::switchover(&state, &caller.user, &app, &env).await?;
    Ok(Json(databases::info(&state, &row, false).await?))
}

async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(body): Json<CreateDatabase>,
) -> ApiResult<(StatusCode, Json<DatabaseInfo>)> {
    Ok((StatusCode::CREATED, Json(databases::create(&state, &caller.user, &app, &env, body).await?)))
}

async fn settings(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Json(body): Json<DatabaseSettings>,
) -> ApiResult<Json<DatabaseInfo>> {
    Ok(Json(databases::set_settings(&state, &caller.user, &app, &env, &body).await?))
}

async fn info(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<super::Reveal>,
) -> ApiResult<Json<DatabaseInfo>> {
    state.store.get_env(&app, &env).await?;
    let row = state.store.get_database(&app, &env).await?;
    if q.reveal {
        crate::access::reveal(&state, &caller, &app, &env, "db.reveal").await?;
    }
    Ok(Json(databases::info(&state, &row, q.reveal).await?))
}

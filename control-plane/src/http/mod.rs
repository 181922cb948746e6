//! HTTP surface of the control plane: one routes file per resource, merged here with their
//! authentication, plus the web console at `/`.

mod agent;
mod apps;
pub mod auth;
mod backups;
mod db;
mod deploys;
mod envs;
pub mod error;
mod formation;
mod git;
mod nodes;
mod runs;
pub mod server;

use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::Router;

/// Largest JSON request on `/api/v1` (a `db psql` script is the largest there is). Source
/// uploads stream to disk and have their own limit (`deploys.rs`), as do git pushes (`git.rs`).
const API_BODY_LIMIT: usize = 2 << 20;
/// The console takes only the sign-in form, from anyone: keep what it reads small.
const CONSOLE_BODY_LIMIT: usize = 16 << 10;

pub fn router(state: AppState, api_url: &str) -> anyhow::Result<Router> {
    let api = Router::new()
        .merge(apps::routes())
        .merge(deploys::routes())
        .merge(db::routes())
        .merge(backups::routes())
        .merge(formation::routes())
        .merge(envs::routes())
        .merge(nodes::routes())
        .merge(runs::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT))
        .layer(from_fn_with_state(state.clone(), auth::require_user));
    // Agents keep their reports and output batches under this (backup data streams).
    let agent = agent::routes()
        .merge(backups::agent_routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(protocol::agent::MAX_BODY_BYTES))
        .layer(from_fn_with_state(state.clone(), auth::require_agent));
    let console = web::router(web::WebConfig { api_url: api_url.to_string() })?
        .layer(DefaultBodyLimit::max(CONSOLE_BODY_LIMIT));
    Ok(Router::new()
        .nest("/api/v1", api.with_state(state.clone()))
        .nest("/agent/v1", agent.with_state(state.clone()))
        .merge(git::routes().with_state(state))
        .merge(console))
}

async fn not_found() -> error::ApiError {
    error::ApiError::NotFound("no such API route".into())
}

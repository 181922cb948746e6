//! HTTP surface of the control plane: one routes file per resource, merged here with their
//! authentication, plus the web console at `/`. The public listener serves `/api/v1`, git and
//! the console; the agent API (`/agent/v1`) has a listener of its own, over mutual TLS
//! ([`agent_router`], `server::serve_tls`).

mod agent;
mod alerts;
mod apps;
mod attach;
pub mod auth;
mod backups;
mod db;
mod deploys;
mod domains;
mod drains;
mod envs;
pub mod error;
mod formation;
mod git;
mod logs;
mod metrics;
mod node_identity;
mod nodes;
pub mod routes;
mod runs;
pub mod server;
mod state_backups;
pub use git::repo_dir as git_repo_dir;
mod users;

use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::Router;
use serde::Deserialize;
use std::time::Duration;

/// Largest JSON request on `/api/v1` (a `db psql` script is the largest there is). Source
/// uploads stream to disk and have their own limit (`deploys.rs`), as do git pushes (`git.rs`).
const API_BODY_LIMIT: usize = 2 << 20;
/// The console takes only the sign-in form, from anyone: keep what it reads small.
const CONSOLE_BODY_LIMIT: usize = 16 << 10;

/// Where the public API is served.
pub const API_PREFIX: &str = "/api/v1";

/// Every public API route with its rule.
pub fn api() -> routes::Api {
    routes::Api::new()
        .merge(apps::routes())
        .merge(deploys::routes())
        .merge(db::routes())
        .merge(backups::routes())
        .merge(formation::routes())
        .merge(envs::routes())
        .merge(nodes::routes())
        .merge(node_identity::routes())
        .merge(runs::routes())
        .merge(users::routes())
        .merge(logs::routes())
        .merge(domains::routes())
        .merge(drains::routes())
        .merge(metrics::routes())
        .merge(alerts::routes())
        .merge(state_backups::routes())
}

pub fn router(state: AppState, api_url: &str) -> anyhow::Result<Router> {
    let api = api()
        .into_router(state.clone(), API_PREFIX)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT));
    let web = web::WebConfig {
        api_url: api_url.to_string(),
        console_key: state.console_key.to_string(),
        secure_cookies: api_url.starts_with("https://"),
    };
    let console = web::router(web)?.layer(DefaultBodyLimit::max(CONSOLE_BODY_LIMIT));
    Ok(Router::new()
        .nest(API_PREFIX, api.with_state(state.clone()))
        .route("/agent/v1/{*rest}", axum::routing::any(agent_moved))
        .route("/metrics", axum::routing::get(metrics::prometheus).with_state(state.clone()))
        .merge(git::routes().with_state(state.clone()))
        .merge(console)
        .layer(from_fn_with_state(state, crate::leader::standby_gate)))
}

/// The agent API, for the agent listener.
pub fn agent_router(state: AppState) -> Router {
    // Agents keep their reports and output batches under this (backup data streams).
    let agent = agent::routes()
        .merge(backups::agent_routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(protocol::agent::MAX_BODY_BYTES))
        .layer(from_fn_with_state(state.clone(), auth::require_agent));
    Router::new()
        .nest("/agent/v1", agent.with_state(state.clone()))
        .fallback(not_found)
        .layer(from_fn_with_state(state, crate::leader::standby_gate))
}

/// An agent from before mutual TLS, still calling the public address.
async fn agent_moved() -> error::ApiError {
    crate::error::DomainError::NotFound(
        "the agent API is served on the control plane's agent address (paas server --agent-addr) over mutual TLS: join again with `paas agent --join https://<agent address> --join-token <paas nodes token>`".into(),
    )
    .into()
}

/// `?reveal=true` shows secret values (and is logged).
#[derive(Deserialize)]
struct Reveal {
    #[serde(default)]
    reveal: bool,
}

/// A long poll: what came after `after`, waiting up to `wait` seconds (at most 60) for it.
#[derive(Deserialize)]
struct Poll {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait: u64,
}

impl Poll {
    fn wait(&self) -> Duration {
        Duration::from_secs(self.wait.min(60))
    }
}

async fn not_found() -> error::ApiError {
    crate::error::DomainError::NotFound("no such API route".into()).into()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    /// What `router` answers to a POST of `size` bytes of JSON (or a form) at `path`.
    async fn post(router: &axum::Router, path: &str, token: &str, size: usize) -> StatusCode {
        let form = path == "/login";
        let body = if form {
            format!("token={}", "a".repeat(size))
        } else {
            format!("{{\"name\": \"{}\"}}", "a".repeat(size))
        };
        let content_type = if form { "application/x-www-form-urlencoded" } else { "application/json" };
        let req = Request::post(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        router.clone().oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn bodies_over_each_routes_limit_are_refused() {
        let dir = std::env::temp_dir().join(format!("paas-limits-{:016x}", rand::random::<u64>()));
        let config = crate::Config::for_tests(&dir, "localhost");
        let cp = crate::ControlPlane::open(config).await.unwrap();
        let router = super::router(cp.state.clone(), "http://127.0.0.1:7070").unwrap();
        let agent_router = super::agent_router(cp.state.clone());
        let user = cp.admin_token.as_str();

        assert_eq!(post(&router, "/login", "", 100 << 10).await, StatusCode::PAYLOAD_TOO_LARGE);
        assert_ne!(post(&router, "/login", "", 10).await, StatusCode::PAYLOAD_TOO_LARGE);
        let run = "/api/v1/apps/shop/envs/production/runs";
        assert_eq!(post(&router, run, user, super::API_BODY_LIMIT).await, StatusCode::PAYLOAD_TOO_LARGE);
        assert_ne!(post(&router, run, user, 10).await, StatusCode::PAYLOAD_TOO_LARGE);
        let big = protocol::agent::MAX_BODY_BYTES;
        let join = "/agent/v1/join";
        assert_eq!(post(&agent_router, join, "t", big).await, StatusCode::PAYLOAD_TOO_LARGE);
        assert_ne!(post(&agent_router, join, "t", big / 2).await, StatusCode::PAYLOAD_TOO_LARGE);
        cp.state.store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

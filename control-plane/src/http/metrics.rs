//! Metrics over HTTP: an environment's series and the nodes' (`/api/v1`), the scrape token, and
//! `/metrics` in Prometheus's text format for the scrape token or a platform admin's token.

use super::error::{ApiError, ApiResult};
use super::routes::{Api, ClientAddr, Need};
use crate::error::DomainError;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Json;
use protocol::access::Role::Viewer;
use protocol::client::ScrapeToken;
use protocol::metrics::MetricsView;
use serde::Deserialize;

pub fn routes() -> Api {
    Api::new()
        .get("/apps/{app}/envs/{env}/metrics", Need::App(Viewer), app_metrics)
        .get("/nodes/metrics", Need::Platform, node_metrics)
        .get("/metrics/scrape-token", Need::Platform, scrape_token)
}

#[derive(Deserialize)]
struct Since {
    since: Option<String>,
}

async fn app_metrics(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
    Query(q): Query<Since>,
) -> ApiResult<Json<MetricsView>> {
    Ok(Json(crate::metrics::app_view(&state, &app, &env, q.since.as_deref()).await?))
}

async fn node_metrics(State(state): State<AppState>, Query(q): Query<Since>) -> ApiResult<Json<MetricsView>> {
    Ok(Json(crate::metrics::nodes_view(&state, q.since.as_deref()).await?))
}

async fn scrape_token(State(state): State<AppState>) -> Json<ScrapeToken> {
    Json(ScrapeToken { token: state.metrics.scrape_token().to_string() })
}

/// `GET /metrics`: the scrape token, or the token of a platform admin.
pub async fn prometheus(
    State(state): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let secret = super::routes::bearer(&headers);
    if !secret.as_deref().is_some_and(|s| state.metrics.is_scrape_token(s)) {
        let caller = crate::access::authenticate(&state, secret.as_deref(), &addr.ip()).await?;
        caller.require_platform_admin("reading /metrics").map_err(|_| {
            DomainError::Forbidden(
                "/metrics needs the scrape token (`paas metrics --scrape-token`) or a platform admin's token"
                    .into(),
            )
        })?;
    }
    let text = state.metrics.prometheus(crate::metrics::now_secs());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}

//! `/api/v1/alerts` and `/api/v1/notify`: alerts (each user sees those of the apps they hold a
//! role on, platform admins also the nodes'), alert rules, silences and notification targets
//! (platform admins).

use super::error::ApiResult;
use super::routes::{Api, Need};
use crate::access::Caller;
use crate::state::AppState;
use crate::{alerts, notify};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::{Extension, Json};
use protocol::access::Role::Viewer;
use protocol::alerts::{AddRule, AddTarget, Alert, AlertRule, NotifyTarget, SetRule, Silence, TestOutcome};
use serde_json::{json, Value};

pub fn routes() -> Api {
    Api::new()
        .get("/alerts", Need::Signed, list)
        .get("/alerts/rules", Need::Signed, rules)
        .on(Method::POST, "/alerts/rules", Need::Platform, "alerts.rule.add", add_rule)
        .on(Method::DELETE, "/alerts/rules/{rule}", Need::Platform, "alerts.rule.remove", remove_rule)
        .on(Method::PUT, "/alerts/rules/{rule}", Need::Platform, "alerts.rule", set_rule)
        .on(Method::POST, "/alerts/rules/{rule}/silence", Need::Platform, "alerts.silence", silence)
        .on(Method::DELETE, "/alerts/rules/{rule}/silence", Need::Platform, "alerts.unsilence", unsilence)
        .get("/notify", Need::Platform, targets)
        .on(Method::POST, "/notify", Need::Platform, "notify.add", add_target)
        .on(Method::DELETE, "/notify/{id}", Need::Platform, "notify.remove", remove_target)
        .on(Method::POST, "/notify/test", Need::Platform, "notify.test", test)
}

async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<Alert>>> {
    let all = alerts::list(&state).await?;
    let visible = all
        .into_iter()
        .filter(|a| match &a.app {
            Some(app) => caller.require(app, Viewer, "").is_ok(),
            None => caller.is_platform_admin(),
        })
        .collect();
    Ok(Json(visible))
}

async fn rules(State(state): State<AppState>) -> ApiResult<Json<Vec<AlertRule>>> {
    Ok(Json(alerts::rules(&state).await?))
}

async fn add_rule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(add): Json<AddRule>,
) -> ApiResult<(StatusCode, Json<AlertRule>)> {
    Ok((StatusCode::CREATED, Json(alerts::add_rule(&state, &caller.user, &add).await?)))
}

async fn remove_rule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(rule): Path<String>,
) -> ApiResult<Json<Value>> {
    alerts::remove_rule(&state, &caller.user, &rule).await?;
    Ok(Json(json!({ "removed": rule })))
}

async fn set_rule(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(rule): Path<String>,
    Json(set): Json<SetRule>,
) -> ApiResult<Json<AlertRule>> {
    Ok(Json(alerts::set_rule(&state, &caller.user, &rule, &set).await?))
}

async fn silence(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(rule): Path<String>,
    Json(s): Json<Silence>,
) -> ApiResult<Json<AlertRule>> {
    Ok(Json(alerts::silence(&state, &caller.user, &rule, &s).await?))
}

async fn unsilence(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(rule): Path<String>,
) -> ApiResult<Json<AlertRule>> {
    Ok(Json(alerts::silence(&state, &caller.user, &rule, &Silence { duration: None }).await?))
}

async fn targets(State(state): State<AppState>) -> ApiResult<Json<Vec<NotifyTarget>>> {
    Ok(Json(notify::list(&state).await?))
}

async fn add_target(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(add): Json<AddTarget>,
) -> ApiResult<(StatusCode, Json<NotifyTarget>)> {
    Ok((StatusCode::CREATED, Json(notify::add(&state, &caller.user, add).await?)))
}

async fn remove_target(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    notify::remove(&state, &caller.user, &id).await?;
    Ok(Json(json!({ "removed": id })))
}

async fn test(State(state): State<AppState>) -> ApiResult<Json<Vec<TestOutcome>>> {
    Ok(Json(notify::test(&state).await?))
}

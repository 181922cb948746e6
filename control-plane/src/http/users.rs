//! `/api/v1` routes of users, roles, tokens, sign-in, console sessions and the audit log.

use super::auth::Caller;
use super::error::ApiResult;
use super::routes::{Api, ClientAddr, Need};
use crate::access::{signin, users};
use crate::error::DomainError;
use crate::state::AppState;
use crate::store::AuditFilter;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::{Extension, Json};
use protocol::access::{
    AuditEntry, CreateToken, CreateUser, CreatedToken, GrantRole, Login, Session, TokenInfo, TotpSetup, User,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

pub fn routes() -> Api {
    Api::new()
        .on(Method::POST, "/login", Need::Public, "signin", login)
        .on(Method::POST, "/sessions", Need::Public, "signin", start_session)
        .on(Method::DELETE, "/sessions/current", Need::Signed, "signout", end_session)
        .get("/users", Need::Platform, list)
        .on(Method::POST, "/users", Need::Platform, "user.add", add)
        .get("/users/{user}", Need::Platform, show)
        .on(Method::DELETE, "/users/{user}", Need::Platform, "user.remove", remove)
        .on(Method::POST, "/users/{user}/password", Need::Platform, "user.password", set_password)
        .on(Method::POST, "/users/{user}/grants", Need::Platform, "user.grant", grant)
        .on(Method::DELETE, "/users/{user}/grants/{grant}", Need::Platform, "user.revoke", revoke)
        .on(Method::DELETE, "/users/{user}/totp", Need::Platform, "user.totp.disable", disable_totp)
        .on(Method::POST, "/me/totp", Need::Signed, "user.totp.enable", enable_totp)
        .get("/tokens", Need::Signed, tokens)
        .on(Method::POST, "/tokens", Need::Signed, "token.create", create_token)
        .on(Method::DELETE, "/tokens/{token}", Need::Signed, "token.revoke", revoke_token)
        .on(Method::POST, "/tokens/rotate-admin", Need::Platform, "token.rotate-admin", rotate_admin)
        .get("/audit", Need::Signed, audit)
}

async fn login(
    State(state): State<AppState>,
    addr: ClientAddr,
    Json(body): Json<Login>,
) -> ApiResult<Json<CreatedToken>> {
    Ok(Json(signin::login(&state, body, &addr.ip()).await?))
}

async fn start_session(
    State(state): State<AppState>,
    addr: ClientAddr,
    Json(body): Json<Login>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    Ok((StatusCode::CREATED, Json(signin::start_session(&state, body, &addr.ip()).await?)))
}

async fn end_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    signin::end_session(&state, &caller).await?;
    Ok(Json(json!({ "signed_out": caller.user })))
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(users::list(&state).await?))
}

async fn add(
    State(state): State<AppState>,
    Json(body): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    Ok((StatusCode::CREATED, Json(users::add(&state, body).await?)))
}

async fn show(State(state): State<AppState>, Path(user): Path<String>) -> ApiResult<Json<User>> {
    Ok(Json(users::show(&state, &user).await?))
}

async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(user): Path<String>,
) -> ApiResult<Json<Value>> {
    users::remove(&state, &caller, &user).await?;
    Ok(Json(json!({ "removed": user })))
}

#[derive(Deserialize)]
struct Password {
    password: String,
}

async fn set_password(
    State(state): State<AppState>,
    Path(user): Path<String>,
    Json(body): Json<Password>,
) -> ApiResult<Json<Value>> {
    users::set_password(&state, &user, body.password).await?;
    Ok(Json(json!({ "user": user })))
}

async fn grant(
    State(state): State<AppState>,
    Path(user): Path<String>,
    Json(body): Json<GrantRole>,
) -> ApiResult<Json<User>> {
    Ok(Json(users::grant(&state, &user, &body.app, body.role).await?))
}

async fn revoke(
    State(state): State<AppState>,
    Path((user, app)): Path<(String, String)>,
) -> ApiResult<Json<User>> {
    Ok(Json(users::revoke(&state, &user, &app).await?))
}

async fn enable_totp(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<TotpSetup>> {
    Ok(Json(signin::enable_totp(&state, &caller).await?))
}

async fn disable_totp(State(state): State<AppState>, Path(user): Path<String>) -> ApiResult<Json<Value>> {
    signin::disable_totp(&state, &user).await?;
    Ok(Json(json!({ "user": user })))
}

#[derive(Deserialize)]
struct Whose {
    user: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn tokens(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<Whose>,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    Ok(Json(users::tokens_of(&state, &caller, q.user.as_deref(), q.all).await?))
}

async fn create_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let ttl = body.ttl_secs.map(Duration::from_secs);
    Ok((StatusCode::CREATED, Json(users::create_token(&state, &caller, &body.name, ttl).await?)))
}

async fn revoke_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(token): Path<String>,
) -> ApiResult<Json<Value>> {
    users::revoke_token(&state, &caller, &token).await?;
    Ok(Json(json!({ "revoked": token })))
}

async fn rotate_admin(State(state): State<AppState>) -> ApiResult<Json<CreatedToken>> {
    Ok(Json(users::rotate_admin(&state).await?))
}

#[derive(Deserialize)]
struct AuditQuery {
    app: Option<String>,
    /// How far back, e.g. `1d` or `30m`.
    since: Option<String>,
    limit: Option<u32>,
}

async fn audit(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let since = match q.since.as_deref() {
        Some(s) => {
            let d = humantime::parse_duration(s).map_err(|_| {
                DomainError::Invalid(format!("{s:?} is not a duration: use for example 30m, 6h or 1d"))
            })?;
            Some(signin::timestamp(time::OffsetDateTime::now_utc() - d))
        }
        None => None,
    };
    let filter = AuditFilter {
        app: q.app,
        since,
        visible: caller.visible_apps(),
        limit: q.limit.unwrap_or(200).min(5000),
    };
    Ok(Json(state.store.audit(&filter).await?))
}

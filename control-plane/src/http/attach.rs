//! The two legs of a run the user joins: `GET /api/v1/apps/{app}/envs/{env}/runs/{id}/attach`
//! (the user who started it) and `GET /agent/v1/jobs/{id}/attach` (its node), each an HTTP/1.1
//! upgrade to `protocol::attach::UPGRADE`, joined by `crate::attach`.

use super::auth::{Caller, NodeCaller};
use super::error::ApiResult;
use crate::attach::{self, Side};
use crate::error::DomainError;
use crate::state::AppState;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use hyper::upgrade::OnUpgrade;
use protocol::attach::UPGRADE;

pub async fn user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((app, env, id)): Path<(String, String, String)>,
    mut req: Request,
) -> ApiResult<Response> {
    let upgrade = upgrade_of(&mut req)?;
    let job = attach::user_side(&state, &caller.user, &app, &env, &id).await?;
    state.spawn(attach::join(state.clone(), job, Side::User, upgrade));
    Ok(switching())
}

pub async fn agent(
    State(state): State<AppState>,
    caller: NodeCaller,
    Path(id): Path<String>,
    mut req: Request,
) -> ApiResult<Response> {
    let upgrade = upgrade_of(&mut req)?;
    let job = attach::agent_side(&state, &caller.0, &id).await?;
    state.spawn(attach::join(state.clone(), job, Side::Agent, upgrade));
    Ok(switching())
}

/// The connection's upgrade, when the request asks for ours.
fn upgrade_of(req: &mut Request) -> Result<OnUpgrade, DomainError> {
    let asks = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()) == Some(UPGRADE);
    let upgrade = req.extensions_mut().remove::<OnUpgrade>();
    match upgrade {
        Some(u) if asks => Ok(u),
        _ => Err(DomainError::Invalid(format!(
            "this address takes an upgraded HTTP/1.1 connection (Upgrade: {UPGRADE}), as `paas run` makes"
        ))),
    }
}

fn switching() -> Response {
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(UPGRADE));
    resp
}

//! Bearer-token authentication for every API and agent route.

use super::error::ApiError;
use crate::state::AppState;
use crate::tokens;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Who made a request; handlers take it as an extension.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub kind: String,
}

fn bearer(req: &Request) -> Option<String> {
    let value = req.headers().get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

/// Takes the token, not the request: the request body is not `Sync`, so no borrow of the
/// request may live across an await.
async fn authenticate_token(state: &AppState, token: Option<String>) -> Result<Caller, ApiError> {
    let token = token.ok_or_else(|| {
        ApiError::Unauthorized("this request needs an API token: run `paas login` or pass --token".into())
    })?;
    match state.store.token(&tokens::hash(&token)).await? {
        Some((user, kind)) => Ok(Caller { user, kind }),
        None => Err(ApiError::Unauthorized("the API token is not valid".into())),
    }
}

/// `/api/v1`: user tokens only.
pub async fn require_user(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = authenticate_token(&state, bearer(&req)).await?;
    if caller.kind != "user" {
        return Err(ApiError::Unauthorized("agent tokens cannot use the user API".into()));
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// `/agent/v1`: agent tokens only, so a leaked agent token cannot manage apps and vice versa.
pub async fn require_agent(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = authenticate_token(&state, bearer(&req)).await?;
    if caller.kind != "agent" {
        return Err(ApiError::Unauthorized("this route is for node agents; use the agent join token".into()));
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

//! Bearer authentication of the agent API (users are authenticated per route by
//! `routes::authorize`): `/agent/v1` takes the join token (which only registers nodes) or a node's own credential,
//! and each agent handler checks that the node is the one its request concerns.

use super::error::ApiError;
use crate::error::DomainError;
use crate::state::AppState;
use crate::store::TokenKind;
use crate::tokens;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

/// Who made a user request; handlers take it as an extension (set by `routes::authorize`).
pub use crate::access::Caller;

/// Who made an agent request.
#[derive(Debug, Clone)]
pub enum AgentCaller {
    /// The join token: it may register a new node and nothing else.
    Join,
    /// A node, by the credential it was given when it joined.
    Node(String),
}

fn bearer(req: &Request) -> Option<String> {
    let value = req.headers().get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

async fn authenticate_agent(state: &AppState, token: Option<String>) -> Result<AgentCaller, ApiError> {
    let token = token.ok_or_else(|| {
        ApiError::Unauthorized(
            "this route is for node agents: send the node's credential, or the join token to register".into(),
        )
    })?;
    let hash = tokens::hash(&token);
    if let Some(node) = state.store.credential_node(&hash).await? {
        return Ok(AgentCaller::Node(node));
    }
    match state.store.token(&hash).await? {
        Some(t) if t.kind == TokenKind::Join => Ok(AgentCaller::Join),
        Some(_) => Err(ApiError::Unauthorized("user tokens cannot use the agent API".into())),
        None => Err(ApiError::Unauthorized(
            "this agent credential is not valid: the node was removed or the control plane's data was reset; join again with the join token".into(),
        )),
    }
}

/// `/agent/v1`: the join token or a node credential, so a leaked user token cannot act as a
/// node and a node credential cannot manage apps.
pub async fn require_agent(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = authenticate_agent(&state, bearer(&req)).await?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// The node behind an agent request; the join token is refused here, so a handler that takes
/// this reads or changes nothing for it.
#[derive(Debug, Clone)]
pub struct NodeCaller(pub String);

impl NodeCaller {
    /// Refuses the request unless the caller is `node`, the node that `what` belongs to.
    pub fn must_be(&self, node: &str, what: impl std::fmt::Display) -> Result<(), ApiError> {
        if self.0 == node {
            return Ok(());
        }
        let why = format!("node {:?} cannot use {what}: it belongs to node {node:?}", self.0);
        Err(DomainError::Forbidden(why).into())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for NodeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<AgentCaller>() {
            Some(AgentCaller::Node(node)) => Ok(Self(node.clone())),
            Some(AgentCaller::Join) => Err(DomainError::Forbidden(
                "the join token only registers nodes; this route needs the node's own credential".into(),
            )
            .into()),
            None => Err(ApiError::Unauthorized("this route is for node agents".into())),
        }
    }
}

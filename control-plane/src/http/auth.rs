//! Authentication of the agent API (users are authenticated per route by `routes::authorize`):
//! the agent listener's `/agent/v1` knows nodes by their client certificate (mutual TLS, checked
//! against the store on every request), and each agent handler checks that the node is the one
//! its request concerns. A client without a certificate may only fetch the CA and join.

use super::error::ApiError;
use super::server::PeerCertificate;
use crate::error::DomainError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

/// Who made a user request; handlers take it as an extension (set by `routes::authorize`).
pub use crate::access::Caller;

/// Who made an agent request.
#[derive(Debug, Clone)]
pub enum AgentCaller {
    /// No client certificate: it may fetch the CA certificate and join, nothing else.
    Anonymous,
    /// A node, by the certificate on record for it.
    Node(String),
}

async fn authenticate_agent(
    state: &AppState,
    cert: Option<PeerCertificate>,
) -> Result<AgentCaller, ApiError> {
    let Some(PeerCertificate(fingerprint)) = cert else {
        return Ok(AgentCaller::Anonymous);
    };
    match state.store.cert_node(&fingerprint).await? {
        Some(node) => Ok(AgentCaller::Node(node)),
        None => Err(ApiError::Unauthorized(
            "this node's certificate is no longer on record: the node was removed or got a newer certificate; join again with a fresh token from `paas nodes token`".into(),
        )),
    }
}

/// `/agent/v1`: the node a client certificate speaks for, so a user token cannot act as a node
/// and a node cannot manage apps.
pub async fn require_agent(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let cert = req.extensions().get::<PeerCertificate>().cloned();
    let caller = authenticate_agent(&state, cert).await?;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// The node behind an agent request; a client without a certificate is refused here, so a
/// handler that takes this reads or changes nothing for it.
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
            Some(AgentCaller::Anonymous) => Err(ApiError::Unauthorized(
                "this route needs the node's certificate (mutual TLS): join first with a token from `paas nodes token`".into(),
            )),
            None => Err(ApiError::Unauthorized("this route is for node agents, on the agent address".into())),
        }
    }
}

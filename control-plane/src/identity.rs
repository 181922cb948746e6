//! Node identity: one-time join tokens, joining (a key the node made, signed by the CA into a
//! short-lived certificate naming the node), renewal over the node's current mutual TLS, the
//! certificate of `paas up`'s own node, and removing a node (its certificates end with it).

use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::{NewCert, TokenRefused};
use protocol::agent::RegisterNode;
use protocol::tls::{JoinRequest, JoinToken, JoinTokenCreated, KeyProof, NodeCertificate, JOIN_TOKEN_PREFIX};
use std::time::Duration;

/// Bounds of a join token's lifetime: long enough to start an agent, short enough that a
/// token left in a shell history is soon worth nothing.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a join was refused: the token (401), or anything else.
#[derive(Debug)]
pub enum JoinError {
    Token(String),
    Domain(DomainError),
}

impl<E: Into<DomainError>> From<E> for JoinError {
    fn from(e: E) -> Self {
        Self::Domain(e.into())
    }
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// A one-time join token valid for `ttl`, made by user `by`; the token carries the CA's hash.
pub async fn create_join_token(state: &AppState, by: &str, ttl: Duration) -> Result<JoinTokenCreated> {
    if !(MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
        return Err(DomainError::Invalid(format!(
            "a join token lives between {} and {} (asked: {})",
            humanize(MIN_TOKEN_TTL),
            humanize(MAX_TOKEN_TTL),
            humanize(ttl)
        )));
    }
    let secret = format!("{JOIN_TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 24]>()));
    let expires_at = time::OffsetDateTime::now_utc().unix_timestamp() + ttl.as_secs() as i64;
    state.store.insert_join_token(&crate::tokens::hash(&secret), by, expires_at).await?;
    tracing::info!(by, expires_at = %rfc3339(expires_at), "join token made");
    let token = JoinToken { secret, ca_sha256: state.ca.fingerprint().to_string() };
    Ok(JoinTokenCreated { token: token.to_string(), expires_at: rfc3339(expires_at) })
}

fn humanize(d: Duration) -> String {
    match d.as_secs() {
        s if s % 86400 == 0 => format!("{}d", s / 86400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Checks a registration's name and address, and spells the address one way, so two spellings
/// of one address cannot both be claimed.
pub fn check_registration(node: &mut RegisterNode) -> Result<()> {
    protocol::names::check_node(&node.name)?;
    let addr = node
        .private_addr
        .parse::<std::net::IpAddr>()
        .map_err(|_| DomainError::Invalid(format!("{:?} is not an IP address", node.private_addr)))?;
    node.private_addr = addr.to_string();
    let ours = protocol::agent::PROTOCOL_VERSION;
    if node.protocol.abs_diff(ours) > 1 {
        return Err(DomainError::Invalid(format!(
            "this agent speaks version {} of the agent protocol and the control plane {ours}; \
             they work together only one version apart: upgrade the older one",
            node.protocol
        )));
    }
    Ok(())
}

fn answer(state: &AppState, issued: crate::ca::Issued) -> NodeCertificate {
    NodeCertificate { certificate: issued.pem, ca: state.ca.pem().to_string(), not_after: issued.not_after }
}

/// Joins a new node with the secret of a join token (burnt by this join).
pub async fn join(
    state: &AppState,
    secret: Option<&str>,
    mut req: JoinRequest,
) -> std::result::Result<NodeCertificate, JoinError> {
    let Some(secret) = secret else {
        return Err(JoinError::Token(
            "joining needs a join token: make one with `paas nodes token` and pass it with --join-token"
                .into(),
        ));
    };
    check_registration(&mut req.node)?;
    let node = &req.node;
    let issued = state.ca.sign_node(&node.name, &req.key)?;
    let cert = NewCert { fingerprint: &issued.fingerprint, not_after: issued.not_after };
    let hash = crate::tokens::hash(secret);
    let before = state.store.node(&node.name).await.ok();
    match state.store.join_node(&node.name, &node.private_addr, node.ingress, &hash, cert).await? {
        Ok(()) => {}
        Err(TokenRefused(why)) => return Err(JoinError::Token(why)),
    }
    state.store.set_node_capacity(&node.name, node.capacity).await.map_err(DomainError::from)?;
    tracing::info!(node = %node.name, addr = %node.private_addr, not_after = %rfc3339(issued.not_after), "node joined");
    crate::nodes::registered(state, before, node).await?;
    Ok(answer(state, issued))
}

/// A new certificate for `node`'s new key; `current` (the certificate it asked with) stays
/// valid beside it until the agent has switched.
pub async fn renew(state: &AppState, node: &str, current: &str, proof: &KeyProof) -> Result<NodeCertificate> {
    let issued = state.ca.sign_node(node, proof)?;
    let cert = NewCert { fingerprint: &issued.fingerprint, not_after: issued.not_after };
    state.store.renew_cert(node, current, cert).await?;
    tracing::info!(node, not_after = %rfc3339(issued.not_after), "node certificate renewed");
    Ok(answer(state, issued))
}

/// The certificate of the node in this very process (`paas up`): no join token, and whatever
/// certificate the node had before ends.
pub async fn local_certificate(state: &AppState, node: &str, proof: &KeyProof) -> Result<NodeCertificate> {
    protocol::names::check_node(node)?;
    let issued = state.ca.sign_node(node, proof)?;
    let cert = NewCert { fingerprint: &issued.fingerprint, not_after: issued.not_after };
    state.store.replace_certs(node, cert).await?;
    Ok(answer(state, issued))
}

/// Removes a node that runs nothing; its certificates stop working on the next request.
pub async fn remove_node(state: &AppState, node: &str) -> Result<()> {
    protocol::names::check_node(node)?;
    state.store.remove_node(node).await?;
    tracing::info!(node, "node removed; its certificates no longer work");
    state.bump();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_one_protocol_version_apart_register_and_others_are_told_which_to_upgrade() {
        let ours = protocol::agent::PROTOCOL_VERSION;
        for version in [ours - 1, ours, ours + 1] {
            let mut node = RegisterNode { protocol: version, ..RegisterNode::new("n1", "10.0.0.1", false) };
            check_registration(&mut node).unwrap();
        }
        let mut far = RegisterNode { protocol: ours + 2, ..RegisterNode::new("n1", "10.0.0.1", false) };
        let why = check_registration(&mut far).unwrap_err().to_string();
        assert!(why.contains("one version apart") && why.contains("upgrade the older one"), "{why}");
        // An agent from before versions sends none: it is version 1.
        let old: RegisterNode =
            serde_json::from_str(r#"{"name":"n1","private_addr":"10.0.0.1","ingress":false}"#).unwrap();
        assert_eq!((old.protocol, old.capacity), (1, protocol::agent::Capacity::default()));
    }
}

//! Tokens and node credentials. The bootstrap tokens (admin, join) are generated on first start
//! and kept in the data directory (0600) so a restart of `paas up` can rewrite the CLI config;
//! node credentials are issued when a node joins and shown to it once. Only sha256 hashes go
//! into the database.

use crate::store::{Registrar, Store, StoreError, TokenKind};
use anyhow::Context;
use protocol::agent::RegisterNode;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::Path;

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn generate() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("paas_{}", hex::encode(bytes))
}

/// Reads the token kept in `file`, creating it on first start, and makes sure the store knows it.
pub async fn ensure(
    store: &Store,
    dir: &Path,
    file: &str,
    user: &str,
    kind: TokenKind,
) -> anyhow::Result<String> {
    let path = dir.join(file);
    let token = match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let token = generate();
            protocol::files::write_private(&path, token.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            token
        }
    };
    store.insert_token(&hash(&token), user, kind).await?;
    Ok(token)
}

/// Registers a node. `by_node` is the node whose credential made the request, `None` for the
/// join token; a join returns the new node's credential, which exists nowhere else from then on.
pub async fn register_node(
    store: &Store,
    by_node: Option<&str>,
    node: &RegisterNode,
) -> Result<Option<String>, StoreError> {
    match by_node {
        Some(caller) => {
            store
                .register_node(&node.name, &node.private_addr, node.ingress, Registrar::Node(caller))
                .await?;
            Ok(None)
        }
        None => {
            let credential = generate();
            let by = Registrar::Join { credential_hash: &hash(&credential) };
            store.register_node(&node.name, &node.private_addr, node.ingress, by).await?;
            Ok(Some(credential))
        }
    }
}

/// A fresh credential for `node`, replacing any it had, for an agent in the same process.
pub async fn issue_node_credential(store: &Store, node: &str) -> anyhow::Result<String> {
    let credential = generate();
    store.set_node_credential(node, &hash(&credential)).await?;
    Ok(credential)
}

//! API tokens. The bootstrap admin token is generated on first start and kept in the data
//! directory (0600) so a restart of `paas up` can rewrite the CLI config. Only sha256 hashes go
//! into the database. (Node identity is `identity`: join tokens and certificates.)

use crate::store::{Store, TokenKind};
use anyhow::Context;
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

//! Bootstrap API tokens: generated on first start, kept in the data directory (mode 0600) so a
//! restart of `paas up` can rewrite the CLI config; only their sha256 goes into the database.

use crate::store::Store;
use anyhow::Context;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::io::Write;
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
pub async fn ensure(store: &Store, dir: &Path, file: &str, user: &str, kind: &str) -> anyhow::Result<String> {
    let path = dir.join(file);
    let token = match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let token = generate();
            write_private(&path, token.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            token
        }
    };
    store.insert_token(&hash(&token), user, kind).await?;
    Ok(token)
}

/// Writes a file only its owner can read: tokens and keys.
#[cfg(unix)]
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

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
            let mut f = open_private(&path).with_context(|| format!("writing {}", path.display()))?;
            f.write_all(token.as_bytes())?;
            token
        }
    };
    store.insert_token(&hash(&token), user, kind).await?;
    Ok(token)
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}

//! Making and hashing secrets (API tokens, session ids). Only sha256 hashes go into the
//! database; the bootstrap admin token is `access::bootstrap`'s. (Node identity is `identity`: join tokens and certificates.)

use rand::RngCore;
use sha2::{Digest, Sha256};

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `n` random lower-case hex digits (at most 48): a tag that keeps names apart, not a secret.
pub fn random_hex(n: usize) -> String {
    let token = generate();
    token.trim_start_matches("paas_").chars().take(n).collect()
}

pub fn generate() -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("paas_{}", hex::encode(bytes))
}

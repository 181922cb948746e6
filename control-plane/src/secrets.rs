//! Encryption at rest for config vars: ChaCha20-Poly1305 with a key generated on first start and
//! kept in the data directory (`secret.key`, mode 0600). The database only ever holds sealed
//! values, so a copy of `state.db` alone reveals nothing.

use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use std::collections::BTreeMap;
use std::path::Path;

const NONCE: usize = 12;

pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl SecretBox {
    /// Loads `dir/secret.key`, creating it on first start.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("secret.key");
        let key = match std::fs::read(&path) {
            Ok(k) => {
                anyhow::ensure!(k.len() == 32, "{} is damaged (it must hold 32 bytes)", path.display());
                k
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut k = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut k);
                protocol::files::write_private(&path, &k)
                    .with_context(|| format!("writing {}", path.display()))?;
                k
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self { cipher: ChaCha20Poly1305::new(Key::from_slice(&key)) })
    }

    /// nonce || ciphertext
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed =
            self.cipher.encrypt(Nonce::from_slice(&nonce), plain).expect("encrypting in memory cannot fail");
        [nonce.as_slice(), &sealed].concat()
    }

    pub fn open(&self, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(sealed.len() > NONCE, "a sealed value is truncated");
        let (nonce, data) = sealed.split_at(NONCE);
        self.cipher.decrypt(Nonce::from_slice(nonce), data).map_err(|_| {
            anyhow::anyhow!("a sealed value does not decrypt with this data directory's secret.key")
        })
    }

    /// Sealed and hex-encoded, for a text column.
    pub fn seal_text(&self, plain: &[u8]) -> String {
        hex::encode(self.seal(plain))
    }

    pub fn open_text(&self, sealed: &str) -> anyhow::Result<Vec<u8>> {
        self.open(&hex::decode(sealed).map_err(|_| anyhow::anyhow!("a sealed value is not hex"))?)
    }

    pub fn seal_map(&self, vars: &BTreeMap<String, String>) -> Vec<u8> {
        self.seal(&serde_json::to_vec(vars).expect("a map of strings serialises"))
    }

    pub fn open_map(&self, sealed: &[u8]) -> anyhow::Result<BTreeMap<String, String>> {
        if sealed.is_empty() {
            return Ok(BTreeMap::new());
        }
        Ok(serde_json::from_slice(&self.open(sealed)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_and_detects_tampering() {
        let dir = std::env::temp_dir().join(format!("paas-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let b = SecretBox::load_or_create(&dir).unwrap();
        let sealed = b.seal(b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(b.open(&sealed).unwrap(), b"hunter2");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(b.open(&bad).is_err());
        // The same key comes back on the next start.
        let again = SecretBox::load_or_create(&dir).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), b"hunter2");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("secret.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

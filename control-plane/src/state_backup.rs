//! The platform's own disaster recovery: an online snapshot of the state database (SQLite's
//! `VACUUM INTO`) with the keys every control plane holds (the agents' CA, the key sealing
//! config, the local CA, the bootstrap and scrape tokens), packed in a tar and sealed with a key
//! derived from an operator passphrase (argon2id, then ChaCha20-Poly1305), stored beside the
//! database backups (the backup directory's `_platform/` and S3: no app is named so) on a schedule and on demand;
//! `paas up --restore-from` unseals one into an empty data directory before the platform opens
//! it. Our own format, not a crate's: it is a tar and one AEAD call around the crates that do
//! the work, and it must open with nothing but the passphrase.

use crate::state::AppState;
use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use std::path::{Path, PathBuf};
use std::time::Duration;

const MAGIC: &[u8; 8] = b"PAASDR1\n";
const STATE_DB: &str = "state.db";
/// State backups kept; older ones are deleted after each new one.
const KEEP: usize = 7;
/// The largest sealed backup restored (the state database holds no logs, metrics or images).
const MAX_BYTES: u64 = 1 << 30;

/// The operator's passphrase that seals state backups; never printed.
#[derive(Clone)]
pub struct Passphrase(pub String);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(****)")
    }
}

/// A stored state backup, as the API lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StateBackup {
    pub name: String,
    pub size_bytes: u64,
    pub locations: Vec<String>,
}

fn key(passphrase: &str, salt: &[u8]) -> anyhow::Result<Key> {
    let mut out = [0u8; 32];
    argon2::Argon2::default()
        .hash_password_into(passphrase.as_bytes(), salt, &mut out)
        .map_err(|e| anyhow::anyhow!("deriving the key from the passphrase: {e}"))?;
    Ok(Key::from(out))
}

/// `plain` sealed with `passphrase`: magic, salt, nonce, ciphertext (authenticated).
pub fn seal(passphrase: &str, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (mut salt, mut nonce) = ([0u8; 16], [0u8; 12]);
    rand::thread_rng().fill_bytes(&mut salt);
    rand::thread_rng().fill_bytes(&mut nonce);
    let cipher = ChaCha20Poly1305::new(&key(passphrase, &salt)?);
    let sealed =
        cipher.encrypt(Nonce::from_slice(&nonce), plain).map_err(|_| anyhow::anyhow!("sealing failed"))?;
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// What [`seal`] sealed, or why not (a wrong passphrase and a damaged file look alike).
pub fn unseal(passphrase: &str, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(data.len() > 36 && &data[..8] == MAGIC, "this is not a paas state backup");
    let (salt, nonce, sealed) = (&data[8..24], &data[24..36], &data[36..]);
    let cipher = ChaCha20Poly1305::new(&key(passphrase, salt)?);
    cipher
        .decrypt(Nonce::from_slice(nonce), sealed)
        .map_err(|_| anyhow::anyhow!("the passphrase is wrong or the backup is damaged"))
}

/// The tar of a consistent copy of the state and the shared keys.
async fn pack(state: &AppState) -> anyhow::Result<Vec<u8>> {
    let dir = &state.config.data_dir;
    let unique = crate::tokens::random_hex(8);
    let snapshot = dir.join(format!(".state-backup-{unique}.db"));
    let _ = std::fs::remove_file(&snapshot);
    state.store.snapshot_into(&snapshot).await?;
    let snap = snapshot.clone();
    let files: Vec<(String, PathBuf)> = std::iter::once((STATE_DB.to_string(), snap))
        .chain(crate::leader::SHARED.iter().map(|n| (n.to_string(), dir.join(n))).filter(|(_, p)| p.exists()))
        .collect();
    let packed = tokio::task::spawn_blocking(move || {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, path) in files {
            tar.append_path_with_name(&path, &name).with_context(|| format!("packing {name}"))?;
        }
        tar.into_inner().context("packing the state backup")
    })
    .await?;
    let _ = std::fs::remove_file(&snapshot);
    packed
}

fn file_name() -> String {
    format!("state-{}.paasdr", crate::backups::new_id())
}

/// Takes a state backup now: sealed, stored locally and in S3, older ones beyond [`KEEP`] deleted.
pub async fn take(state: &AppState) -> anyhow::Result<StateBackup> {
    let passphrase = state.config.state_passphrase.clone().map(|p| p.0).context(
        "no passphrase to seal state backups with: start the platform with PAAS_STATE_PASSPHRASE set",
    )?;
    let plain = pack(state).await?;
    let sealed = tokio::task::spawn_blocking(move || seal(&passphrase, &plain)).await??;
    let name = file_name();
    let dir = state.config.backup_dir.join("_platform");
    protocol::files::private_dir(&dir)?;
    let path = dir.join(&name);
    let (p, bytes) = (path.clone(), sealed.clone());
    tokio::task::spawn_blocking(move || protocol::files::write_private(&p, &bytes)).await??;
    let mut locations = vec![format!("local:{}", path.display())];
    if let Some(s3) = state.backup_storage.s3() {
        let key = format!("_platform/{name}");
        s3.put_bytes(&key, sealed.clone()).await.context("copying the state backup to S3")?;
        locations.push(format!("s3:{key}"));
    }
    tracing::info!(name, size = sealed.len(), "state backup stored");
    prune(state, &dir).await?;
    Ok(StateBackup { name, size_bytes: sealed.len() as u64, locations })
}

/// [`take`] for a user: without a passphrase, the answer says how to set one.
pub async fn take_now(state: &AppState) -> crate::error::Result<StateBackup> {
    if state.config.state_passphrase.is_none() {
        return Err(crate::error::DomainError::Invalid(
            "state backups are sealed with a passphrase: start the platform with PAAS_STATE_PASSPHRASE set"
                .into(),
        ));
    }
    Ok(take(state).await?)
}

/// The stored state backups, newest first (local copies).
pub fn list(state: &AppState) -> anyhow::Result<Vec<StateBackup>> {
    let dir = state.config.backup_dir.join("_platform");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("state-") && name.ends_with(".paasdr") {
            let size_bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
            let mut locations = vec![format!("local:{}", entry.path().display())];
            if state.backup_storage.s3().is_some() {
                locations.push(format!("s3:_platform/{name}"));
            }
            out.push(StateBackup { name, size_bytes, locations });
        }
    }
    out.sort_by(|a, b| b.name.cmp(&a.name));
    Ok(out)
}

async fn prune(state: &AppState, dir: &Path) -> anyhow::Result<()> {
    for old in list(state)?.into_iter().skip(KEEP) {
        let _ = std::fs::remove_file(dir.join(&old.name));
        if let Some(s3) = state.backup_storage.s3() {
            s3.delete(&format!("_platform/{}", old.name)).await?;
        }
    }
    Ok(())
}

/// Takes a state backup every `state_backup_every` while a passphrase is configured; a failure
/// is a critical event.
pub async fn scheduler(state: AppState) {
    let stop = state.shutting_down();
    let every = state.config.state_backup_every;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = take(&state).await {
            let msg = format!("the platform's state backup FAILED: {e:#}");
            tracing::error!("{msg}");
            let _ = state.store.add_event("", "", "platform.backup.failed", "critical", &msg).await;
        }
    }
}

/// Unseals state backup `source` (a file, or `s3:<key>` in the configured bucket) into the data
/// directory, which must hold no state yet. Only the state database and the known key files
/// are written, each 0600, whatever names the archive holds.
pub async fn restore_into(config: &crate::Config, source: &str) -> anyhow::Result<()> {
    let dir = &config.data_dir;
    anyhow::ensure!(
        !dir.join(STATE_DB).exists(),
        "{} already holds a platform's state; restore into an empty data directory",
        dir.display()
    );
    let passphrase = config.state_passphrase.clone().map(|p| p.0).context(
        "--restore-from needs the passphrase the backup was sealed with: set PAAS_STATE_PASSPHRASE",
    )?;
    let sealed = match source.strip_prefix("s3:") {
        Some(key) => {
            let s3 = config.backup_s3.clone().context("an s3: backup needs the S3 backup store settings")?;
            crate::s3::S3::new(s3)?.get_bytes(key).await.with_context(|| format!("fetching {source}"))?
        }
        None => {
            let len = std::fs::metadata(source).with_context(|| format!("reading {source}"))?.len();
            anyhow::ensure!(len <= MAX_BYTES, "{source} is larger than any state backup");
            std::fs::read(source).with_context(|| format!("reading {source}"))?
        }
    };
    let plain = tokio::task::spawn_blocking(move || unseal(&passphrase, &sealed)).await??;
    protocol::files::private_dir(dir)?;
    let allowed: Vec<&str> = std::iter::once(STATE_DB).chain(crate::leader::SHARED).collect();
    let mut archive = tar::Archive::new(&plain[..]);
    let mut restored = Vec::new();
    for entry in archive.entries().context("reading the state backup")? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().to_string();
        let Some(known) = allowed.iter().find(|a| **a == name) else {
            tracing::warn!(name, "skipping an unknown file in the state backup");
            continue;
        };
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content)?;
        let path = dir.join(known);
        if let Some(parent) = path.parent() {
            protocol::files::private_dir(parent)?;
        }
        protocol::files::write_private(&path, &content)?;
        restored.push(name);
    }
    anyhow::ensure!(restored.iter().any(|n| n == STATE_DB), "the state backup holds no state database");
    tracing::info!(source, files = ?restored, "restored the platform's state");
    Ok(())
}

/// How often state backups are taken unless `--state-backup-every` says otherwise.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(6 * 3600);

#[cfg(test)]
mod tests {
    #[test]
    fn sealed_state_opens_with_its_passphrase_only() {
        let sealed = super::seal("correct horse", b"state").unwrap();
        assert_eq!(super::unseal("correct horse", &sealed).unwrap(), b"state");
        let wrong = super::unseal("wrong", &sealed).unwrap_err().to_string();
        assert!(wrong.contains("passphrase is wrong"), "{wrong}");
        let mut damaged = sealed.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(super::unseal("correct horse", &damaged).is_err());
        assert!(super::unseal("correct horse", b"not a backup").is_err());
    }
}

//! Where backups live: a local directory always (it is also where uploads land), plus an
//! S3-compatible bucket when one is configured. Every read checks the size and SHA-256 the
//! manifest recorded, so a corrupt or truncated copy is refused by name instead of restored.

use crate::s3::S3;
use anyhow::Context;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use protocol::api::{Backup, BackupKind};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// An upload that sends nothing for this long has hung (pg_dump writes steadily while it
/// dumps): it fails, and the agent reports the backup failed.
const UPLOAD_IDLE: Duration = Duration::from_secs(90);

#[derive(Clone)]
pub struct BackupStorage {
    pub(super) dir: PathBuf,
    pub(super) s3: Option<S3>,
}

/// A copy of a backup that passed its checksum, ready to stream. Temporary copies (fetched
/// from S3) are removed when dropped.
pub struct CheckedCopy {
    pub path: PathBuf,
    temporary: bool,
}

impl CheckedCopy {
    /// A file that stays when the copy is dropped.
    pub(super) fn kept(path: PathBuf) -> Self {
        Self { path, temporary: false }
    }

    /// A fetched file, removed when the copy is dropped.
    pub(super) fn temporary(path: PathBuf) -> Self {
        Self { path, temporary: true }
    }
}

impl Drop for CheckedCopy {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn key(b: &Backup, ext: &str) -> String {
    format!("{}/{}/{}.{ext}", b.app, b.env, b.id)
}

/// The data file's extension: a dump, or a base backup's gzipped tar.
fn data_ext(b: &Backup) -> &'static str {
    match b.kind {
        BackupKind::Dump => "dump",
        BackupKind::Base => "base.tar.gz",
    }
}

/// Size and SHA-256 of a file, read in a blocking thread (backups run to gigabytes).
pub async fn digest_file(path: &Path) -> anyhow::Result<(u64, String)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let (mut hash, mut size, mut buf) = (Sha256::new(), 0u64, vec![0u8; 1 << 20]);
        loop {
            let n = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            size += n as u64;
        }
        Ok((size, hex::encode(hash.finalize())))
    })
    .await?
}

/// Creates `dir` and its missing parents 0700 (the backup directory itself is made private
/// when the control plane opens).
pub(super) async fn private_dirs(dir: &Path) -> std::io::Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir).await
}

/// Writes an upload to `path` (0600, in 0700 directories made as needed), hashing as it goes;
/// fails when nothing arrives for `idle` or past `max` bytes. Returns its size and SHA-256. A
/// failed upload leaves no file.
pub async fn receive_file<E: std::fmt::Display>(
    path: &Path,
    mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    idle: Duration,
    max: u64,
) -> anyhow::Result<(u64, String)> {
    if let Some(parent) = path.parent() {
        private_dirs(parent).await.with_context(|| format!("creating {}", parent.display()))?;
    }
    // A dump holds the database's data: the owner's only, from its first byte on.
    let _ = tokio::fs::remove_file(path).await;
    let mut open = tokio::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    open.mode(0o600);
    let mut file = open.open(path).await.with_context(|| format!("creating {}", path.display()))?;
    let (mut hash, mut size) = (Sha256::new(), 0u64);
    let result: anyhow::Result<()> = async {
        loop {
            let next = tokio::time::timeout(idle, body.next()).await.map_err(|_| {
                anyhow::anyhow!("the upload stalled: no bytes arrived for {} seconds", idle.as_secs())
            })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| anyhow::anyhow!("the upload broke off: {e}"))?;
            hash.update(&chunk);
            size += chunk.len() as u64;
            anyhow::ensure!(
                size <= max,
                "the upload is larger than the {} allowed",
                protocol::bytes_human(max)
            );
            file.write_all(&chunk).await.with_context(|| format!("writing {}", path.display()))?;
        }
        file.sync_all().await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(path).await;
        return Err(e);
    }
    Ok((size, hex::encode(hash.finalize())))
}

/// Compares a copy's figures with the manifest's, in the words a user needs.
fn check(b: &Backup, location: &str, size: u64, sha: &str) -> anyhow::Result<()> {
    let (want_size, want_sha) = (b.size_bytes.unwrap_or(0), b.sha256.as_deref().unwrap_or(""));
    if size < want_size {
        anyhow::bail!("the copy at {location} is truncated: {size} of {want_size} bytes");
    }
    if size != want_size || sha != want_sha {
        anyhow::bail!(
            "the copy at {location} is corrupt: its SHA-256 is {} but the manifest recorded {} ({size} bytes, manifest {want_size})",
            &sha[..sha.len().min(16)],
            &want_sha[..want_sha.len().min(16)]
        );
    }
    Ok(())
}

async fn check_local(b: &Backup, path: &str) -> anyhow::Result<()> {
    let (size, sha) =
        digest_file(Path::new(path)).await.map_err(|_| anyhow::anyhow!("the copy at {path} is missing"))?;
    check(b, path, size, &sha)
}

impl BackupStorage {
    pub fn new(dir: PathBuf, s3: Option<S3>) -> Self {
        Self { dir, s3 }
    }

    /// The S3 bucket backups are copied to, when one is configured.
    pub fn s3(&self) -> Option<&S3> {
        self.s3.as_ref()
    }

    pub fn describe(&self) -> String {
        match &self.s3 {
            Some(s3) => format!("{} and {}", self.dir.display(), s3.describe()),
            None => self.dir.display().to_string(),
        }
    }

    pub fn local_path(&self, b: &Backup) -> PathBuf {
        self.dir.join(key(b, data_ext(b)))
    }

    fn partial_path(&self, b: &Backup) -> PathBuf {
        self.dir.join(key(b, &format!("{}.partial", data_ext(b))))
    }

    /// Writes an uploaded dump next to where it will live, hashing as it goes; the caller
    /// makes it a backup with [`Self::finalize`] once the agent says the dump succeeded.
    pub async fn receive<E: std::fmt::Display>(
        &self,
        b: &Backup,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> anyhow::Result<(u64, String)> {
        receive_file(&self.partial_path(b), body, UPLOAD_IDLE, u64::MAX).await
    }

    /// Takes in a dump a user uploads (`db import`) like an agent's, but at most what the backup
    /// directory holds while keeping a tenth of its filesystem free; refuses a file that is not
    /// a pg_dump custom-format archive.
    pub async fn receive_import<E: std::fmt::Display>(
        &self,
        b: &Backup,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> anyhow::Result<(u64, String)> {
        private_dirs(&self.dir).await.with_context(|| format!("creating {}", self.dir.display()))?;
        let room = match rustix::fs::statvfs(&self.dir) {
            Ok(fs) => (fs.f_bavail.saturating_mul(fs.f_frsize))
                .saturating_sub(fs.f_blocks.saturating_mul(fs.f_frsize) / 10),
            Err(_) => u64::MAX,
        };
        let path = self.partial_path(b);
        let received = receive_file(&path, body, UPLOAD_IDLE, room).await?;
        let mut head = [0u8; 5];
        let read = async {
            use tokio::io::AsyncReadExt;
            tokio::fs::File::open(&path).await?.read_exact(&mut head).await
        };
        if read.await.is_err() || &head != b"PGDMP" {
            let _ = tokio::fs::remove_file(&path).await;
            anyhow::bail!(
                "the file is not a pg_dump custom-format archive (make one with `pg_dump -Fc`; a plain SQL file loads with `paas db psql < FILE`)"
            );
        }
        Ok(received)
    }

    /// Removes the local files of a backup that was not stored (the upload, and the dump and
    /// manifest when storing got that far).
    pub async fn discard(&self, b: &Backup) {
        let _ = tokio::fs::remove_file(self.local_path(b)).await;
        let _ = tokio::fs::remove_file(self.partial_path(b)).await;
        let _ = tokio::fs::remove_file(self.dir.join(key(b, "manifest.json"))).await;
    }

    /// Makes an uploaded dump a backup: moves it in place, writes its manifest beside it and
    /// copies both to S3 when configured. Returns where copies now are.
    pub async fn finalize(&self, b: &Backup, manifest: &serde_json::Value) -> anyhow::Result<Vec<String>> {
        let path = self.local_path(b);
        tokio::fs::rename(self.partial_path(b), &path)
            .await
            .with_context(|| format!("the uploaded dump of backup {} is missing", b.id))?;
        let manifest = serde_json::to_vec_pretty(manifest)?;
        let (manifest_path, bytes) = (self.dir.join(key(b, "manifest.json")), manifest.clone());
        tokio::task::spawn_blocking(move || protocol::files::write_private(&manifest_path, &bytes))
            .await?
            .context("writing the backup's manifest")?;
        let mut locations = vec![format!("local:{}", path.display())];
        if let Some(s3) = &self.s3 {
            s3.put_file(&key(b, data_ext(b)), &path).await.context("copying the backup to S3")?;
            s3.put_bytes(&key(b, "manifest.json"), manifest).await.context("copying the manifest to S3")?;
            locations.push(format!("s3:{}", key(b, data_ext(b))));
        }
        Ok(locations)
    }

    /// Checks every copy of a backup against its manifest; the first problem is the error.
    pub async fn check_all(&self, b: &Backup) -> anyhow::Result<()> {
        for location in &b.locations {
            if let Some(path) = location.strip_prefix("local:") {
                check_local(b, path).await?;
            } else if let Some(k) = location.strip_prefix("s3:") {
                let s3 =
                    self.s3.as_ref().context("the backup has a copy in S3 but no S3 store is configured")?;
                let mut stream = Box::pin(s3.get_stream(k).await?);
                let (mut hash, mut size) = (Sha256::new(), 0u64);
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    hash.update(&chunk);
                    size += chunk.len() as u64;
                }
                check(b, &format!("s3:{k}"), size, &hex::encode(hash.finalize()))?;
            }
        }
        if b.locations.is_empty() {
            anyhow::bail!("backup {} has no stored copy", b.id);
        }
        Ok(())
    }

    /// A checked copy to restore from: the local one when it is sound, else one fetched from S3.
    pub async fn checked_copy(&self, b: &Backup) -> anyhow::Result<CheckedCopy> {
        let mut problems = Vec::new();
        for location in &b.locations {
            if let Some(path) = location.strip_prefix("local:") {
                match check_local(b, path).await {
                    Ok(()) => return Ok(CheckedCopy { path: PathBuf::from(path), temporary: false }),
                    Err(e) => problems.push(e.to_string()),
                }
            } else if let (Some(k), Some(s3)) = (location.strip_prefix("s3:"), &self.s3) {
                let tmp = self.dir.join(".fetch").join(format!("{}.{}", b.id, data_ext(b)));
                private_dirs(tmp.parent().expect("has a parent")).await?;
                let copy = CheckedCopy { path: tmp, temporary: true };
                let fetched = async {
                    s3.get_to_file(k, &copy.path).await?;
                    let (size, sha) = digest_file(&copy.path).await?;
                    check(b, &format!("s3:{k}"), size, &sha)
                }
                .await;
                match fetched {
                    Ok(()) => return Ok(copy),
                    Err(e) => problems.push(format!("{e:#}")),
                }
            }
        }
        if problems.is_empty() {
            anyhow::bail!("backup {} has no stored copy", b.id);
        }
        anyhow::bail!("backup {} cannot be read: {}", b.id, problems.join("; "))
    }

    /// Removes every copy (retention); a copy already gone is not an error. S3 is asked even
    /// when the backup lists no copy there: a failed backup may have left one halfway.
    pub async fn delete(&self, b: &Backup) -> anyhow::Result<()> {
        self.discard(b).await;
        if let Some(s3) = &self.s3 {
            s3.delete(&key(b, data_ext(b))).await?;
            s3.delete(&key(b, "manifest.json")).await?;
        }
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use protocol::agent::DbRole;
    use protocol::api::{BackupStatus, BackupTrigger, Verification};
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn dumps_and_manifests_are_the_owners_only() {
        let dir = std::env::temp_dir().join(format!("paas-storage-{}", std::process::id()));
        let storage = BackupStorage::new(dir.clone(), None);
        let b = Backup {
            id: "b1".into(),
            app: "shop".into(),
            env: "production".into(),
            trigger: BackupTrigger::Manual,
            source: DbRole::Primary,
            node: "n".into(),
            status: BackupStatus::Running,
            error: None,
            size_bytes: None,
            sha256: None,
            tables: Default::default(),
            locations: Vec::new(),
            started_at: String::new(),
            finished_at: None,
            verification: Verification::Pending,
            verification_error: None,
            verified_at: None,
            kind: Default::default(),
            wal_start: String::new(),
        };
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"PGDMP data"))]);
        let (size, _) = storage.receive(&b, body).await.unwrap();
        assert_eq!(size, 10);
        assert_eq!(mode(&storage.partial_path(&b)), 0o600);
        assert_eq!(mode(storage.partial_path(&b).parent().unwrap()), 0o700);
        storage.finalize(&b, &serde_json::json!({ "id": "b1" })).await.unwrap();
        assert_eq!(mode(&storage.local_path(&b)), 0o600);
        assert_eq!(mode(&dir.join(key(&b, "manifest.json"))), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

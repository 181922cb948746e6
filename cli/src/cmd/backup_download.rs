//! `paas db backups download ID [-o FILE]`: a backup's dump, streamed to a file (or standard
//! output) and checked against the size and SHA-256 recorded when the backup was taken. A file
//! is written beside its final name and renamed only once it checks out, so FILE is never a
//! corrupt or partial dump.

use crate::args::{AppEnv, Global};
use crate::output::emit;
use anyhow::Context;
use protocol::api::{Backup, BackupStatus};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Size and SHA-256 of what was written so far, checked against the backup's at the end.
#[derive(Default)]
struct Tally {
    hash: Sha256,
    size: u64,
}

impl Tally {
    fn add(&mut self, chunk: &[u8]) {
        self.hash.update(chunk);
        self.size += chunk.len() as u64;
    }

    /// The SHA-256 when size and checksum are the backup's, else why not.
    fn check(self, b: &Backup) -> anyhow::Result<String> {
        let sha = hex::encode(self.hash.finalize());
        let expected =
            b.sha256.as_deref().context(format!("backup {} has no recorded checksum to check", b.id))?;
        if b.size_bytes.is_some_and(|s| s != self.size) || sha != expected {
            anyhow::bail!(
                "the download of backup {} does not match it ({} bytes with SHA-256 {sha}, recorded {} bytes with {expected})",
                b.id,
                self.size,
                b.size_bytes.unwrap_or(0)
            );
        }
        Ok(sha)
    }
}

/// APP-ENV-ID.dump, from the backup's own record (names and ids of the platform's making);
/// anything else is replaced, so the name never leaves the current directory.
fn default_name(b: &Backup) -> String {
    let safe = |s: &str| {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect::<String>()
    };
    format!("{}-{}-{}.dump", safe(&b.app), safe(&b.env), safe(&b.id))
}

pub async fn exec(
    g: &Global,
    t: AppEnv,
    id: &str,
    file: Option<&str>,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let client = super::client(g)?;
    // The record first: a wrong id fails here, before any file is touched.
    let b = client.db_get_backup(&t.app, &t.env, id).await?;
    if b.status != BackupStatus::Stored {
        anyhow::bail!("backup {id} is {}, so there is no dump to download", b.status);
    }
    let to_stdout = file == Some("-");
    let path = PathBuf::from(file.map_or_else(|| default_name(&b), String::from));
    if !to_stdout && !force && path.exists() {
        anyhow::bail!("{} exists already; pass --force to replace it, or -o another file", path.display());
    }
    let mut resp = client.db_backup_data(&t.app, &t.env, id).await?;
    let mut tally = Tally::default();
    if to_stdout {
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = resp.chunk().await.context("the download broke off")? {
            tally.add(&chunk);
            out.write_all(&chunk).context("writing to standard output")?;
        }
        out.flush().context("writing to standard output")?;
        let sha = tally.check(&b).context("what was written to standard output is not the backup")?;
        eprintln!(
            "Backup {id} of {}/{}: {} bytes, SHA-256 {sha} checked",
            t.app,
            t.env,
            b.size_bytes.unwrap_or(0)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let partial = PathBuf::from(format!("{}.partial", path.display()));
    let written = async {
        let mut f = open_private(&partial)?;
        while let Some(chunk) = resp.chunk().await.context("the download broke off")? {
            tally.add(&chunk);
            f.write_all(&chunk).with_context(|| format!("writing {}", partial.display()))?;
        }
        f.sync_all().with_context(|| format!("writing {}", partial.display()))?;
        tally.check(&b)
    }
    .await;
    let sha = match written {
        Ok(sha) => sha,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &path).with_context(|| format!("moving the download to {}", path.display()))?;
    let done = serde_json::json!({
        "backup": id, "file": path.display().to_string(), "size_bytes": b.size_bytes, "sha256": sha,
    });
    emit(g.output, &done, |_| {
        println!(
            "Downloaded backup {id} of {}/{} to {} ({} bytes, SHA-256 {sha} checked)",
            t.app,
            t.env,
            path.display(),
            b.size_bytes.unwrap_or(0)
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A new file only its owner reads: a dump holds all of the app's data.
fn open_private(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(data: &[u8]) -> Backup {
        let json = serde_json::json!({
            "id": "20261126-132143-5e1d", "app": "shop", "env": "production", "trigger": "manual",
            "source": "db-primary", "node": "n", "status": "stored", "size_bytes": data.len(),
            "sha256": hex::encode(Sha256::digest(data)), "tables": {}, "locations": [],
            "started_at": "", "verification": "ok",
        });
        serde_json::from_value(json).expect("a backup record")
    }

    #[test]
    fn a_download_is_checked_against_the_recorded_size_and_checksum() {
        let b = backup(b"PGDMP all of it");
        let mut whole = Tally::default();
        whole.add(b"PGDMP ");
        whole.add(b"all of it");
        assert_eq!(whole.check(&b).unwrap(), b.sha256.clone().unwrap());
        let mut cut = Tally::default();
        cut.add(b"PGDMP all");
        assert!(cut.check(&b).unwrap_err().to_string().contains("does not match"));
        let mut changed = Tally::default();
        changed.add(b"PGDMP all of iT");
        assert!(changed.check(&b).is_err());
    }

    #[test]
    fn the_default_name_stays_in_this_directory() {
        assert_eq!(default_name(&backup(b"")), "shop-production-20261126-132143-5e1d.dump");
        let odd = Backup { id: "../../etc/x".into(), ..backup(b"") };
        assert_eq!(default_name(&odd), "shop-production-______etc_x.dump");
    }
}

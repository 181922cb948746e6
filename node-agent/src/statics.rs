//! Extraction of routes' static directories from their release images into the agent's state
//! directory, for the ingress to serve. Each image+directory is extracted once (marked complete
//! only after a full unpack) and kept across agent restarts. An image is hostile input: only
//! regular files and directories are written (never links, devices or fifos), names must stay
//! inside the directory, and size and entry count are capped.

use crate::docker::DockerClient;
use crate::ingress::IngressHandle;
use anyhow::Context;
use protocol::agent::{Route, StaticRoute};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Written last into a finished extraction. Earlier versions wrote `.complete` and kept the
/// image's symlinks, or made no compressed copies (`.extracted-v2`); their directories lack
/// this marker and are extracted again.
const MARKER: &str = ".extracted-v3";
/// A failed extraction (a missing directory, an image over the caps) is not retried sooner,
/// so a 1 GiB image is not copied again on every assignment.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Caps on one static directory: beyond them the extraction fails and says so in the log, so
/// an image cannot fill the node's disk or inode table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_bytes: u64,
    pub(crate) max_entries: u64,
}

pub(crate) const LIMITS: Limits = Limits { max_bytes: 1 << 30, max_entries: 100_000 };

/// What an extraction wrote and what it left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Unpacked {
    pub(crate) files: u64,
    pub(crate) dirs: u64,
    pub(crate) bytes: u64,
    /// Symbolic links, and hard links to anything but a file written before.
    pub(crate) links: u64,
    /// Devices, fifos, sparse files and other entry types.
    pub(crate) special: u64,
    /// Absolute names, names with `..`, and files where a directory already is.
    pub(crate) unsafe_names: u64,
}

#[derive(Clone)]
pub struct Statics {
    docker: DockerClient,
    ingress: IngressHandle,
    root: PathBuf,
    busy: Arc<Mutex<HashSet<String>>>,
    failed: Arc<Mutex<HashMap<String, Instant>>>,
    ready: Arc<Mutex<BTreeSet<String>>>,
    /// Wakes the reporter when a directory became ready, so a waiting deploy learns at once.
    pub changed: Arc<tokio::sync::Notify>,
}

impl Statics {
    pub fn new(docker: DockerClient, ingress: IngressHandle, root: PathBuf) -> Self {
        Self {
            docker,
            ingress,
            root,
            busy: Arc::default(),
            failed: Arc::default(),
            ready: Arc::default(),
            changed: Arc::default(),
        }
    }

    /// Keys of the directories the ingress can serve.
    pub fn ready_keys(&self) -> Vec<String> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    fn mark_ready(&self, key: &str, dir: PathBuf) {
        self.ingress.set_static_root(key, dir);
        if self.ready.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string()) {
            self.changed.notify_one();
        }
    }

    /// Makes sure the static files of every route (and of releases about to take over) are,
    /// or are being, extracted.
    pub fn ensure(&self, routes: &[Route], prefetch: &[StaticRoute]) {
        let wanted = routes.iter().filter_map(|r| r.static_files.clone()).chain(prefetch.iter().cloned());
        for st in wanted {
            let key = st.key();
            let dir = self.root.join(&key);
            if dir.join(MARKER).exists() {
                self.mark_ready(&key, dir.join("files"));
                continue;
            }
            {
                let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                failed.retain(|_, at| at.elapsed() < RETRY_AFTER);
                if failed.contains_key(&key) {
                    continue;
                }
            }
            if !self.busy.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone()) {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                match this.extract(&st, &dir).await {
                    Ok(u) => {
                        if u.links + u.special + u.unsafe_names > 0 {
                            tracing::warn!(
                                image = %st.image, dir = %st.dir, links = u.links, special = u.special,
                                unsafe_names = u.unsafe_names,
                                "static files: entries that are not plain files or directories were left out"
                            );
                        }
                        tracing::info!(image = %st.image, dir = %st.dir, files = u.files, bytes = u.bytes, "static files ready");
                        this.mark_ready(&key, dir.join("files"));
                    }
                    Err(e) => {
                        tracing::warn!(image = %st.image, dir = %st.dir, error = %format!("{e:#}"), "extracting static files failed");
                        this.failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(key.clone(), Instant::now());
                    }
                }
                this.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            });
        }
    }

    /// Streams the image's directory into `<dir>.tmp/files`, then moves it to `dir` and marks it
    /// complete; a failure leaves nothing behind.
    async fn extract(&self, st: &StaticRoute, dir: &Path) -> anyhow::Result<Unpacked> {
        let dir = dir.to_path_buf();
        self.docker
            .copy_out(&st.image, &st.dir, move |tar| {
                let tmp = dir.with_extension("tmp");
                let _ = std::fs::remove_dir_all(&tmp);
                let unpacked = unpack(tar, &tmp.join("files"), LIMITS).and_then(|u| {
                    let c = crate::precompress::precompress(&tmp.join("files"))?;
                    tracing::debug!(
                        files = c.files,
                        before = c.bytes_before,
                        after = c.bytes_after,
                        "static files compressed"
                    );
                    let _ = std::fs::remove_dir_all(&dir);
                    std::fs::rename(&tmp, &dir).context("moving the extracted files in place")?;
                    std::fs::write(dir.join(MARKER), b"").context("marking the extraction complete")?;
                    Ok(u)
                });
                if unpacked.is_err() {
                    let _ = std::fs::remove_dir_all(&tmp);
                }
                unpacked
            })
            .await
    }
}

/// Unpacks Docker's archive of one directory (its entries are rooted at the directory's own
/// name, `public/...`) into `dest`. Only regular files (mode 0644, the archive's mtime kept for
/// stable ETags) and directories (0755) are written. A hard link to a file written before (Docker
/// archives a file with several names in the directory once, then links to it) becomes a copy of
/// that file; symlinks, other hard links, devices, fifos and names that are absolute or climb with
/// `..` are counted and left out. Fails when the archive exceeds `limits`.
pub(crate) fn unpack(archive: impl Read, dest: &Path, limits: Limits) -> anyhow::Result<Unpacked> {
    let mut made = Unpacked::default();
    make_dirs(dest)?;
    let mut archive = tar::Archive::new(archive);
    for (n, entry) in archive.entries().context("reading the image's archive")?.enumerate() {
        if n as u64 >= limits.max_entries {
            anyhow::bail!("the static directory holds more than {} entries, the limit", limits.max_entries);
        }
        let mut entry = entry.context("reading the image's archive")?;
        let kind = entry.header().entry_type();
        let name = entry.path().context("reading an entry name")?.into_owned();
        let Some(rel) = inner_path(&name) else {
            made.unsafe_names += 1;
            continue;
        };
        let path = dest.join(&rel);
        if kind.is_dir() {
            make_dirs(&path)?;
            made.dirs += 1;
            continue;
        }
        if rel.as_os_str().is_empty() {
            made.special += 1;
            continue;
        }
        // What the file's bytes come from: the entry itself, or the earlier file a hard link names.
        let (size, linked) = if kind.is_file() || kind.is_contiguous() {
            (entry.header().size().context("reading an entry size")?, None)
        } else if kind.is_hard_link() {
            let target = entry.link_name().ok().flatten().and_then(|t| inner_path(&t)).map(|t| dest.join(t));
            // Nothing under `dest` is a link (none is ever written): a file there is one we wrote.
            let meta =
                target.as_ref().and_then(|t| std::fs::symlink_metadata(t).ok()).filter(|m| m.is_file());
            match (target, meta) {
                (Some(target), Some(meta)) => (meta.len(), Some(target)),
                _ => {
                    made.links += 1;
                    continue;
                }
            }
        } else if kind.is_symlink() {
            made.links += 1;
            continue;
        } else {
            made.special += 1;
            continue;
        };
        if made.bytes.saturating_add(size) > limits.max_bytes {
            anyhow::bail!("the static directory holds more than {} bytes, the limit", limits.max_bytes);
        }
        if let Some(parent) = path.parent() {
            make_dirs(parent)?;
        }
        // A later entry of the same name replaces an earlier file, never a directory.
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                made.unsafe_names += 1;
                continue;
            }
            Ok(_) => std::fs::remove_file(&path)?,
            Err(_) => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .with_context(|| format!("writing {}", rel.display()))?;
        let written = match linked {
            Some(target) => {
                std::fs::File::open(&target).and_then(|mut src| std::io::copy(&mut src, &mut file))
            }
            None => std::io::copy(&mut entry, &mut file),
        };
        made.bytes += written.with_context(|| format!("writing {}", rel.display()))?;
        if let Ok(mtime) = entry.header().mtime() {
            let _ = file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(mtime));
        }
        made.files += 1;
    }
    Ok(made)
}

/// The entry's path below the archive's root directory (empty for the root itself), or `None`
/// when any part is absolute, `..` or otherwise not a plain name.
fn inner_path(name: &Path) -> Option<PathBuf> {
    let mut parts = name.components().filter(|c| *c != Component::CurDir);
    let Some(Component::Normal(_)) = parts.next() else {
        return None;
    };
    let mut rel = PathBuf::new();
    for part in parts {
        match part {
            Component::Normal(p) => rel.push(p),
            _ => return None,
        }
    }
    Some(rel)
}

fn make_dirs(path: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use tar::{EntryType, Header};

    /// An archive like Docker's for `/app/public`, plus whatever `extra` appends.
    fn archive(extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = Header::new_gnu();
        dir.set_entry_type(EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        b.append_data(&mut dir, "public/", std::io::empty()).unwrap();
        file(&mut b, "public/style.css", b"body{}", 0o4777);
        extra(&mut b);
        b.into_inner().unwrap()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], mode: u32) {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, data).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, name: &str, target: &str) {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        b.append_link(&mut h, name, target).unwrap();
    }

    /// Writes a raw name into the header, bypassing the `tar` crate's own checks, the way a
    /// hand-crafted archive would.
    fn raw_name(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn tree(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let kind = e.file_type().unwrap();
                assert!(kind.is_file() || kind.is_dir(), "{:?} is neither file nor directory", e.path());
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                if kind.is_dir() {
                    stack.push(e.path());
                    out.push(format!("{rel}/"));
                } else {
                    out.push(rel);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn keeps_plain_files_and_directories_only() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = archive(|b| {
            link(b, EntryType::Symlink, "public/passwd", "/etc/passwd");
            link(b, EntryType::Symlink, "public/root", "/");
            link(b, EntryType::Symlink, "public/up", "../../../../../../");
            link(b, EntryType::Symlink, "public/key", "../../../../data/secret.key");
            link(b, EntryType::Link, "public/hard", "etc/passwd");
            link(b, EntryType::Link, "public/hard2", "public/style.css");
            link(b, EntryType::Link, "public/hard3", "/etc/passwd");
            link(b, EntryType::Link, "public/hard4", "public/../../../etc/passwd");
            link(b, EntryType::Link, "public/hard5", "public/");
            let mut fifo = Header::new_gnu();
            fifo.set_entry_type(EntryType::Fifo);
            fifo.set_size(0);
            b.append_data(&mut fifo, "public/fifo", std::io::empty()).unwrap();
            let mut dev = Header::new_gnu();
            dev.set_entry_type(EntryType::Char);
            dev.set_size(0);
            b.append_data(&mut dev, "public/null", std::io::empty()).unwrap();
            file(b, "public/css/a..b.css", b"dots", 0o600);
            raw_name(b, "public/../../escape", b"x");
            raw_name(b, "/etc/evil", b"x");
            raw_name(b, "public/./../x", b"x");
            // A link to a directory, then a file "through" it: the file lands in a real directory.
            link(b, EntryType::Symlink, "public/sub", "/tmp");
            file(b, "public/sub/through.txt", b"inside", 0o644);
        });
        let dest = tmp.path().join("files");
        let made = unpack(&tar[..], &dest, LIMITS).unwrap();
        assert_eq!(tree(&dest), ["css/", "css/a..b.css", "hard2", "style.css", "sub/", "sub/through.txt"]);
        assert_eq!(made, Unpacked { files: 4, dirs: 1, bytes: 22, links: 9, special: 2, unsafe_names: 3 });
        // The hard link inside the directory is a copy, not a second name of the same file.
        assert_eq!(std::fs::read(dest.join("hard2")).unwrap(), b"body{}");
        assert_eq!(std::fs::metadata(dest.join("hard2")).unwrap().nlink(), 1);
        assert_eq!(std::fs::read(dest.join("style.css")).unwrap(), b"body{}");
        let meta = std::fs::metadata(dest.join("style.css")).unwrap();
        // No setuid or world-writable bits from the archive; mtime kept for stable ETags.
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644 & !umask());
        assert_eq!(meta.mtime(), 1_700_000_000);
        assert_eq!(meta.nlink(), 1);
        assert!(!tmp.path().join("escape").exists() && !Path::new("/etc/evil").exists());
    }

    fn umask() -> u32 {
        let probe = tempfile::tempdir().unwrap();
        let path = probe.path().join("p");
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o777).open(&path).unwrap();
        0o777 & !std::fs::metadata(&path).unwrap().permissions().mode()
    }

    #[test]
    fn caps_size_and_entry_count() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = archive(|b| file(b, "public/big.bin", &[7u8; 4096], 0o644));
        let small = Limits { max_bytes: 4000, max_entries: 100 };
        let err = unpack(&tar[..], &tmp.path().join("a"), small).unwrap_err();
        assert!(err.to_string().contains("more than 4000 bytes"), "{err}");
        let few = Limits { max_bytes: 1 << 20, max_entries: 2 };
        let err = unpack(&tar[..], &tmp.path().join("b"), few).unwrap_err();
        assert!(err.to_string().contains("more than 2 entries"), "{err}");
        let fits = Limits { max_bytes: 4102, max_entries: 3 };
        assert_eq!(unpack(&tar[..], &tmp.path().join("c"), fits).unwrap().bytes, 4102);
    }

    #[test]
    fn later_entries_replace_earlier_files() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = archive(|b| file(b, "public/style.css", b"second", 0o644));
        unpack(&tar[..], tmp.path(), LIMITS).unwrap();
        assert_eq!(std::fs::read(tmp.path().join("style.css")).unwrap(), b"second");
    }

    #[test]
    fn inner_paths_stay_inside() {
        assert_eq!(inner_path(Path::new("public/a/b.css")), Some(PathBuf::from("a/b.css")));
        assert_eq!(inner_path(Path::new("./public/./a")), Some(PathBuf::from("a")));
        assert_eq!(inner_path(Path::new("public")), Some(PathBuf::new()));
        for bad in ["/public/a", "../public/a", "public/../a", "public/a/../../b", ".."] {
            assert_eq!(inner_path(Path::new(bad)), None, "{bad}");
        }
    }
}

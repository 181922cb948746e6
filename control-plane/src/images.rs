//! Release images kept by the control plane, so a node that must run an image its engine lacks
//! gets it from here (no registry needed), even once the node that built it is gone.
//!
//! A tarball per image id, as `docker save` writes it, under `<data dir>/images`. Only a
//! platform with more than one node keeps them (one node never needs a transfer): the
//! assignment asks a node that has a kept image the store lacks to send it. Every tarball is
//! checked on arrival, whoever sent it: the SHA-256 of its config must be the image id and
//! every layer's SHA-256 the config's diff id, so what a node loads is what was built (the
//! loading engine checks the layers again, and the agent the loaded id). Own code: the check
//! reads `docker save`'s `manifest.json` layout, which no crate covers.
//! Tarballs of images no release keeps any more (current, target, rollback) are removed.
//!
//! With an external registry (`paas server --registry`) the asked node pushes the image there
//! instead and says so; the store then keeps only an empty `<hex>.pushed` mark, and nodes pull
//! from the registry. A node that claims a push it did not make only delays the nodes that
//! need the image: they check the pulled image's id as they check a loaded one.

use crate::error::DomainError;
use crate::state::AppState;
use anyhow::Context;
use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An upload that sends nothing for this long has hung.
const UPLOAD_IDLE: Duration = Duration::from_secs(60);
/// The largest image a node may send (a hostile node must not fill the control plane's disk).
const MAX_IMAGE_BYTES: u64 = 32 << 30;
/// Tarball entries kept in memory while checking (the manifest and configs are small).
const SMALL_ENTRY: u64 = 1 << 20;
const SMALL_BUDGET: u64 = 32 << 20;
/// A tarball is not removed this soon after it arrived: a deploy may be about to name it.
const PRUNE_GRACE: Duration = Duration::from_secs(600);

pub struct ImageStore {
    dir: PathBuf,
    /// Ids being received right now: a second sender of the same image is told it is not needed.
    receiving: Mutex<HashSet<String>>,
}

/// The 64 hex digits of an image id (`sha256:<hex>`), refusing anything else: they name a file.
pub fn image_hex(id: &str) -> Result<&str, DomainError> {
    id.strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .ok_or_else(|| DomainError::Invalid(format!("{id:?} is not an image id (sha256: and 64 hex digits)")))
}

/// What happened to an upload.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    Stored {
        bytes: u64,
    },
    /// The store has it already, or another node is sending it right now.
    NotNeeded,
}

impl ImageStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir, receiving: Mutex::default() }
    }

    fn path(&self, hex: &str) -> PathBuf {
        self.dir.join(format!("{hex}.tar"))
    }

    /// Whether the store holds image `id`, or the registry does.
    pub fn has(&self, id: &str) -> bool {
        image_hex(id).is_ok_and(|hex| self.path(hex).is_file() || self.pushed_mark(hex).is_file())
    }

    fn pushed_mark(&self, hex: &str) -> PathBuf {
        self.dir.join(format!("{hex}.pushed"))
    }

    /// Records that image `id` is in the registry; false when that was known.
    pub async fn mark_pushed(&self, id: &str) -> anyhow::Result<bool> {
        let mark = self.pushed_mark(image_hex(id)?);
        if mark.is_file() {
            return Ok(false);
        }
        tokio::fs::create_dir_all(&self.dir).await.context("creating the image directory")?;
        tokio::fs::write(&mark, b"").await.context("recording a pushed image")?;
        Ok(true)
    }

    /// The tarball of image `id` and its size, `None` when the store lacks it.
    pub async fn open(&self, id: &str) -> Result<Option<(tokio::fs::File, u64)>, DomainError> {
        let path = self.path(image_hex(id)?);
        let Ok(file) = tokio::fs::File::open(&path).await else { return Ok(None) };
        let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        Ok(Some((file, size)))
    }

    /// Takes an uploaded tarball of image `id`, checks it and keeps it.
    pub async fn receive<E: std::fmt::Display>(
        &self,
        id: &str,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> anyhow::Result<Received> {
        let hex = image_hex(id)?.to_string();
        let path = self.path(&hex);
        if path.is_file() || !self.receiving.lock().unwrap_or_else(|p| p.into_inner()).insert(hex.clone()) {
            return Ok(Received::NotNeeded);
        }
        let partial = self.dir.join(format!("{hex}.tar.partial"));
        let result = async {
            let (bytes, _) =
                crate::backups::receive_file(&partial, body, UPLOAD_IDLE, MAX_IMAGE_BYTES).await?;
            let (check, hex2) = (partial.clone(), hex.clone());
            tokio::task::spawn_blocking(move || verify(&check, &hex2)).await??;
            tokio::fs::rename(&partial, &path).await.context("keeping the image")?;
            Ok(Received::Stored { bytes })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        self.receiving.lock().unwrap_or_else(|p| p.into_inner()).remove(&hex);
        result
    }

    /// Removes the tarballs of images not in `keep` (ids) that have been here a while, and
    /// partial uploads nobody is sending any more. Returns the ids removed.
    pub async fn prune(&self, keep: &HashSet<String>) -> Vec<String> {
        let Ok(mut dir) = tokio::fs::read_dir(&self.dir).await else { return Vec::new() };
        let mut removed = Vec::new();
        while let Ok(Some(entry)) = dir.next_entry().await {
            let name = entry.file_name().to_string_lossy().to_string();
            let partial = name.strip_suffix(".tar.partial");
            let Some(hex) = name.strip_suffix(".tar").or(partial).or(name.strip_suffix(".pushed")) else {
                continue;
            };
            let id = format!("sha256:{hex}");
            let receiving = self.receiving.lock().unwrap_or_else(|p| p.into_inner()).contains(hex);
            let age =
                entry.metadata().await.ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            // A partial upload nobody sends any more (the control plane stopped mid-way) goes
            // whatever its image.
            let kept = keep.contains(&id) && partial.is_none();
            if kept || receiving || age.is_none_or(|a| a < PRUNE_GRACE) {
                continue;
            }
            if tokio::fs::remove_file(entry.path()).await.is_ok() {
                removed.push(id);
            }
        }
        removed
    }
}

/// Checks a `docker save` tarball of image `hex`: one image in its manifest, whose config
/// hashes to the id and whose layers hash to the config's diff ids.
fn verify(path: &Path, hex: &str) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).context("opening the received image")?;
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, file));
    let (mut hashes, mut small, mut links) = (HashMap::new(), HashMap::new(), HashMap::new());
    let mut budget = SMALL_BUDGET;
    for entry in archive.entries().context("the image is not a tar archive")? {
        let mut entry = entry.context("the image's tar archive is damaged")?;
        let name = clean(&entry.path()?.to_string_lossy());
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            // `docker save` links a layer that two images share to its first copy.
            if let Some(target) = entry.link_name()? {
                links.insert(name.clone(), resolve(&name, &target.to_string_lossy()));
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let keep = entry.size() <= SMALL_ENTRY && entry.size() <= budget;
        let (mut hash, mut content, mut buf) = (Sha256::new(), Vec::new(), vec![0u8; 1 << 16]);
        loop {
            let n = entry.read(&mut buf).context("reading the image's tar archive")?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            if keep {
                content.extend_from_slice(&buf[..n]);
            }
        }
        if keep {
            budget -= content.len() as u64;
            small.insert(name.clone(), content);
        }
        hashes.insert(name, hex::encode(hash.finalize()));
    }
    let follow = |name: &str| {
        let name = clean(name);
        links.get(&name).cloned().unwrap_or(name)
    };
    let manifest = small.get("manifest.json").context("the image has no manifest.json")?;
    let manifest: Vec<SavedImage> = serde_json::from_slice(manifest)
        .context("the image's manifest.json is not a docker save manifest")?;
    let [image] = manifest.as_slice() else {
        anyhow::bail!("the image tarball holds {} images, not one", manifest.len());
    };
    let config_name = follow(&image.config);
    anyhow::ensure!(
        hashes.get(&config_name).map(String::as_str) == Some(hex),
        "the image's config does not hash to its id sha256:{}",
        &hex[..12]
    );
    let config: SavedConfig =
        serde_json::from_slice(small.get(&config_name).context("the config is too large")?)
            .context("the image's config is not JSON")?;
    anyhow::ensure!(
        config.rootfs.diff_ids.len() == image.layers.len(),
        "the image lists {} layers but its config {}",
        image.layers.len(),
        config.rootfs.diff_ids.len()
    );
    for (layer, diff) in image.layers.iter().zip(&config.rootfs.diff_ids) {
        let got = hashes.get(&follow(layer)).with_context(|| format!("the image lacks its layer {layer}"))?;
        anyhow::ensure!(
            diff.strip_prefix("sha256:") == Some(got.as_str()),
            "the image's layer {layer} is damaged"
        );
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct SavedImage {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(serde::Deserialize)]
struct SavedConfig {
    rootfs: RootFs,
}

#[derive(serde::Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// A tar path without `./` and empty parts.
fn clean(path: &str) -> String {
    path.split('/').filter(|p| !p.is_empty() && *p != ".").collect::<Vec<_>>().join("/")
}

/// Where a symlink at `from` pointing at `target` leads, inside the archive.
fn resolve(from: &str, target: &str) -> String {
    let mut parts: Vec<&str> = if target.starts_with('/') { Vec::new() } else { from.split('/').collect() };
    parts.pop();
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Stores an image a node sends, when it was asked to; tells the agents once it is here.
pub async fn receive<E: std::fmt::Display>(
    state: &AppState,
    node: &str,
    id: &str,
    body: impl Stream<Item = Result<Bytes, E>> + Unpin,
) -> anyhow::Result<Received> {
    // Only what this node is asked to send: a node cannot fill the control plane's disk with
    // uploads of every image it knows an id of.
    asked_to_send(state, node, id).await?;
    let started = Instant::now();
    let received = state.images.receive(id, body).await.inspect_err(|e| {
        tracing::warn!(node, image = %id, error = %format!("{e:#}"), "an image upload was refused");
    })?;
    if let Received::Stored { bytes } = received {
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(node, image = %id, bytes, secs, "image stored for other nodes");
        state.bump();
    }
    Ok(received)
}

/// Refuses unless `node` is asked to send image `id`, or the store has it already.
async fn asked_to_send(state: &AppState, node: &str, id: &str) -> anyhow::Result<()> {
    image_hex(id)?;
    let (kept, nodes) = (state.store.kept_images().await?, state.store.list_nodes().await?.len());
    if !state.images.has(id) && !wanted_from(state, node, nodes, &kept).await?.iter().any(|w| w == id) {
        return Err(DomainError::Forbidden(format!("node {node} was not asked to send image {id}")).into());
    }
    Ok(())
}

/// Records that `node` pushed image `id` to the platform's registry, as it was asked to; the
/// deploys rolling it out say so, and the agents that wait for it are told.
pub async fn pushed(state: &AppState, node: &str, id: &str) -> anyhow::Result<()> {
    let Some(registry) = &state.config.registry else {
        return Err(DomainError::Invalid(
            "this platform has no registry (paas server --registry): send the image to the control plane"
                .into(),
        )
        .into());
    };
    asked_to_send(state, node, id).await?;
    if !state.images.mark_pushed(id).await? {
        return Ok(());
    }
    tracing::info!(node, image = %id, registry = %registry.repository, "image pushed to the registry for other nodes");
    let line = format!(
        "Node {node} pushed image {} to {}; other nodes pull it from there",
        &id[7..19],
        registry.repository
    );
    for (app, env, _) in state.store.kept_images_by_env().await?.into_iter().filter(|(_, _, i)| i == id) {
        if let Some(release) = state.store.get_env(&app, &env).await?.target_release {
            state.deploy_event(&app, &env, release, "stage", std::slice::from_ref(&line)).await;
        }
    }
    state.bump();
    Ok(())
}

/// Image `id` for `node`, which must be assigned something that runs it; the releases that
/// wait for it are told (their deploy's progress shows the transfer).
pub async fn send(state: &AppState, node: &str, id: &str) -> anyhow::Result<(tokio::fs::File, u64)> {
    image_hex(id)?;
    let assignment = crate::assign::assignment(state, node).await?;
    let mut waiting: Vec<(String, String, u32)> = assignment
        .containers
        .iter()
        .filter(|c| c.image == id)
        .map(|c| (c.app.clone(), c.env.clone(), c.release))
        .chain(
            assignment
                .jobs
                .iter()
                .filter(|j| j.image == id)
                .map(|j| (j.app.clone(), j.env.clone(), j.release)),
        )
        .collect();
    waiting.sort();
    waiting.dedup();
    let mut statics =
        assignment.routes.iter().filter_map(|r| r.static_files.as_ref()).chain(&assignment.static_prefetch);
    if waiting.is_empty()
        && !statics.any(|s| s.image == id)
        && !assignment.keep_images.iter().any(|k| k == id)
    {
        return Err(
            DomainError::NotFound(format!("node {node} is assigned nothing that runs image {id}")).into()
        );
    }
    let Some((file, size)) = state.images.open(id).await? else {
        if let Some(registry) = state.config.registry.as_ref().filter(|_| state.images.has(id)) {
            let from = &registry.repository;
            return Err(DomainError::NotFound(format!(
                "image {id} is in the registry {from}: pull it from there"
            ))
            .into());
        }
        return Err(DomainError::NotFound(format!(
            "the control plane does not have image {id} yet; a node that has it is asked to send it"
        ))
        .into());
    };
    let line = format!(
        "Node {node} fetches image {} ({}) from the control plane",
        &id[7..19],
        protocol::bytes_human(size)
    );
    for (app, env, release) in &waiting {
        state.deploy_event(app, env, *release, "stage", std::slice::from_ref(&line)).await;
    }
    tracing::info!(node, image = %id, bytes = size, "sending an image to a node");
    Ok((file, size))
}

/// The images this node is asked to send: `kept` ones the store lacks that it built or runs,
/// when the platform has other nodes that may need them.
pub async fn wanted_from(
    state: &AppState,
    node: &str,
    nodes: usize,
    kept: &[String],
) -> anyhow::Result<Vec<String>> {
    if nodes < 2 {
        return Ok(Vec::new());
    }
    let held: std::collections::HashSet<String> =
        state.store.images_on_node(node).await?.into_iter().collect();
    // The node's own images first: `has` looks at the disk, for every image the platform keeps.
    Ok(kept.iter().filter(|id| held.contains(*id) && !state.images.has(id)).cloned().collect())
}

/// Removes tarballs no release keeps, every few minutes.
pub async fn prune(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    let stop = state.shutting_down();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state.store.kept_images().await {
            Ok(keep) => {
                let removed = state.images.prune(&keep.into_iter().collect()).await;
                if !removed.is_empty() {
                    tracing::info!(images = ?removed, "removed images no release keeps any more");
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing the images releases keep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `docker save` layout in memory: a layer, a second layer entry linking to the first (as
    /// docker save writes a repeated layer), the config listing both diff ids, the manifest.
    fn saved(layer: &[u8], diff: &str) -> (Vec<u8>, String) {
        let config =
            format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["sha256:{diff}","sha256:{diff}"]}}}}"#);
        let hex = hex::encode(Sha256::digest(config.as_bytes()));
        let manifest = format!(
            r#"[{{"Config":"{hex}.json","RepoTags":null,"Layers":["abc/layer.tar","dup/layer.tar"]}}]"#
        );
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, data).unwrap();
        };
        add("abc/layer.tar", layer);
        add(&format!("{hex}.json"), config.as_bytes());
        add("manifest.json", manifest.as_bytes());
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        tar.append_link(&mut link, "dup/layer.tar", "../abc/layer.tar").unwrap();
        (tar.into_inner().unwrap(), hex)
    }

    fn check(tar: &[u8], hex: &str) -> anyhow::Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.tar");
        std::fs::write(&path, tar).unwrap();
        verify(&path, hex)
    }

    #[test]
    fn a_saved_image_checks_against_its_id_and_a_damaged_one_does_not() {
        let layer = b"layer contents";
        let (ok, hex) = saved(layer, &hex::encode(Sha256::digest(layer)));
        check(&ok, &hex).unwrap();
        let e = check(&ok, &"0".repeat(64)).unwrap_err().to_string();
        assert!(e.contains("does not hash to its id"), "{e}");
        let (bad, hex) = saved(layer, &"1".repeat(64));
        let e = check(&bad, &hex).unwrap_err().to_string();
        assert!(e.contains("layer abc/layer.tar is damaged"), "{e}");
        assert!(check(b"not a tar at all, just text", &hex).is_err());
    }

    #[tokio::test]
    async fn a_node_cannot_upload_an_image_it_was_not_asked_for() {
        let (state, dir) = AppState::for_tests().await;
        let id = format!("sha256:{}", "a".repeat(64));
        let body = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"junk"))]);
        let e = receive(&state, "n1", &id, body).await.unwrap_err().to_string();
        assert!(e.contains("was not asked to send"), "{e}");
        assert!(!state.images.has(&id));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn ids_that_are_not_sha256_never_name_a_file() {
        assert!(image_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
        for bad in ["sha256:../../etc/passwd", "sha256:ABC", "web:1", &format!("sha256:{}", "g".repeat(64))] {
            assert!(image_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn links_resolve_inside_the_archive() {
        assert_eq!(resolve("dup/layer.tar", "../abc/layer.tar"), "abc/layer.tar");
        assert_eq!(clean("./abc//layer.tar"), "abc/layer.tar");
    }
}

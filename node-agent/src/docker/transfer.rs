//! Images between nodes without a registry. A node that must run an image its engine lacks
//! loads it from the control plane (`docker load` of the tarball as it streams in), checks
//! that the engine now has that id, and tags it `paas-node-<node>:<hex>` so this node's prune
//! knows it took it; a node asked for an image the control plane lacks sends it (`docker save`
//! by id). One fetch per image at a time, however many containers wait for it; a failed fetch
//! is tried again after a pause.
//!
//! Node-scoped images (`paas agent --node-scoped-images`, for several agents sharing one
//! engine, as the tests run them): a node counts only images under its own tag as its own and
//! runs containers from that tag, so a transfer happens exactly as between machines.
//!
//! With the platform's external registry (`Assignment::registry`) a send pushes the image as
//! `<repository>:<hex>` and a fetch pulls that tag (falling back to the control plane, which
//! may hold a tarball from before the registry was set); the pulled image must have the id
//! asked for, and the registry's tag is removed again so that the node's own tag stays the
//! only one its prune removes.

use super::{docker_message, DockerClient};
use bollard::auth::DockerCredentials;
use bollard::image::{ImportImageOptions, PushImageOptions, RemoveImageOptions, TagImageOptions};
use futures_util::future::{BoxFuture, Shared};
use futures_util::{FutureExt, StreamExt};
use protocol::client::ClientError;
use protocol::registry::Registry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A failed fetch is not tried again sooner (the control plane may be waiting for the image
/// from the node that has it).
const RETRY_AFTER: Duration = Duration::from_secs(2);

type FetchResult = Shared<BoxFuture<'static, Result<(), String>>>;

pub struct Transfers {
    client: protocol::Client,
    fetches: Mutex<HashMap<String, (FetchResult, Instant)>>,
    /// Told when a fetch ends, so the reconcile loop creates what waited for it at once.
    pub done: Arc<Notify>,
    /// The platform's registry, as the latest assignment names it.
    registry: Mutex<Option<Registry>>,
}

impl Transfers {
    pub fn new(client: protocol::Client) -> Self {
        Self { client, fetches: Mutex::default(), done: Arc::default(), registry: Mutex::default() }
    }
}

/// Keeps the registry transfers use as the assignments name it.
pub async fn follow_registry(
    docker: DockerClient,
    mut assignment: tokio::sync::watch::Receiver<Option<protocol::agent::Assignment>>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let Some(transfers) = docker.transfers.clone() else { return };
    loop {
        let registry = assignment.borrow_and_update().as_ref().and_then(|a| a.registry.clone());
        *transfers.registry.lock().unwrap_or_else(|p| p.into_inner()) = registry;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = assignment.changed() => if changed.is_err() { return },
        }
    }
}

/// Whether an image is on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Here, under this reference.
    Here(String),
    Fetching,
    /// The last fetch failed, for this reason.
    Failed(String),
}

/// The tag a node gives images it loaded (and, node-scoped, every image it runs).
pub fn node_tag(node: &str, id: &str) -> Option<(String, String)> {
    let hex = id.strip_prefix("sha256:")?;
    Some((format!("paas-node-{node}"), hex.to_string()))
}

/// The first 12 hex digits, as Docker shows an id.
pub fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

impl DockerClient {
    /// Fetches missing images from the control plane through `client`; `scoped`: see the top.
    pub fn with_transfers(mut self, client: protocol::Client, scoped: bool) -> Self {
        self.transfers = Some(Arc::new(Transfers::new(client)));
        self.scoped_images = scoped;
        self
    }

    /// Whether a listed platform image is this node's to remove, and by what reference: the
    /// node's tag on one it loaded (removing the last tag removes the image), the id of one it
    /// built.
    pub fn own_image(&self, image: &bollard::models::ImageSummary) -> Option<String> {
        let own_repo = format!("{}:", node_tag(&self.node, "sha256:")?.0);
        if let Some(tag) = image.repo_tags.iter().find(|t| t.starts_with(&own_repo)) {
            return Some(tag.clone());
        }
        (image.labels.get(protocol::labels::NODE) == Some(&self.node)).then(|| image.id.clone())
    }

    /// Told whenever an image fetch ends.
    pub fn transfers_done(&self) -> Arc<Notify> {
        self.transfers.as_ref().map(|t| t.done.clone()).unwrap_or_default()
    }

    /// What this node's containers name image `id` by.
    pub fn local_ref(&self, id: &str) -> String {
        match node_tag(&self.node, id).filter(|_| self.scoped_images) {
            Some((repo, tag)) => format!("{repo}:{tag}"),
            None => id.to_string(),
        }
    }

    /// Whether image `id` is here; when it is not, starts fetching it (once).
    pub async fn availability(&self, id: &str) -> Availability {
        let local = self.local_ref(id);
        match self.image_id(&local).await {
            Ok(Some(_)) => return Availability::Here(local),
            Ok(None) => {}
            Err(e) => return Availability::Failed(format!("{e:#}")),
        }
        let Some(fetch) = self.fetch(id) else { return Availability::Here(local) };
        match fetch.peek() {
            None => Availability::Fetching,
            Some(Ok(())) => Availability::Here(local),
            Some(Err(e)) => Availability::Failed(e.clone()),
        }
    }

    /// Image `id` under the reference containers use, fetched first when it is not here.
    pub async fn local_image(&self, id: &str) -> anyhow::Result<String> {
        let local = self.local_ref(id);
        if self.image_id(&local).await?.is_some() {
            return Ok(local);
        }
        match self.fetch(id) {
            Some(fetch) => fetch.await.map(|()| local).map_err(anyhow::Error::msg),
            // No control plane to ask: Docker says what is missing.
            None => Ok(local),
        }
    }

    /// The fetch of image `id` under way (or just ended), or a new one; `None` when this
    /// client fetches nothing, or `id` is no image id.
    fn fetch(&self, id: &str) -> Option<FetchResult> {
        let transfers = self.transfers.as_ref()?;
        node_tag(&self.node, id)?;
        let mut fetches = transfers.fetches.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((fetch, started)) = fetches.get(id) {
            // One under way, or one that failed a moment ago; one that succeeded yet left no
            // image (pruned since) is done again.
            match fetch.peek() {
                None => return Some(fetch.clone()),
                Some(Err(_)) if started.elapsed() < RETRY_AFTER => return Some(fetch.clone()),
                _ => {}
            }
        }
        let (docker, client, id_owned) = (self.clone(), transfers.client.clone(), id.to_string());
        let registry = transfers.registry.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let fetch: FetchResult = async move {
            let Some(registry) = registry else { return docker.load_from(&client, &id_owned).await };
            let Err(pull) = docker.pull_from(&registry, &id_owned).await else { return Ok(()) };
            // A tarball from before the registry was set, say; otherwise both reasons count.
            docker.load_from(&client, &id_owned).await.map_err(|load| format!("{pull}; {load}"))
        }
        .boxed()
        .shared();
        fetches.insert(id.to_string(), (fetch.clone(), Instant::now()));
        let (driven, done) = (fetch.clone(), transfers.done.clone());
        tokio::spawn(async move {
            let _ = driven.await;
            done.notify_one();
        });
        Some(fetch)
    }

    /// Loads image `id` from the control plane as it streams in, and tags it as this node's.
    async fn load_from(&self, client: &protocol::Client, id: &str) -> Result<(), String> {
        let started = Instant::now();
        let resp = client
            .fetch_image(id)
            .await
            .map_err(|e| format!("fetching image {}: {}", short(id), e.message))?;
        let size = resp.content_length().unwrap_or(0);
        tracing::info!(image = %id, bytes = size, "fetching an image from the control plane");
        // Docker takes a stream without errors: a broken transfer ends it early (the load then
        // fails on the cut archive) and says why here.
        let broke = Arc::new(Mutex::new(None::<String>));
        let broke_in = broke.clone();
        let body = resp.bytes_stream().scan((), move |_, chunk| {
            let next = match chunk {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    *broke_in.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    None
                }
            };
            std::future::ready(next)
        });
        let mut out = self.docker.import_image_stream(ImportImageOptions { quiet: true }, body, None);
        let mut failed = None;
        while let Some(item) = out.next().await {
            if let Err(e) = item {
                failed = Some(docker_message(&e));
            }
        }
        if let Some(e) = broke.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(format!("the transfer of image {} broke off: {e}", short(id)));
        }
        if let Some(e) = failed {
            return Err(format!("Docker could not load image {}: {e}", short(id)));
        }
        // The id is the digest of the image's config, and Docker checked every layer against
        // it: an engine that has this id now has exactly the image that was built.
        match self.image_id(id).await {
            Ok(Some(_)) => {}
            _ => return Err(format!("the tarball sent for image {} held another image", short(id))),
        }
        self.claim(id).await.map_err(|e| format!("{e:#}"))?;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(image = %id, bytes = size, secs, "image loaded from the control plane");
        Ok(())
    }

    /// Pulls image `id` from the platform's registry, checks it and tags it as this node's.
    async fn pull_from(&self, registry: &Registry, id: &str) -> Result<(), String> {
        let started = Instant::now();
        let reference = registry.reference(id).ok_or_else(|| format!("{id} is not an image id"))?;
        if let Err(e) = self.pull(&reference, credentials(registry)).await {
            return Err(format!("pulling image {} from {}: {e}", short(id), registry.repository));
        }
        let held = self.image_id(&reference).await.map_err(|e| format!("{e:#}"))?;
        let checked = held.as_deref() == Some(id);
        if checked {
            self.claim(id).await.map_err(|e| format!("{e:#}"))?;
        }
        self.untag(&reference).await;
        if !checked {
            return Err(format!("the registry's {reference} is another image than {}", short(id)));
        }
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(image = %id, registry = %registry.repository, secs, "image pulled from the registry");
        Ok(())
    }

    /// Pushes image `id` to the platform's registry and tells the control plane.
    async fn push_to(
        &self,
        client: &protocol::Client,
        registry: &Registry,
        id: &str,
    ) -> Result<bool, ClientError> {
        let failed = |message: String| ClientError { status: None, message };
        let started = Instant::now();
        let reference = registry.reference(id).ok_or_else(|| failed(format!("{id} is not an image id")))?;
        let tag = TagImageOptions {
            repo: registry.repository.clone(),
            tag: Registry::tag_for(id).unwrap_or_default().to_string(),
        };
        self.docker.tag_image(id, Some(tag.clone())).await.map_err(|e| {
            failed(format!("tagging image {} for the registry: {}", short(id), docker_message(&e)))
        })?;
        let opts = PushImageOptions { tag: tag.tag };
        let mut out = self.docker.push_image(&registry.repository, Some(opts), credentials(registry));
        let mut error = None;
        while let Some(item) = out.next().await {
            match item {
                Err(e) => error = Some(docker_message(&e)),
                Ok(info) => error = error.or(info.error),
            }
        }
        self.untag(&reference).await;
        if let Some(e) = error {
            return Err(failed(format!("pushing image {} to {}: {e}", short(id), registry.repository)));
        }
        client.image_pushed(id).await?;
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(image = %id, registry = %registry.repository, secs, "image pushed to the registry");
        Ok(true)
    }

    /// Removes one tag of an image, never the image under another tag.
    async fn untag(&self, reference: &str) {
        let opts = RemoveImageOptions { force: false, noprune: true };
        if let Err(e) = self.docker.remove_image(reference, Some(opts), None).await {
            tracing::debug!(reference, error = %docker_message(&e), "removing the registry's tag");
        }
    }

    /// A node-scoped node tags what it builds as its own; other nodes find their builds by
    /// the node label.
    pub async fn claim_built(&self, id: &str) -> anyhow::Result<()> {
        if self.scoped_images {
            self.claim(id).await?;
        }
        Ok(())
    }

    /// Tags image `id` as this node's (`paas-node-<node>:<hex>`).
    async fn claim(&self, id: &str) -> anyhow::Result<()> {
        let Some((repo, tag)) = node_tag(&self.node, id) else { return Ok(()) };
        let opts = TagImageOptions { repo, tag };
        self.docker
            .tag_image(id, Some(opts))
            .await
            .map_err(|e| anyhow::anyhow!("tagging image {}: {}", short(id), docker_message(&e)))
    }

    /// Sends image `id` to the control plane (`docker save` as it streams out). Returns whether
    /// the control plane kept it (false: it had it already, or this node no longer has it).
    pub async fn send_image(&self, client: &protocol::Client, id: &str) -> Result<bool, ClientError> {
        let local = self.image_id(&self.local_ref(id)).await;
        let local = local.map_err(|e| ClientError { status: None, message: format!("{e:#}") })?;
        if local.is_none() {
            tracing::info!(image = %id, "asked to send an image this node does not have");
            return Ok(false);
        }
        let registry = self
            .transfers
            .as_ref()
            .and_then(|t| t.registry.lock().unwrap_or_else(|p| p.into_inner()).clone());
        if let Some(registry) = registry {
            return self.push_to(client, &registry, id).await;
        }
        let started = Instant::now();
        let body = reqwest::Body::wrap_stream(self.docker.export_image(id));
        let stored = client.upload_image(id, body).await?["stored"].as_bool().unwrap_or(false);
        tracing::info!(image = %id, stored, secs = started.elapsed().as_secs_f64(), "image sent to the control plane");
        Ok(stored)
    }
}

/// The login for the registry; an empty one when it needs none (Docker refuses a push without
/// the header).
fn credentials(registry: &Registry) -> Option<DockerCredentials> {
    if registry.username.is_none() {
        return Some(DockerCredentials::default());
    }
    Some(DockerCredentials {
        username: registry.username.clone(),
        password: registry.password.clone(),
        serveraddress: Some(registry.server().to_string()),
        ..Default::default()
    })
}

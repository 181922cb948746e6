//! Images: builds from uploaded sources (and the PostgreSQL image), resolving image references,
//! and the pruning of old release images.

use super::{docker_message, DockerClient};
use anyhow::Context;
use bollard::image::{BuildImageOptions, CreateImageOptions};
use futures_util::StreamExt;
use std::collections::HashMap;

impl DockerClient {
    /// Builds the gzipped tar `context` with build arguments `buildargs`; every output line goes
    /// to `on_line`. Returns the image id.
    pub async fn build(
        &self,
        context: bytes::Bytes,
        tag: &str,
        image_labels: HashMap<String, String>,
        buildargs: HashMap<String, String>,
        network: Option<&str>,
        mut on_line: impl FnMut(String),
    ) -> anyhow::Result<String> {
        // Held until the image is tagged: a prune meanwhile could remove the cached layers
        // this build reuses.
        let _building = self.builds.read().await;
        // The labels go in as one Dockerfile line: through the API each would be a step.
        let rewritten = {
            let (context, labels) = (context.clone(), image_labels.clone());
            tokio::task::spawn_blocking(move || super::context::with_labels(&context, &labels)).await??
        };
        let (context, api_labels) = match rewritten {
            Some(tar) => (bytes::Bytes::from(tar), HashMap::new()),
            None => (context, image_labels.clone()),
        };
        let opts = BuildImageOptions::<String> {
            buildargs,
            dockerfile: "Dockerfile".into(),
            t: tag.to_string(),
            rm: true,
            forcerm: true,
            labels: api_labels,
            networkmode: network.unwrap_or("default").to_string(),
            ..Default::default()
        };
        let mut stream = self.docker.build_image(opts, None, Some(context));
        let mut last_error = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream.or(info.status) {
                        // Colour codes alone on a line are no line of output.
                        for line in text.lines().map(crate::lines::plain).filter(|l| !l.trim().is_empty()) {
                            on_line(line);
                        }
                    }
                    if let Some(e) = info.error {
                        on_line(e.clone());
                        last_error = Some(e);
                    }
                }
                Err(e) => {
                    let msg = docker_message(&e);
                    on_line(msg.clone());
                    last_error = Some(msg);
                    break;
                }
            }
        }
        if let Some(e) = last_error {
            anyhow::bail!("the image build failed: {}", e.trim());
        }
        let image = self.docker.inspect_image(tag).await.context("inspecting the built image")?;
        let labelled = image.config.and_then(|c| c.labels).unwrap_or_default();
        // A last line that continues (`\`) swallows the label line: prunes and purges could not
        // tell the image is this release's.
        if image_labels.iter().any(|(k, v)| labelled.get(k) != Some(v)) {
            anyhow::bail!("the image lacks the platform's labels; does the Dockerfile's last line end with a line continuation?");
        }
        image.id.ok_or_else(|| anyhow::anyhow!("the build finished but produced no image {tag}"))
    }

    /// The id of a local image, `None` when the engine does not have it.
    pub async fn image_id(&self, reference: &str) -> anyhow::Result<Option<String>> {
        match self.docker.inspect_image(reference).await {
            Ok(img) => Ok(img.id),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(e).context("inspecting an image"),
        }
    }

    /// Resolves an image reference to an id, pulling it when the engine lacks it.
    pub async fn resolve_image(
        &self,
        reference: &str,
        mut on_line: impl FnMut(String),
    ) -> anyhow::Result<String> {
        if let Some(id) = self.image_id(reference).await? {
            return Ok(id);
        }
        let _building = self.builds.read().await;
        on_line(format!("Pulling {reference}"));
        if let Err(e) = self.pull(reference, None).await {
            anyhow::bail!(pull_failure(reference, &e));
        }
        self.image_id(reference).await?.ok_or_else(|| anyhow::anyhow!("image {reference} could not be found"))
    }

    /// Pulls `reference` with this login (none: anonymous); the error is Docker's message.
    pub async fn pull(
        &self,
        reference: &str,
        login: Option<bollard::auth::DockerCredentials>,
    ) -> Result<(), String> {
        let opts = CreateImageOptions::<String> { from_image: reference.to_string(), ..Default::default() };
        let mut stream = self.docker.create_image(Some(opts), None, login);
        while let Some(item) = stream.next().await {
            item.map_err(|e| docker_message(&e))?;
        }
        Ok(())
    }
}
/// Why an image could not be pulled, in the user's terms: most often no registry is reachable
/// at all (a node without internet) or the registry does not know the name; Docker's own text
/// (a DNS error, say) is kept at the end.
fn pull_failure(reference: &str, docker: &str) -> String {
    let lower = docker.to_ascii_lowercase();
    let unreachable = [
        "no such host",
        "dial tcp",
        "lookup ",
        "i/o timeout",
        "connection refused",
        "network is unreachable",
        "server misbehaving",
    ];
    let unknown = ["not found", "manifest unknown", "pull access denied", "repository does not exist"];
    if unreachable.iter().any(|m| lower.contains(m)) {
        format!(
            "the node has no image {reference} and there is no registry it can reach to pull it from; build or load the image on the node (docker build/load), or deploy the source (Docker said: {docker})"
        )
    } else if unknown.iter().any(|m| lower.contains(m)) {
        format!("the node has no image {reference} and the registry has none of that name either (Docker said: {docker})")
    } else {
        format!("the node has no image {reference} and pulling it failed: {docker}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pull_failures_say_what_is_missing() {
        let dns =
            "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host";
        let e = super::pull_failure("web:1", dns);
        assert!(e.starts_with("the node has no image web:1 and there is no registry it can reach"), "{e}");
        let e = super::pull_failure("web:1", "manifest unknown: manifest unknown");
        assert!(e.contains("the registry has none of that name"), "{e}");
        let e = super::pull_failure("web:1", "toomanyrequests");
        assert!(e.ends_with("pulling it failed: toomanyrequests"), "{e}");
    }
}

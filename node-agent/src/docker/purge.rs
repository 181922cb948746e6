//! Removing what a deleted app left on this node (`paas apps delete --purge`): its database
//! volumes, networks and images. Only objects carrying the platform's, the app's and this
//! node's labels, and none the assignment still uses (a new app of the same name). The app's
//! containers go on their own (the reconcile and database loops stop what is unassigned); the
//! purge waits for them first, since Docker refuses to remove what a container uses.

use super::{docker_message, DockerClient, LABEL_JOB};
use bollard::errors::Error as DockerError;
use bollard::image::{ListImagesOptions, RemoveImageOptions};
use bollard::network::ListNetworksOptions;
use bollard::volume::ListVolumesOptions;
use protocol::agent::{Assignment, PurgeOutcome};
use protocol::labels;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// What the assignment still uses, which a purge never touches.
#[derive(Default)]
struct InUse {
    containers: HashSet<String>,
    jobs: HashSet<String>,
    volumes: HashSet<String>,
    networks: HashSet<String>,
    images: HashSet<String>,
}

impl InUse {
    fn of(a: &Assignment) -> Self {
        let servers = a.databases.iter().chain(a.db_tasks.iter().map(|t| &t.server));
        let mut used = Self::default();
        for c in &a.containers {
            used.containers.insert(c.name.clone());
            used.networks.insert(c.network.clone());
            used.images.insert(c.image.clone());
        }
        for j in &a.jobs {
            used.jobs.insert(j.id.clone());
            used.networks.insert(j.network.clone());
            used.images.insert(j.image.clone());
        }
        for d in servers {
            used.containers.insert(d.name.clone());
            used.volumes.insert(d.volume.clone());
            used.networks.insert(d.network.clone());
        }
        used.images.extend(a.keep_images.iter().cloned());
        used
    }
}

/// Removed when Docker removed it or it was gone already (the network sweep may come first).
fn gone<T>(result: Result<T, DockerError>) -> Result<(), String> {
    match result {
        Ok(_) | Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
        Err(e) => Err(docker_message(&e)),
    }
}

impl DockerClient {
    /// Purges `app`'s objects that `a` does not use, waiting up to `wait` for its containers
    /// to go first; what Docker still refuses to remove then is in the outcome's `left`.
    pub async fn purge(&self, app: &str, a: &Assignment, wait: Duration) -> anyhow::Result<PurgeOutcome> {
        let used = InUse::of(a);
        let (managed, node, of_app) = (
            format!("{}=true", labels::MANAGED),
            format!("{}={}", labels::NODE, self.node),
            format!("{}={app}", labels::APP),
        );
        let ours = vec![managed.clone(), node.clone(), of_app.clone()];
        // Listed before the wait: the network sweep may remove a network meanwhile, which
        // counts as removed (it is gone).
        let labels = || HashMap::from([("label", ours.iter().map(String::as_str).collect::<Vec<_>>())]);
        let volumes = self.docker.list_volumes(Some(ListVolumesOptions { filters: labels() })).await?;
        let volumes = volumes.volumes.unwrap_or_default().into_iter().map(|v| v.name);
        let volumes: Vec<String> = volumes.filter(|n| !used.volumes.contains(n)).collect();
        let filters = HashMap::from([("label".to_string(), ours.clone())]);
        let networks = self.docker.list_networks(Some(ListNetworksOptions { filters })).await?;
        let networks = networks.into_iter().filter_map(|n| n.name);
        let networks: Vec<String> = networks.filter(|n| !used.networks.contains(n)).collect();
        self.wait_for_containers(ours.clone(), &used, wait).await?;

        let mut out = PurgeOutcome::default();
        for name in volumes {
            match gone(self.docker.remove_volume(&name, None).await) {
                Ok(()) => out.volumes.push(name),
                Err(why) => out.left.push(format!("volume {name}: {why}")),
            }
        }
        for name in networks {
            match gone(self.docker.remove_network(&name).await) {
                Ok(()) => out.networks.push(name),
                Err(why) => out.left.push(format!("network {name}: {why}")),
            }
        }
        // Builds share layers: none may run while images go (as in a prune).
        let _no_builds = self.builds.write().await;
        // Images this node loaded carry their builder's node label: listed by app, then kept
        // to this node's own (`transfer`).
        let app_images = HashMap::from([("label", vec![managed.as_str(), of_app.as_str()])]);
        let opts = ListImagesOptions { filters: app_images, ..Default::default() };
        for image in
            self.docker.list_images(Some(opts)).await?.into_iter().filter(|i| !used.images.contains(&i.id))
        {
            let Some(reference) = self.own_image(&image) else { continue };
            let name = image.repo_tags.first().cloned().unwrap_or_else(|| image.id.clone());
            let opts = RemoveImageOptions { force: false, noprune: false };
            match gone(self.docker.remove_image(&reference, Some(opts), None).await) {
                Ok(()) => out.images.push(name),
                Err(why) => out.left.push(format!("image {name}: {why}")),
            }
        }
        Ok(out)
    }

    /// Waits until the app has no container left on this node but assigned ones, removing
    /// stopped ones nothing owns any more (a crashed replica, a finished job's) on the way.
    async fn wait_for_containers(
        &self,
        ours: Vec<String>,
        used: &InUse,
        wait: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            let mut running = 0;
            for c in self.labelled(ours.clone()).await? {
                let Some(name) = c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/'))
                else {
                    continue;
                };
                let job = c.labels.as_ref().and_then(|l| l.get(LABEL_JOB));
                if used.containers.contains(name) || job.is_some_and(|j| used.jobs.contains(j)) {
                    continue;
                }
                if matches!(c.state.as_deref(), Some("exited" | "created" | "dead")) {
                    let _ = self.remove(name).await;
                } else {
                    running += 1;
                }
            }
            if running == 0 || Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

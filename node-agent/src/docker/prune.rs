//! Disk hygiene on this node, only ever of objects carrying the platform's labels: stopped
//! containers nobody owns any more, release images beyond the newest few of each environment
//! (the ones the control plane names always kept), and dangling platform images. A prune holds
//! the build lock exclusively, so it never runs while a build may reuse the layers it removes.
//! Also measures what the platform's objects take on disk.

use super::{docker_message, DockerClient, LABEL_JOB};
use anyhow::Context;
use bollard::container::{InspectContainerOptions, RemoveContainerOptions};
use bollard::image::{ListImagesOptions, PruneImagesOptions, RemoveImageOptions};
use protocol::agent::{DiskUsage, PruneOutcome};
use protocol::labels;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What a prune must leave alone.
pub struct Keep<'a> {
    /// Image ids the control plane names (current, target and rollback releases).
    pub images: &'a HashSet<String>,
    /// How many of each environment's newest release images stay besides.
    pub newest: usize,
    /// Container names still assigned to this node: reconcile restarts them when they stop.
    pub containers: &'a HashSet<String>,
    /// Jobs still assigned: the job runner reads their stopped container's exit code.
    pub jobs: &'a HashSet<String>,
}

/// A release image as listed: its id, size, and the environment and release it was built for.
#[derive(Debug, Clone)]
pub struct ReleaseImage {
    pub id: String,
    /// What removing it removes: the id, or this node's tag on an image it loaded (`transfer`).
    pub reference: String,
    pub env: (String, String),
    pub release: u32,
    pub size: u64,
}

/// The release images to remove: per environment, all but the `keep.newest` newest releases,
/// never one the control plane names.
pub fn old_images<'a>(images: &'a [ReleaseImage], keep: &Keep) -> Vec<&'a ReleaseImage> {
    let mut by_env: BTreeMap<&(String, String), Vec<&ReleaseImage>> = BTreeMap::new();
    for image in images {
        by_env.entry(&image.env).or_default().push(image);
    }
    let mut old = Vec::new();
    for (_, mut list) in by_env {
        list.sort_by_key(|i| std::cmp::Reverse(i.release));
        old.extend(list.into_iter().skip(keep.newest).filter(|i| !keep.images.contains(&i.id)));
    }
    old
}

impl DockerClient {
    /// Removes what `keep` does not protect; waits for running builds to end first and holds
    /// off new ones until done. Removals Docker refuses (an image a container still uses) are
    /// skipped, not forced.
    pub async fn prune(&self, keep: &Keep<'_>) -> anyhow::Result<PruneOutcome> {
        let _no_builds = self.builds.write().await;
        let mut out = PruneOutcome::default();
        for c in self.own_containers().await? {
            let Some(name) =
                c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string())
            else {
                continue;
            };
            let labels = c.labels.unwrap_or_default();
            let stopped = matches!(c.state.as_deref(), Some("exited" | "created" | "dead"));
            let owned = match (labels.get(LABEL_JOB), labels.get(labels::ROLE)) {
                // Database servers belong to the database loop, throwaway ones to their task.
                (_, Some(_)) => true,
                // Static-file extraction: created, never started; only this process's are live.
                (Some(job), _) if job == "extract" => name.contains(&format!("-{}-", std::process::id())),
                (Some(job), _) => keep.jobs.contains(job),
                (None, None) => keep.containers.contains(&name),
            };
            if !stopped || owned {
                continue;
            }
            let opts = RemoveContainerOptions { force: false, v: true, ..Default::default() };
            match self.docker.remove_container(&name, Some(opts)).await {
                Ok(()) => out.containers.push(name),
                Err(e) => tracing::debug!(container = %name, error = %docker_message(&e), "not pruned"),
            }
        }
        let images = self.release_images().await?;
        for image in old_images(&images, keep) {
            let opts = RemoveImageOptions { force: false, noprune: false };
            match self.docker.remove_image(&image.reference, Some(opts), None).await {
                Ok(_) => {
                    out.reclaimed_bytes += image.size;
                    out.images
                        .push(format!("{}/{} v{} ({})", image.env.0, image.env.1, image.release, image.id));
                }
                Err(e) => tracing::debug!(image = %image.id, error = %docker_message(&e), "not pruned"),
            }
        }
        let (managed, node) =
            (format!("{}=true", labels::MANAGED), format!("{}={}", labels::NODE, self.node));
        let filters =
            HashMap::from([("dangling", vec!["true"]), ("label", vec![managed.as_str(), node.as_str()])]);
        let dangling = self
            .docker
            .prune_images(Some(PruneImagesOptions { filters }))
            .await
            .map_err(|e| anyhow::anyhow!("pruning dangling images: {}", docker_message(&e)))?;
        out.reclaimed_bytes += dangling.space_reclaimed.unwrap_or(0).max(0) as u64;
        for deleted in dangling.images_deleted.unwrap_or_default() {
            out.images.extend(deleted.deleted);
        }
        Ok(out)
    }

    /// Images this node built for a release (they carry app, env, release and node labels; an
    /// engine may serve several nodes, whose images are theirs to prune) or loaded from the
    /// control plane (they carry the builder's labels and this node's tag).
    async fn release_images(&self) -> anyhow::Result<Vec<ReleaseImage>> {
        let managed = format!("{}=true", labels::MANAGED);
        let filters = HashMap::from([("label", vec![managed.as_str()])]);
        let list = self
            .docker
            .list_images(Some(ListImagesOptions { filters, ..Default::default() }))
            .await
            .context("listing images")?;
        Ok(list
            .into_iter()
            .filter_map(|i| {
                let label = |k| i.labels.get(k).cloned();
                let reference = self.own_image(&i)?;
                Some(ReleaseImage {
                    env: (label(labels::APP)?, label(labels::ENV)?),
                    release: label(labels::RELEASE)?.parse().ok()?,
                    size: i.size.max(0) as u64,
                    reference,
                    id: i.id,
                })
            })
            .collect())
    }

    /// What the platform's images, volumes and container logs take on disk. `volumes` is the
    /// last figure known: Docker 20.10 (API 1.41) tells a volume's size only in `df`, which also
    /// sizes every container on the engine and can take minutes on a busy one, so a slow or
    /// failed `df` keeps it.
    pub async fn disk_usage(&self, volumes: u64) -> anyhow::Result<DiskUsage> {
        let managed = format!("{}=true", labels::MANAGED);
        let filters = HashMap::from([("label", vec![managed.as_str()])]);
        let images = self
            .docker
            .list_images(Some(ListImagesOptions { filters, ..Default::default() }))
            .await
            .map_err(|e| anyhow::anyhow!("listing images: {}", docker_message(&e)))?
            .iter()
            .map(|i| i.size.max(0) as u64)
            .sum();
        let ours = |l: &HashMap<String, String>| l.get(labels::MANAGED).is_some_and(|v| v == "true");
        let volumes = match tokio::time::timeout(std::time::Duration::from_secs(20), self.docker.df()).await {
            Ok(Ok(df)) => df
                .volumes
                .unwrap_or_default()
                .iter()
                .filter(|v| ours(&v.labels))
                .filter_map(|v| v.usage_data.as_ref())
                .map(|u| u.size.max(0) as u64)
                .sum(),
            _ => volumes,
        };
        let node = format!("{}={}", labels::NODE, self.node);
        let mut logs = Some(0u64);
        for c in self.labelled(vec![managed.clone(), node]).await? {
            let Some(id) = c.id else { continue };
            let info = self.docker.inspect_container(&id, None::<InspectContainerOptions>).await;
            let Some(path) = info.ok().and_then(|i| i.log_path).filter(|p| !p.is_empty()) else { continue };
            // The engine's directory is usually root's: then the agent cannot tell.
            let rotated = (1..=3).map(|n| format!("{path}.{n}"));
            let size: Option<u64> = std::iter::once(path.clone())
                .chain(rotated)
                .map(|p| match std::fs::metadata(&p) {
                    Ok(m) => Some(m.len()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
                    Err(_) => None,
                })
                .sum();
            logs = logs.zip(size).map(|(a, b)| a + b);
        }
        Ok(DiskUsage { images, volumes, logs, backups: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, env: &str, release: u32) -> ReleaseImage {
        ReleaseImage {
            id: id.into(),
            reference: id.into(),
            env: ("app".into(), env.into()),
            release,
            size: 1,
        }
    }

    #[test]
    fn keeps_the_newest_per_environment_and_what_the_control_plane_names() {
        let images: Vec<_> =
            (1..=8).map(|n| image(&format!("p{n}"), "prod", n)).chain([image("s1", "staging", 1)]).collect();
        let named = HashSet::from(["p1".to_string()]);
        let none = HashSet::new();
        let keep = Keep { images: &named, newest: 5, containers: &none, jobs: &none };
        let mut old: Vec<_> = old_images(&images, &keep).iter().map(|i| i.id.clone()).collect();
        old.sort();
        // p4..p8 are the newest five, p1 is named (say, the image a rollback serves).
        assert_eq!(old, ["p2", "p3"]);
    }
}

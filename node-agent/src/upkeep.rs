//! Disk upkeep on this node: prunes when the control plane asks (`paas nodes prune`) and every
//! `prune_every`, purges what deleted apps left when asked (`paas apps delete --purge`), and
//! measures what the platform's objects take on disk for the reports.

use crate::docker::prune::Keep;
use crate::docker::DockerClient;
use protocol::agent::{Assignment, DiskUsage, NodeReport, PruneOutcome, Purge, PurgeOutcome};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often disk use is measured (Docker's `df` walks every image and volume).
const MEASURE_EVERY: Duration = Duration::from_secs(300);
/// After a failed measurement (Docker busy or away): soon again, not in five minutes.
const RETRY_MEASURE: Duration = Duration::from_secs(15);
/// How long a purge waits for the deleted app's containers to stop (they drain first).
const PURGE_WAIT: Duration = Duration::from_secs(90);
/// Purge outcomes kept for the reports (the control plane takes each once).
const PURGES_KEPT: usize = 20;

/// What the reports carry from upkeep: the latest disk figures and prune outcome.
#[derive(Clone, Default)]
pub struct Upkeep {
    latest: Arc<Mutex<(Option<DiskUsage>, Option<PruneOutcome>)>>,
    /// Outcomes of the latest purges, newest last.
    purged: Arc<Mutex<Vec<PurgeOutcome>>>,
    /// Wakes the reporter when a prune finished, so `paas nodes prune` learns at once.
    pub changed: Arc<Notify>,
}

pub struct Settings {
    /// Newest release images kept per environment besides those the control plane names.
    pub keep_images: usize,
    /// Time between unrequested prunes; `None`: only when asked.
    pub prune_every: Option<Duration>,
}

impl Upkeep {
    /// Puts the latest figures into a report.
    pub fn fill(&self, report: &mut NodeReport) {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        (report.disk, report.pruned) = latest.clone();
        report.purged = self.purged.lock().unwrap_or_else(|p| p.into_inner()).clone();
    }

    pub async fn run(
        self,
        docker: DockerClient,
        settings: Settings,
        mut assignment: watch::Receiver<Option<Assignment>>,
        shutdown: CancellationToken,
    ) {
        let far = Duration::from_secs(365 * 24 * 3600);
        let mut next_prune = Instant::now() + settings.prune_every.unwrap_or(far);
        let mut next_measure = Instant::now();
        let mut served = 0u64;
        loop {
            let current = assignment.borrow_and_update().clone();
            // Nothing is pruned before the first assignment: until then the agent cannot tell
            // what is still wanted.
            if let Some(a) = current.filter(|a| a.prune > served || Instant::now() >= next_prune) {
                let mut outcome = prune(&docker, &a, settings.keep_images).await;
                if a.prune > served {
                    outcome.request = a.prune;
                    served = a.prune;
                }
                next_prune = Instant::now() + settings.prune_every.unwrap_or(far);
                next_measure = Instant::now();
                self.latest.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(outcome);
            }
            // Read apart from the `if`: a borrow held across the purge would block the sender.
            let latest = assignment.borrow().clone();
            if let Some(a) = latest {
                self.purge_asked(&docker, &a).await;
            }
            if Instant::now() >= next_measure {
                let volumes =
                    self.latest.lock().unwrap_or_else(|p| p.into_inner()).0.as_ref().map_or(0, |d| d.volumes);
                next_measure = Instant::now() + MEASURE_EVERY;
                match docker.disk_usage(volumes).await {
                    Ok(disk) => self.latest.lock().unwrap_or_else(|p| p.into_inner()).0 = Some(disk),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "measuring disk use failed");
                        next_measure = Instant::now() + RETRY_MEASURE;
                    }
                }
                self.changed.notify_one();
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = assignment.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(next_prune.min(next_measure)) => {}
            }
        }
    }
}

impl Upkeep {
    /// Runs the purges `a` asks for that have no outcome yet, one at a time.
    async fn purge_asked(&self, docker: &DockerClient, a: &Assignment) {
        let done =
            |p: &Purge| self.purged.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|o| o.id == p.id);
        for p in a.purges.iter().filter(|p| !done(p)) {
            let outcome = match docker.purge(&p.app, a, PURGE_WAIT).await {
                Ok(outcome) => {
                    tracing::info!(app = %p.app, volumes = ?outcome.volumes, networks = ?outcome.networks, images = ?outcome.images, left = ?outcome.left, "purged a deleted app");
                    PurgeOutcome { id: p.id, ..outcome }
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    tracing::warn!(app = %p.app, %error, "purging a deleted app failed");
                    PurgeOutcome {
                        id: p.id,
                        left: vec![format!("everything: {error}")],
                        ..Default::default()
                    }
                }
            };
            let mut purged = self.purged.lock().unwrap_or_else(|e| e.into_inner());
            purged.push(outcome);
            let excess = purged.len().saturating_sub(PURGES_KEPT);
            purged.drain(..excess);
            drop(purged);
            self.changed.notify_one();
        }
    }
}

async fn prune(docker: &DockerClient, a: &Assignment, keep_images: usize) -> PruneOutcome {
    let images: HashSet<String> = a.keep_images.iter().cloned().collect();
    let containers: HashSet<String> = a.containers.iter().map(|c| c.name.clone()).collect();
    let jobs: HashSet<String> = a.jobs.iter().map(|j| j.id.clone()).collect();
    let keep = Keep { images: &images, newest: keep_images, containers: &containers, jobs: &jobs };
    match docker.prune(&keep).await {
        Ok(outcome) => {
            tracing::info!(
                images = outcome.images.len(),
                containers = outcome.containers.len(),
                reclaimed_bytes = outcome.reclaimed_bytes,
                "pruned"
            );
            outcome
        }
        Err(e) => {
            let error = format!("{e:#}");
            tracing::warn!(%error, "pruning failed");
            PruneOutcome { error: Some(error), ..Default::default() }
        }
    }
}

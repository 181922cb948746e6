//! The agent's link to the control plane: registration, the long-polled assignment watch, and
//! reports. When the control plane is away the agent keeps its last assignment and routes.

use crate::credential::Identity;
use crate::ingress::IngressHandle;
use protocol::agent::{Assignment, NodeReport, RegisterNode, Route, TlsCertificate};
use protocol::Client;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long one watch blocks on the server; below the node-ready window so it doubles as the
/// heartbeat.
const WATCH_WAIT: Duration = Duration::from_secs(20);
/// Reports go out on change, and at least this often as a heartbeat (deploys wait for a fresh
/// one at the end of their stability window).
const REPORT_EVERY: Duration = Duration::from_secs(1);

pub struct Syncer {
    pub client: Client,
    pub identity: Arc<Identity>,
    pub registration: RegisterNode,
    pub routes: IngressHandle,
    pub cache: PathBuf,
    pub certs_cache: PathBuf,
    pub assignment: watch::Sender<Option<Assignment>>,
    /// The state index of the latest assignment, raised only after the assignment itself is
    /// sent: whoever reads it before the assignment holds an assignment at least that new.
    pub assignment_index: Arc<std::sync::atomic::AtomicU64>,
    /// When the control plane was last heard: the lease of database primaries.
    pub contact: crate::databases::Contact,
    pub statics: crate::statics::Statics,
    pub upkeep: crate::upkeep::Upkeep,
}

pub fn load_routes(path: &Path) -> Option<Vec<Route>> {
    load(path)
}

pub fn load_certificates(path: &Path) -> Option<Vec<TlsCertificate>> {
    load(path)
}

fn load<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn save_routes(path: &Path, routes: &[Route]) {
    save(path, routes, "the route table");
}

/// Kept so HTTPS works at once after a restart, like the route table. They hold private keys:
/// the file is the owner's only, in the owner's only state directory.
fn save_certificates(path: &Path, certs: &[TlsCertificate]) {
    save(path, certs, "the certificates");
}

fn save<T: serde::Serialize + ?Sized>(path: &Path, value: &T, what: &str) {
    let ok = serde_json::to_vec(value).ok().and_then(|b| protocol::files::write_private(path, &b).ok());
    if ok.is_none() {
        tracing::warn!(path = %path.display(), "could not cache {what}");
    }
}

impl Syncer {
    pub async fn run(self: Arc<Self>, reports: watch::Receiver<NodeReport>, shutdown: CancellationToken) {
        self.register(&shutdown).await;
        let reporter = tokio::spawn(self.clone().report_loop(reports, shutdown.clone()));
        let mut index = 0u64;
        let mut backoff = Duration::from_millis(250);
        let node = self.registration.name.clone();
        loop {
            let watch = self.client.watch(&node, index, WATCH_WAIT);
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = watch => r,
            };
            match result {
                Ok(resp) => {
                    let now = crate::databases::now_ms();
                    self.contact.heard.store(now, std::sync::atomic::Ordering::Release);
                    backoff = Duration::from_millis(250);
                    index = resp.index;
                    let a = resp.assignment;
                    if self.registration.ingress {
                        self.statics.ensure(&a.routes, &a.static_prefetch);
                    }
                    // Routes first: old containers are only removed after the switch.
                    if self.registration.ingress && self.routes.routes() != a.routes {
                        tracing::info!(index, routes = a.routes.len(), "applying a new route table");
                        self.routes.set_routes(&a.routes);
                        save_routes(&self.cache, &a.routes);
                    }
                    if self.registration.ingress {
                        self.routes.set_challenges(&a.acme_challenges);
                    }
                    if self.registration.ingress && self.routes.certificates() != a.certificates {
                        tracing::info!(
                            index,
                            certificates = a.certificates.len(),
                            "applying new certificates"
                        );
                        self.routes.set_certificates(&a.certificates);
                        save_certificates(&self.certs_cache, &a.certificates);
                    }
                    self.assignment.send_if_modified(|cur| {
                        let changed = cur.as_ref() != Some(&a);
                        *cur = Some(a);
                        changed
                    });
                    self.assignment_index.store(index, std::sync::atomic::Ordering::Release);
                    self.contact.assigned.store(now, std::sync::atomic::Ordering::Release);
                }
                Err(e) => {
                    if matches!(e.status, Some(401 | 404)) {
                        // The control plane lost us (node or credential unknown): register
                        // again, joining again if the credential is no longer valid.
                        self.register(&shutdown).await;
                        index = 0;
                        continue;
                    }
                    tracing::warn!(error = %e, "watching the assignment failed; keeping the last one");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        reporter.abort();
    }

    async fn register(&self, shutdown: &CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            // A refusal (401/403) needs a person, so it is retried slowly; anything else is
            // the control plane being away.
            let mut most = Duration::from_secs(5);
            match self.identity.register(&self.registration).await {
                Ok(()) => {
                    tracing::info!(node = %self.registration.name, "registered with the control plane");
                    return;
                }
                Err(e) if matches!(e.status, Some(401 | 403)) => most = Duration::from_secs(30),
                Err(e) => tracing::warn!(error = %e, "registering with the control plane failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(most);
        }
    }

    /// Sends the node's report whenever it changes, and at least every [`REPORT_EVERY`].
    async fn report_loop(self: Arc<Self>, mut rx: watch::Receiver<NodeReport>, stop: CancellationToken) {
        loop {
            let mut report = rx.borrow_and_update().clone();
            report.static_ready = self.statics.ready_keys();
            self.upkeep.fill(&mut report);
            crate::lines::fit_report(&mut report, protocol::agent::MAX_BODY_BYTES);
            let sent = self.client.report(&self.registration.name, &report).await;
            if sent.is_ok() {
                self.contact.heard.store(crate::databases::now_ms(), std::sync::atomic::Ordering::Release);
            }
            if let Err(e) = sent {
                if e.status == Some(404) {
                    let _ = self.identity.register(&self.registration).await;
                }
                tracing::debug!(error = %e, "sending the node report failed");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = rx.changed() => {}
                _ = self.statics.changed.notified() => {}
                _ = self.upkeep.changed.notified() => {}
                _ = tokio::time::sleep(REPORT_EVERY) => {}
            }
        }
    }
}

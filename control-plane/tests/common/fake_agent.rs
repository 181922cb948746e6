//! A fake node agent: speaks `/agent/v1` as node-agent/src/sync.rs does (joins with a one-time
//! join token, checking the CA against it, and then uses its certificate, long-polls its assignment and acknowledges each
//! state index by watching past it, reports its containers every 100 ms and on change, resolves
//! image builds) but runs nothing: an assigned container "runs" at once on a port of its own and
//! is healthy unless the test's [`Script`] says otherwise; an unassigned one is gone at once.

use protocol::agent::{Assignment, BuildKind, BuildResult, ContainerStatus, NodeReport, RegisterNode};
use protocol::tls::{agent_http, fetch_ca, JoinToken, NodeCertificate, NodeKey};
use protocol::Client;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The private address the fake publishes its containers on.
pub const ADDR: &str = "127.0.0.1";
/// How long one watch blocks on the control plane; short, because a graceful stop lets long
/// polls in flight finish first.
const WATCH_WAIT: Duration = Duration::from_secs(1);
/// Reports go out on change and at least this often (the real agent: every second).
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// What the test makes the fake do; changed while it runs with [`FakeAgent::script`].
#[derive(Debug, Default)]
pub struct Script {
    /// Builds are not resolved while set.
    pub hold_builds: bool,
    /// Replicas of these releases run but never pass their health check.
    pub unhealthy: HashSet<u32>,
    /// No watch is sent while set: the fake applies nothing new and acknowledges no state
    /// index (as an ingress that lost the control plane), while it goes on reporting.
    pub deaf: bool,
}

/// A container the fake "runs".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub release: u32,
    pub process: String,
    pub port: u16,
}

/// What the fake has applied: the latest assignment and what runs because of it.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub index: u64,
    pub assignment: Assignment,
    pub running: BTreeMap<String, Running>,
}

struct Shared {
    name: String,
    /// The key made at join, and the certificate and CA it got.
    key: NodeKey,
    cert: NodeCertificate,
    /// Replaced when the control plane comes back on another address.
    client: RwLock<Client>,
    script: Mutex<Script>,
    applied: watch::Sender<Applied>,
    /// Every assignment applied, in order, for invariants over the whole run.
    history: Mutex<Vec<Applied>>,
    next_port: Mutex<u16>,
}

pub struct FakeAgent {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeAgent {
    /// Joins the control plane at `url` as ingress node `name` and runs until dropped; returns
    /// once the first assignment is applied (the node is then ready for work).
    pub async fn join(url: &str, join_token: &str, name: &str) -> Self {
        let token = JoinToken::parse(join_token).expect("a join token");
        let ca = fetch_ca(url, &token.ca_sha256).await.expect("the CA the token names");
        let key = NodeKey::generate().expect("a node key");
        let joining = Client::with_http(url, "", agent_http(&ca, None).expect("a TLS client"));
        let registration = RegisterNode::new(name, ADDR, true);
        let cert = joining.join(&token, &registration, &key).await.expect("joining with the join token");
        let client =
            Client::with_http(url, "", agent_http(&cert.ca, Some((&key, &cert.certificate))).unwrap());
        let shared = Arc::new(Shared {
            name: name.to_string(),
            key,
            cert,
            client: RwLock::new(client),
            script: Mutex::default(),
            applied: watch::channel(Applied::default()).0,
            history: Mutex::default(),
            next_port: Mutex::new(20_000),
        });
        let stop = CancellationToken::new();
        tokio::spawn(watch_loop(shared.clone(), stop.clone()));
        tokio::spawn(report_loop(shared.clone(), stop.clone()));
        let mut applied = shared.applied.subscribe();
        applied.wait_for(|a| a.index != 0).await.expect("the fake agent runs");
        Self { shared, stop }
    }

    /// Talks to the control plane at `url` (its agent address) from now on, with the
    /// certificate it holds.
    pub fn reconnect(&self, url: &str) {
        let (key, cert) = (&self.shared.key, &self.shared.cert);
        let http = agent_http(&cert.ca, Some((key, &cert.certificate))).unwrap();
        *self.shared.client.write().unwrap() = Client::with_http(url, "", http);
    }

    /// The agent API client with this node's certificate, for calls the fake makes on a
    /// test's behalf (shipping logs).
    #[allow(dead_code)] // Only the logs tests ship; each test file compiles this module anew.
    pub fn client(&self) -> Client {
        self.shared.client.read().unwrap().clone()
    }

    pub fn script<R>(&self, change: impl FnOnce(&mut Script) -> R) -> R {
        change(&mut self.shared.script.lock().unwrap())
    }

    pub fn applied(&self) -> Applied {
        self.shared.applied.borrow().clone()
    }

    pub fn history(&self) -> Vec<Applied> {
        self.shared.history.lock().unwrap().clone()
    }

    /// Waits (at most 8 s) until what the fake applied satisfies `ok`.
    pub async fn wait_applied(&self, what: &str, ok: impl FnMut(&Applied) -> bool) -> Applied {
        let mut rx = self.shared.applied.subscribe();
        let applied = match tokio::time::timeout(Duration::from_secs(8), rx.wait_for(ok)).await {
            Ok(a) => a.expect("the fake agent runs").clone(),
            Err(_) => panic!("timed out waiting for the fake agent to apply {what}: {:#?}", self.applied()),
        };
        applied
    }
}

async fn watch_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut index = 0u64;
    while !stop.is_cancelled() {
        if shared.script.lock().unwrap().deaf {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let client = shared.client.read().unwrap().clone();
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = client.watch(&shared.name, index, WATCH_WAIT) => a,
        };
        match answer {
            Ok(resp) => {
                index = resp.index;
                apply(&shared, resp.index, resp.assignment);
            }
            // The control plane is away (restarting): keep the last assignment, as the real
            // agent does, and ask again.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Runs what is assigned and nothing else.
fn apply(shared: &Shared, index: u64, assignment: Assignment) {
    let mut next_port = shared.next_port.lock().unwrap();
    shared.applied.send_modify(|a| {
        a.running.retain(|name, _| assignment.containers.iter().any(|c| &c.name == name));
        for c in &assignment.containers {
            a.running.entry(c.name.clone()).or_insert_with(|| {
                *next_port += 1;
                Running { release: c.release, process: c.process.clone(), port: *next_port }
            });
        }
        a.index = index;
        a.assignment = assignment;
        shared.history.lock().unwrap().push(a.clone());
    });
}

async fn report_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut changes = shared.applied.subscribe();
    let mut resolved = HashSet::new();
    while !stop.is_cancelled() {
        let client = shared.client.read().unwrap().clone();
        let applied = changes.borrow_and_update().clone();
        let (hold_builds, unhealthy) = {
            let s = shared.script.lock().unwrap();
            (s.hold_builds, s.unhealthy.clone())
        };
        for b in applied.assignment.builds.iter().filter(|_| !hold_builds) {
            if resolved.contains(&(b.app.clone(), b.env.clone(), b.release)) {
                continue;
            }
            let reference = match &b.kind {
                BuildKind::Image { reference } => reference.clone(),
                BuildKind::Dockerfile => b.tag.clone(),
            };
            let image_id = format!("sha256:{}", hex::encode(Sha256::digest(reference.as_bytes())));
            let result = BuildResult { image_id: Some(image_id), error: None };
            if client.build_result(b, &result).await.is_ok() {
                resolved.insert((b.app.clone(), b.env.clone(), b.release));
            }
        }
        let containers = applied
            .running
            .iter()
            .map(|(name, r)| {
                let healthy = !unhealthy.contains(&r.release);
                ContainerStatus {
                    name: name.clone(),
                    state: "running".into(),
                    healthy,
                    host_port: Some(r.port),
                    restarts: 0,
                    log_tail: if healthy {
                        Vec::new()
                    } else {
                        vec![format!("fake agent: v{} never answers its health check", r.release)]
                    },
                    db: None,
                    exit_code: None,
                }
            })
            .collect();
        let report = NodeReport {
            containers,
            observed_at_ms: unix_ms(),
            volumes: Some(Vec::new()),
            ..NodeReport::default()
        };
        // Refused while the control plane is away; the next round sends a fresh one.
        let _ = client.report(&shared.name, &report).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = changes.changed() => {}
            _ = tokio::time::sleep(REPORT_EVERY) => {}
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

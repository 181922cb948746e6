//! This node's identity towards the control plane: a key made here (it never leaves the node),
//! the certificate the control plane's CA signed for it, and the CA itself, kept together in
//! the state directory (`node-identity.json`, 0600, written atomically) across restarts.
//!
//! A new node joins once with a one-time join token: it fetches the CA from the agent address
//! and keeps it only if its hash is the one in the token, then sends its public key (with a
//! signature proving it holds the private key) and gets its certificate. Every call after that
//! is mutual TLS. When a third of the certificate's lifetime is left, the agent makes a new key
//! and renews over its current connection. The agent's client is shared by all its tasks, so
//! installing a certificate here switches every task at once.

use protocol::agent::RegisterNode;
use protocol::tls::{agent_http, fetch_ca, JoinToken, NodeCertificate, NodeKey};
use protocol::{Client, ClientError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A key and certificate issued in-process (`paas up`), which replace the stored ones.
#[derive(Debug, Clone)]
pub struct GivenIdentity {
    pub key_pem: String,
    pub certificate: NodeCertificate,
}

/// The identity file: which node it belongs to, so a state directory reused under another node
/// name joins afresh instead of presenting another node's certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    node: String,
    key: String,
    certificate: String,
    ca: String,
    /// Unix seconds, by this node's clock: when the certificate came, and when it ends.
    received_at: i64,
    not_after: i64,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Whether a certificate received at `received_at` and valid until `not_after` is due for
/// renewal at `now`: once a third of its lifetime is left.
fn renewal_due(received_at: i64, not_after: i64, now: i64) -> bool {
    now >= not_after - (not_after - received_at) / 3
}

fn refused(message: String) -> ClientError {
    ClientError { status: Some(401), message }
}

pub struct Identity {
    client: Client,
    join_token: Option<JoinToken>,
    file: PathBuf,
    node: String,
    current: Mutex<Option<Stored>>,
    /// One registration or renewal at a time: the watch and report loops may both find they
    /// need one.
    lock: tokio::sync::Mutex<()>,
}

impl Identity {
    /// Starts with `given` (from `paas up`), else the identity stored for `node`, else none
    /// (the join token joins the node first). A malformed join token fails the start.
    pub fn new(
        client: Client,
        join_token: Option<String>,
        file: PathBuf,
        node: &str,
        given: Option<GivenIdentity>,
    ) -> anyhow::Result<Self> {
        let join_token =
            join_token.filter(|t| !t.trim().is_empty()).map(|t| JoinToken::parse(&t)).transpose();
        let join_token = join_token.map_err(|e| anyhow::anyhow!("--join-token: {e}"))?;
        let id = Self {
            client,
            join_token,
            file,
            node: node.to_string(),
            current: Mutex::new(None),
            lock: Default::default(),
        };
        let stored = std::fs::read(&id.file).ok().and_then(|b| serde_json::from_slice::<Stored>(&b).ok());
        match (given, stored) {
            (Some(g), _) => id
                .install(g.key_pem, g.certificate)
                .map_err(|e| anyhow::anyhow!("the node certificate: {e}"))?,
            (None, Some(s)) if s.node == node => {
                if let Err(e) = id.switch(s) {
                    tracing::error!(error = %e, "the stored node identity cannot be used; joining again");
                }
            }
            (None, Some(s)) => tracing::info!(
                node,
                stored_for = %s.node,
                "the stored identity belongs to another node name; joining with the join token"
            ),
            (None, None) => {}
        }
        Ok(id)
    }

    fn has_identity(&self) -> bool {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Uses `stored` from now on (every clone of the client), and keeps it for the next start.
    fn switch(&self, stored: Stored) -> Result<(), ClientError> {
        let key = NodeKey::from_pem(&stored.key).map_err(|message| ClientError { status: None, message })?;
        self.client.set_http(agent_http(&stored.ca, Some((&key, &stored.certificate)))?);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(stored);
        Ok(())
    }

    fn install(&self, key_pem: String, cert: NodeCertificate) -> Result<(), ClientError> {
        let stored = Stored {
            node: self.node.clone(),
            key: key_pem,
            certificate: cert.certificate,
            ca: cert.ca,
            received_at: unix_now(),
            not_after: cert.not_after,
        };
        self.switch(stored.clone())?;
        save(&self.file, &stored);
        Ok(())
    }

    /// Registers the node: with its certificate when it has a valid one; by joining with the
    /// join token when it has none, or the control plane no longer accepts it (the node was
    /// removed, or the certificate expired while the agent was away).
    pub async fn register(&self, registration: &RegisterNode) -> Result<(), ClientError> {
        let _one = self.lock.lock().await;
        let node = &registration.name;
        let expired = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|s| s.not_after <= unix_now());
        if expired == Some(true) {
            tracing::error!(node = %node, "this node's certificate has expired (the agent was away too long to renew it); joining again");
            *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        if self.has_identity() {
            match self.client.register(registration).await {
                Ok(_) => return Ok(()),
                Err(e) if e.status == Some(401) => {
                    tracing::error!(
                        node = %node,
                        error = %e,
                        "the control plane refused this node's certificate: the node was removed or the control plane's data was reset"
                    );
                    *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                Err(e) => return Err(e),
            }
        }
        let Some(token) = &self.join_token else {
            tracing::error!(node = %node, "this node has no valid certificate and no join token: make one with `paas nodes token` and pass it with --join-token");
            return Err(refused("this node has no valid certificate and no join token to join with".into()));
        };
        let base = self.client.base().to_string();
        let ca = fetch_ca(&base, &token.ca_sha256).await?;
        let key = NodeKey::generate().map_err(|message| ClientError { status: None, message })?;
        let joining = Client::with_http(&base, "", agent_http(&ca, None)?);
        let cert = match joining.join(token, registration, &key).await {
            Ok(cert) => cert,
            Err(e) => {
                if matches!(e.status, Some(401 | 403)) {
                    tracing::error!(
                        node = %node,
                        error = %e,
                        "joining the control plane was refused: this node gets no assignment until it has a fresh join token (paas nodes token) and a node name that is free"
                    );
                }
                return Err(e);
            }
        };
        self.install(key.pem().to_string(), cert)?;
        tracing::info!(node = %node, "joined the control plane; the node's key and certificate are kept in the state directory");
        Ok(())
    }

    /// Renews the certificate when it is due, with a new key, over the current one.
    async fn renew_if_due(&self) -> Result<(), ClientError> {
        let _one = self.lock.lock().await;
        let due = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|s| renewal_due(s.received_at, s.not_after, unix_now()));
        if !due {
            return Ok(());
        }
        let key = NodeKey::generate().map_err(|message| ClientError { status: None, message })?;
        let cert = self.client.renew_certificate(&self.node, &key).await?;
        self.install(key.pem().to_string(), cert)?;
        tracing::info!(node = %self.node, "renewed this node's certificate");
        Ok(())
    }

    /// Checks for a due renewal now and then (often enough for short test lifetimes) until
    /// `shutdown`; a failed renewal is tried again at the next check.
    pub async fn renew_loop(&self, shutdown: CancellationToken) {
        loop {
            // Until the node has joined, look again soon: the first certificate's lifetime
            // sets the pace.
            let every = {
                let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
                let lifetime = current.as_ref().map(|s| s.not_after - s.received_at).unwrap_or(20);
                Duration::from_secs((lifetime / 20).clamp(1, 3600) as u64)
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.renew_if_due().await {
                tracing::warn!(node = %self.node, error = %e, "renewing this node's certificate failed; trying again");
            }
        }
    }
}

/// Keeps the identity for the next start; if that fails the agent still runs with it now, and
/// the error says why a restart would have to join again.
fn save(file: &std::path::Path, stored: &Stored) {
    let bytes = serde_json::to_vec(stored).expect("strings and numbers serialise");
    if let Err(e) = protocol::files::write_private(file, &bytes) {
        tracing::error!(
            path = %file.display(),
            error = %e,
            "could not keep the node's key and certificate; after a restart this node cannot prove who it is"
        );
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A certificate rcgen signs itself: the client only needs it to parse.
    fn given() -> GivenIdentity {
        let key = NodeKey::generate().unwrap();
        let pair = rcgen::KeyPair::from_pem(key.pem()).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&pair).unwrap();
        let certificate =
            NodeCertificate { certificate: cert.pem(), ca: cert.pem(), not_after: unix_now() + 3600 };
        GivenIdentity { key_pem: key.pem().to_string(), certificate }
    }

    #[test]
    fn the_stored_identity_is_private_and_only_used_for_its_own_node() {
        let dir = std::env::temp_dir().join(format!("paas-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node-identity.json");
        let client = Client::new("https://127.0.0.1:9", "");
        let id = Identity::new(client.clone(), None, file.clone(), "a", Some(given())).unwrap();
        assert!(id.has_identity());
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        // Restarted as the same node: the stored identity is used.
        let again = Identity::new(client.clone(), None, file.clone(), "a", None).unwrap();
        assert!(again.has_identity());
        // Under another node name: it is not presented; the node joins afresh.
        let other = Identity::new(client.clone(), None, file, "b", None).unwrap();
        assert!(!other.has_identity());
        // A malformed join token stops the agent at start, with the way to get a good one.
        let bad = Identity::new(client, Some("paas_old-agent-token".into()), dir.join("x"), "c", None);
        assert!(bad.err().unwrap().to_string().contains("paas nodes token"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn renewal_is_due_when_a_third_of_the_lifetime_is_left() {
        let (received, end) = (1_000, 1_000 + 30 * 86_400);
        assert!(!renewal_due(received, end, received));
        assert!(!renewal_due(received, end, end - 10 * 86_400 - 1));
        assert!(renewal_due(received, end, end - 10 * 86_400));
        assert!(renewal_due(received, end, end + 1));
    }
}

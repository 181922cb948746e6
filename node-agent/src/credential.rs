//! This node's identity towards the control plane. The join token registers the node once and
//! brings back the node's own credential, which is kept in the state directory (0600, written
//! atomically) and used for everything from then on, across restarts. The agent's client is
//! shared by all its tasks, so swapping its token here switches every task at once.

use protocol::agent::RegisterNode;
use protocol::{Client, ClientError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// The credential file: which node it belongs to, so a state directory reused under another
/// node name joins afresh instead of presenting another node's credential.
#[derive(Serialize, Deserialize)]
struct Stored {
    node: String,
    credential: String,
}

pub struct Identity {
    client: Client,
    join_token: Option<String>,
    file: PathBuf,
    /// Whether the client's token is this node's credential (else it is the join token).
    has_credential: AtomicBool,
    /// One registration at a time: the watch and report loops may both find they need one.
    lock: tokio::sync::Mutex<()>,
}

impl Identity {
    /// Picks the credential to start with: `given` (from `paas up`, which issued it in-process),
    /// else the one stored for `node`, else none (the join token registers the node first).
    pub fn new(
        client: Client,
        join_token: Option<String>,
        file: PathBuf,
        node: &str,
        given: Option<String>,
    ) -> Self {
        let stored = std::fs::read(&file).ok().and_then(|b| serde_json::from_slice::<Stored>(&b).ok());
        let credential = match (given, stored) {
            (Some(c), _) => {
                save(&file, node, &c);
                Some(c)
            }
            (None, Some(s)) if s.node == node => Some(s.credential),
            (None, Some(s)) => {
                tracing::info!(
                    node,
                    stored_for = %s.node,
                    "the stored credential belongs to another node name; joining with the join token"
                );
                None
            }
            (None, None) => None,
        };
        client.set_token(credential.as_deref().or(join_token.as_deref()).unwrap_or_default());
        let has_credential = AtomicBool::new(credential.is_some());
        Self { client, join_token, file, has_credential, lock: Default::default() }
    }

    /// Registers the node: with its credential when it has one; with the join token when it
    /// has none or the control plane rejects it (the node was removed, or the control plane's
    /// data was reset), keeping the credential that a join brings back.
    pub async fn register(&self, registration: &RegisterNode) -> Result<(), ClientError> {
        let _one = self.lock.lock().await;
        let node = &registration.name;
        if self.has_credential.load(Ordering::SeqCst) {
            match self.client.register(registration).await {
                Ok(_) => return Ok(()),
                Err(e) if e.status == Some(401) => {
                    tracing::error!(
                        node = %node,
                        error = %e,
                        "the control plane rejected this node's credential: the node was removed or the control plane's data was reset; joining again with the join token"
                    );
                    self.has_credential.store(false, Ordering::SeqCst);
                }
                Err(e) => return Err(e),
            }
        }
        let Some(join_token) = &self.join_token else {
            tracing::error!(node = %node, "this node has no valid credential and no join token: pass --join-token");
            return Err(ClientError {
                status: Some(401),
                message: "this node has no valid credential and no join token to join with".into(),
            });
        };
        let joined = Client::new(self.client.base(), join_token).register(registration).await;
        let credential = match joined {
            Ok(r) => r.credential.ok_or_else(|| ClientError {
                status: None,
                message: "the control plane accepted the join but sent no node credential".into(),
            })?,
            Err(e) => {
                if matches!(e.status, Some(401 | 403)) {
                    tracing::error!(
                        node = %node,
                        error = %e,
                        "joining the control plane was refused: this node gets no assignment until it has a valid join token (paas agent --join-token) and a node name that is free"
                    );
                }
                return Err(e);
            }
        };
        save(&self.file, node, &credential);
        self.client.set_token(credential);
        self.has_credential.store(true, Ordering::SeqCst);
        tracing::info!(node = %node, "joined the control plane; the node credential is kept in the state directory");
        Ok(())
    }
}

/// Keeps the credential for the next start; if that fails the agent still runs with it now,
/// and the error says why a restart would have to join again.
fn save(file: &std::path::Path, node: &str, credential: &str) {
    let stored = Stored { node: node.to_string(), credential: credential.to_string() };
    let bytes = serde_json::to_vec(&stored).expect("two strings serialise");
    if let Err(e) = protocol::files::write_private(file, &bytes) {
        tracing::error!(
            path = %file.display(),
            error = %e,
            "could not keep the node credential; after a restart this node cannot prove who it is"
        );
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_stored_credential_is_private_and_only_used_for_its_own_node() {
        let dir = tempfile_dir();
        let file = dir.join("node-credential.json");
        let client = Client::new("http://127.0.0.1:9", "join");
        let id = Identity::new(client.clone(), Some("join".into()), file.clone(), "a", Some("cred-a".into()));
        assert!(id.has_credential.load(Ordering::SeqCst));
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        // Restarted as the same node: the stored credential is used.
        let again = Identity::new(client.clone(), Some("join".into()), file.clone(), "a", None);
        assert!(again.has_credential.load(Ordering::SeqCst));
        // Under another node name: it is not presented; the node joins afresh.
        let other = Identity::new(client, Some("join".into()), file, "b", None);
        assert!(!other.has_credential.load(Ordering::SeqCst));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("paas-credential-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

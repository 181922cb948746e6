//! Node identity on the wire, and the agent's half of mutual TLS: the join token's form, the
//! messages of a join and a renewal, the node's key (ECDSA P-256, made on the node; only the
//! public half and a signature made with it ever leave it), the pinned CA, and the reqwest
//! client that presents the node's certificate.
//!
//! How an agent comes to trust the control plane without trusting the network (kubeadm's
//! discovery-token CA hash): the join token carries the sha256 of the control plane's CA
//! certificate. The agent fetches that certificate from the agent address once, unverified,
//! and uses it only if its hash is the one in the token; from then on it trusts that CA alone
//! (no public roots), and only certificates the CA marked for server use. Host names are not
//! checked: the agent address is whatever private address an operator picks, and node
//! certificates (client use only) cannot stand in for the control plane.

use crate::agent::RegisterNode;
use crate::client::{Client, ClientError};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How a join token starts, so one pasted into the wrong flag is recognised.
pub const JOIN_TOKEN_PREFIX: &str = "paasjoin_";

/// A one-time join token: `paasjoin_<secret>.<sha256 of the CA certificate>`. The control
/// plane keeps only the secret's hash and burns it at the first join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub secret: String,
    pub ca_sha256: String,
}

impl JoinToken {
    pub fn parse(token: &str) -> Result<Self, String> {
        let bad = || {
            "this is not a join token: make one with `paas nodes token` (it looks like paasjoin_<secret>.<CA hash>)"
                .to_string()
        };
        let token = token.trim();
        let (secret, ca) = token.rsplit_once('.').ok_or_else(bad)?;
        let hex_of = |s: &str, len| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        let body = secret.strip_prefix(JOIN_TOKEN_PREFIX).ok_or_else(bad)?;
        if !hex_of(body, 48) || !hex_of(ca, 64) {
            return Err(bad());
        }
        Ok(Self { secret: secret.to_string(), ca_sha256: ca.to_ascii_lowercase() })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.secret, self.ca_sha256)
    }
}

/// A node's public key and its proof of holding the private key: a signature over
/// [`proof_message`] for the node's name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyProof {
    /// The uncompressed P-256 point, hex.
    pub public_key: String,
    /// ECDSA P-256 SHA-256 signature (ASN.1 DER), hex.
    pub proof: String,
}

/// `POST /agent/v1/join`, with the join token's secret as bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    #[serde(flatten)]
    pub node: RegisterNode,
    pub key: KeyProof,
}

/// A node certificate the control plane signed, with its CA (PEM) and when it expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeCertificate {
    pub certificate: String,
    pub ca: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// What a node signs to prove it holds the key it asks a certificate for.
pub fn proof_message(node: &str) -> Vec<u8> {
    format!("paas node key for {node}").into_bytes()
}

/// sha256 (hex) of a PEM certificate's DER: what a join token pins.
pub fn ca_fingerprint(ca_pem: &str) -> Result<String, String> {
    let der = pem::parse(ca_pem).map_err(|e| format!("the CA certificate is not PEM: {e}"))?;
    Ok(hex::encode(Sha256::digest(der.contents())))
}

/// The node's private key.
pub struct NodeKey {
    pem: String,
    pair: EcdsaKeyPair,
}

impl NodeKey {
    pub fn generate() -> Result<Self, String> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
            .map_err(|_| "generating the node key failed".to_string())?;
        Self::from_pem(&pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref())))
    }

    pub fn from_pem(key_pem: &str) -> Result<Self, String> {
        let der = pem::parse(key_pem).map_err(|e| format!("the node key is not PEM: {e}"))?;
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der.contents(), &SystemRandom::new())
                .map_err(|_| "the node key is not a PKCS#8 P-256 key".to_string())?;
        Ok(Self { pem: key_pem.to_string(), pair })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn proof(&self, node: &str) -> KeyProof {
        let signature = self
            .pair
            .sign(&SystemRandom::new(), &proof_message(node))
            .expect("signing with a P-256 key and the system RNG does not fail");
        KeyProof { public_key: hex::encode(self.pair.public_key().as_ref()), proof: hex::encode(signature) }
    }
}

/// The TLS settings of an agent's client: the CA it trusts, and its key and certificate once
/// it has one (none while joining).
pub fn agent_http(ca_pem: &str, identity: Option<(&NodeKey, &str)>) -> Result<reqwest::Client, ClientError> {
    let bad = |what: &str, e: reqwest::Error| ClientError { status: None, message: format!("{what}: {e}") };
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(|e| bad("the CA certificate", e))?;
    let mut builder = crate::client::builder()
        .https_only(true)
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .danger_accept_invalid_hostnames(true);
    if let Some((key, cert)) = identity {
        let pem = format!("{}\n{}", key.pem(), cert);
        let id = reqwest::Identity::from_pem(pem.as_bytes()).map_err(|e| bad("the node certificate", e))?;
        builder = builder.identity(id);
    }
    builder.build().map_err(|e| bad("building the agent's TLS client", e))
}

/// Fetches the CA certificate from the agent address at `base` and keeps it only if its hash
/// is `ca_sha256` (from the join token); the one request made without verifying the server.
pub async fn fetch_ca(base: &str, ca_sha256: &str) -> Result<String, ClientError> {
    let http = crate::client::builder()
        .https_only(true)
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| ClientError { status: None, message: format!("building a TLS client: {e}") })?;
    let url = format!("{}/agent/v1/ca", base.trim_end_matches('/'));
    let resp = http.get(&url).send().await.map_err(|e| ClientError::transport(base, e))?;
    let status = resp.status();
    let pem = resp.text().await.map_err(|e| ClientError::transport(base, e))?;
    if !status.is_success() {
        let message =
            format!("{url} answered {status}: is {base} the control plane's agent address (--agent-addr)?");
        return Err(ClientError { status: Some(status.as_u16()), message });
    }
    let got = ca_fingerprint(&pem).map_err(|message| ClientError { status: None, message })?;
    if !got.eq_ignore_ascii_case(ca_sha256) {
        let message = format!(
            "the control plane at {base} presented a CA certificate with sha256 {got}, but the join token names {ca_sha256}: this is another control plane, or something between this node and it; not joining"
        );
        return Err(ClientError { status: None, message });
    }
    Ok(pem)
}

/// `POST /api/v1/nodes/tokens`: a one-time join token valid for `ttl_secs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateJoinToken {
    pub ttl_secs: u64,
}

/// The new join token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinTokenCreated {
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
}

impl Client {
    /// A one-time join token for a new node (admin).
    pub async fn create_join_token(&self, ttl_secs: u64) -> Result<JoinTokenCreated, ClientError> {
        self.post("/api/v1/nodes/tokens", &CreateJoinToken { ttl_secs }).await
    }

    /// Removes a node that runs nothing: its certificates stop working at once (admin).
    pub async fn remove_node(&self, node: &str) -> Result<serde_json::Value, ClientError> {
        let req = self.http().delete(self.url(&format!("/api/v1/nodes/{}", crate::client::seg(node))));
        self.send(req).await
    }

    /// Joins as `node` with `token`'s secret, proving `key`; the client must trust the pinned CA.
    pub async fn join(
        &self,
        token: &JoinToken,
        node: &RegisterNode,
        key: &NodeKey,
    ) -> Result<NodeCertificate, ClientError> {
        let body = JoinRequest { node: node.clone(), key: key.proof(&node.name) };
        let req = self.http().post(self.url("/agent/v1/join")).bearer_auth(&token.secret).json(&body);
        self.send_unauthenticated(req).await
    }

    /// A new certificate for a new key, asked for over the node's current mutual TLS.
    pub async fn renew_certificate(&self, node: &str, key: &NodeKey) -> Result<NodeCertificate, ClientError> {
        self.post(&format!("/agent/v1/nodes/{node}/certificate"), &key.proof(node)).await
    }
}

/// A certificate chain and key (PEM) as rustls serves them, or why they cannot be: both must
/// parse and the key must be the certificate's.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<rustls::sign::CertifiedKey, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| "the key is not a PEM private key (PKCS#8, SEC1 or PKCS#1)".to_string())?;
    let key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the key cannot be used: {e}"))?;
    let certified = rustls::sign::CertifiedKey::new(chain, key);
    certified.keys_match().map_err(|_| "the key does not belong to the certificate".to_string())?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_parse_and_print_back() {
        let token = format!("{JOIN_TOKEN_PREFIX}{}.{}", "a1".repeat(24), "B2".repeat(32));
        let parsed = JoinToken::parse(&format!(" {token}\n")).unwrap();
        assert_eq!(parsed.ca_sha256, "b2".repeat(32));
        assert_eq!(JoinToken::parse(&parsed.to_string()).unwrap(), parsed);
        for bad in
            ["", "paas_0123", &token.replace('.', ""), &format!("{}.{}", "a1".repeat(24), "b2".repeat(32))]
        {
            assert!(JoinToken::parse(bad).unwrap_err().contains("paas nodes token"), "{bad}");
        }
    }

    #[test]
    fn a_proof_verifies_for_its_node_only() {
        use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
        let key = NodeKey::generate().unwrap();
        let again = NodeKey::from_pem(key.pem()).unwrap();
        let proof = again.proof("a");
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, hex::decode(&proof.public_key).unwrap());
        let signature = hex::decode(&proof.proof).unwrap();
        assert!(public.verify(&proof_message("a"), &signature).is_ok());
        assert!(public.verify(&proof_message("b"), &signature).is_err());
    }
}

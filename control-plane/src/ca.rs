//! The control plane's own certificate authority, for node identity. Made at first start
//! (`ca.key` 0600 and `ca.crt` in the data directory) and kept across restarts, since every
//! node certificate and every join token's CA hash depend on it. It signs short-lived node
//! certificates (client use only, the node's name as common name) for keys that nodes make
//! themselves and prove they hold, and, at each start, the agent listener's server certificate
//! (server use only, a fresh key kept in memory): the two uses are marked apart (extended key
//! usage), so a node certificate can never stand in for the control plane, nor the reverse.
//!
//! Which node a certificate speaks for is decided by the store (`node_certs`, by the
//! certificate's sha256), not by parsing it: a certificate counts only while it is the one on
//! record for a node that still exists.

use crate::error::DomainError;
use anyhow::Context;
use protocol::tls::{proof_message, KeyProof};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// How long a node certificate is valid unless `--node-cert-secs` says otherwise; agents
/// renew theirs when a third of this is left.
pub const NODE_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The name in the agent listener's certificate. Agents check the CA and the server use, not
/// the name (they reach the control plane at whatever private address an operator gives).
pub const SERVER_NAME: &str = "paas-control-plane";
const CA_NAME: &str = "paas control plane CA";
/// Lifetime of the CA itself; its key never leaves the data directory.
const CA_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// The server certificate is made anew at each start.
const SERVER_LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// Clocks of nodes may lag the control plane's a little.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(300);

pub struct Ca {
    key: KeyPair,
    /// The CA certificate as made at first start (what nodes trust and tokens pin).
    pem: String,
    der: Vec<u8>,
    /// The CA's parameters as an rcgen issuer: rebuilt from the same name and key at each
    /// start, so what it signs chains to the stored certificate (rcgen cannot read one back
    /// without an X.509 parser).
    issuer: rcgen::Certificate,
    fingerprint: String,
    node_lifetime: Duration,
}

/// A certificate the CA signed for a node.
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    /// sha256 of its DER, hex: how the store knows it.
    pub fingerprint: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// sha256 (hex) of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A node's public key as rcgen signs it: the raw P-256 point it sent.
struct NodePublicKey(Vec<u8>);

impl PublicKeyData for NodePublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

pub(crate) fn random_serial() -> rcgen::SerialNumber {
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f; // positive
    rcgen::SerialNumber::from_slice(&serial)
}

pub(crate) fn rcgen_err(what: &str) -> impl Fn(rcgen::Error) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{what}: {e}")
}

/// A CA's key and certificate as kept in files: read, or made at first start and written.
pub(crate) struct CaFiles {
    pub key: KeyPair,
    pub pem: String,
    pub der: Vec<u8>,
    /// The CA's parameters as an rcgen issuer: rebuilt from the same name and key at each
    /// start, so what it signs chains to the stored certificate (rcgen cannot read one back
    /// without an X.509 parser).
    pub issuer: rcgen::Certificate,
}

impl CaFiles {
    /// Reads the CA in `key_path` and `cert_path`, making it with `params` when there is none;
    /// `what` names it in the log.
    pub fn load_or_create(
        key_path: &Path,
        cert_path: &Path,
        params: fn() -> CertificateParams,
        what: &str,
    ) -> anyhow::Result<Self> {
        let (key, pem) = match std::fs::read_to_string(key_path) {
            Ok(key_pem) => {
                let key = KeyPair::from_pem(&key_pem)
                    .map_err(rcgen_err(&format!("{} is not a private key", key_path.display())))?;
                let pem = std::fs::read_to_string(cert_path).with_context(|| {
                    format!(
                        "reading {} (the CA certificate beside {})",
                        cert_path.display(),
                        key_path.display()
                    )
                })?;
                (key, pem)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key =
                    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err("making the CA key"))?;
                let mut ca = params();
                let now = OffsetDateTime::now_utc();
                (ca.not_before, ca.not_after) = (now - CLOCK_SKEW, now + CA_LIFETIME);
                ca.serial_number = Some(random_serial());
                let cert = ca.self_signed(&key).map_err(rcgen_err("making the CA certificate"))?;
                // The certificate first: a key without it is a damaged CA, a certificate
                // without its key is simply made again.
                protocol::files::write_private(cert_path, cert.pem().as_bytes())
                    .with_context(|| format!("writing {}", cert_path.display()))?;
                protocol::files::write_private(key_path, key.serialize_pem().as_bytes())
                    .with_context(|| format!("writing {}", key_path.display()))?;
                tracing::info!(path = %cert_path.display(), "made {what}");
                (key, cert.pem())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", key_path.display())),
        };
        let der = pem::parse(&pem)
            .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?
            .into_contents();
        let issuer = params().self_signed(&key).map_err(rcgen_err("loading the CA"))?;
        Ok(Self { key, pem, der, issuer })
    }
}

impl Ca {
    /// Reads the CA from `dir`, making it on first start. `node_lifetime` is how long the node
    /// certificates it signs are valid.
    pub fn load_or_create(dir: &Path, node_lifetime: Duration) -> anyhow::Result<Self> {
        let files = CaFiles::load_or_create(
            &dir.join("ca.key"),
            &dir.join("ca.crt"),
            ca_params,
            "the control plane's CA for node certificates",
        )?;
        let CaFiles { key, pem, der, issuer } = files;
        let fingerprint = fingerprint(&der);
        Ok(Self { key, pem, der, issuer, fingerprint, node_lifetime })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// sha256 of the CA certificate: what join tokens carry.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Signs a certificate naming `node` for the key in `proof`, once the proof (a signature
    /// over the node's name) checks out, valid from now for the node lifetime.
    pub fn sign_node(&self, node: &str, proof: &KeyProof) -> Result<Issued, DomainError> {
        use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};
        let invalid = || {
            DomainError::Invalid("the node key's proof does not check out: send a P-256 public key (hex) and its signature over \"paas node key for <node>\"".into())
        };
        let public = hex::decode(&proof.public_key).map_err(|_| invalid())?;
        let signature = hex::decode(&proof.proof).map_err(|_| invalid())?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public)
            .verify(&proof_message(node), &signature)
            .map_err(|_| invalid())?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, node);
        params.distinguished_name.push(DnType::OrganizationalUnitName, "paas nodes");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = (now - CLOCK_SKEW, now + self.node_lifetime);
        let cert = params.signed_by(&NodePublicKey(public), &self.issuer, &self.key).map_err(|e| {
            DomainError::Internal(anyhow::anyhow!("signing the certificate of node {node:?}: {e}"))
        })?;
        Ok(Issued {
            pem: cert.pem(),
            fingerprint: fingerprint(cert.der()),
            not_after: (now + self.node_lifetime).unix_timestamp(),
        })
    }

    /// TLS for the agent listener: a server certificate made now, and client certificates
    /// checked against this CA (signature, validity, client use). A client without one is let
    /// through to the few routes that need none (the CA certificate, joining); the handlers
    /// decide the rest.
    pub fn server_config(&self) -> anyhow::Result<rustls::ServerConfig> {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err("making the server key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, SERVER_NAME);
        params.subject_alt_names =
            vec![SanType::DnsName(SERVER_NAME.try_into().map_err(rcgen_err("the server name"))?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = (now - CLOCK_SKEW, now + SERVER_LIFETIME);
        let cert =
            params.signed_by(&key, &self.issuer, &self.key).map_err(rcgen_err("the server certificate"))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(self.der.clone())).context("the CA certificate as a trust anchor")?;
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .context("the client certificate verifier")?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.der().clone()], key_der)
            .context("the server certificate")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::tls::NodeKey;
    use rustls::pki_types::UnixTime;
    use rustls::server::danger::ClientCertVerifier;

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("paas-ca-{:016x}", rand::random::<u64>()));
        protocol::files::private_dir(&dir).unwrap();
        dir
    }

    fn verifier(ca: &Ca) -> Arc<dyn ClientCertVerifier> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der.clone())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap()
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from(pem::parse(pem).unwrap().into_contents())
    }

    fn at(unix: i64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(unix as u64))
    }

    #[test]
    fn the_ca_is_kept_and_signs_node_certificates_the_verifier_accepts_while_valid() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir();
        let ca = Ca::load_or_create(&dir, Duration::from_secs(3600)).unwrap();
        let mode = std::fs::metadata(dir.join("ca.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Restarted: the same CA, and what it signs now chains to the certificate made before.
        let again = Ca::load_or_create(&dir, Duration::from_secs(3600)).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        assert_eq!(protocol::tls::ca_fingerprint(ca.pem()).unwrap(), ca.fingerprint());

        let key = NodeKey::generate().unwrap();
        let issued = again.sign_node("n1", &key.proof("n1")).unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!((issued.not_after - now - 3600).abs() < 5, "{issued:?}");
        let v = verifier(&ca);
        let cert = der(&issued.pem);
        assert_eq!(fingerprint(&cert), issued.fingerprint);
        v.verify_client_cert(&cert, &[], at(now)).unwrap();
        // Expired, or not yet valid: refused.
        let expired = v.verify_client_cert(&cert, &[], at(issued.not_after + 1)).unwrap_err();
        assert!(format!("{expired:?}").contains("Expired"), "{expired:?}");
        assert!(v.verify_client_cert(&cert, &[], at(now - 3600)).is_err());

        // A certificate another CA signed is refused.
        let other = Ca::load_or_create(&temp_dir(), Duration::from_secs(3600)).unwrap();
        let foreign = other.sign_node("n1", &key.proof("n1")).unwrap();
        assert!(v.verify_client_cert(&der(&foreign.pem), &[], at(now)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_is_signed_only_with_a_proof_for_that_node_name() {
        let dir = temp_dir();
        let ca = Ca::load_or_create(&dir, NODE_CERT_LIFETIME).unwrap();
        let key = NodeKey::generate().unwrap();
        let proof = key.proof("a");
        for bad in [
            ca.sign_node("b", &proof),
            ca.sign_node("a", &KeyProof { public_key: "04".into(), proof: proof.proof.clone() }),
            ca.sign_node("a", &KeyProof { public_key: proof.public_key.clone(), proof: "zz".into() }),
        ] {
            assert!(matches!(bad, Err(DomainError::Invalid(_))), "{bad:?}");
        }
        assert!(ca.sign_node("a", &proof).is_ok());
        assert!(ca.server_config().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

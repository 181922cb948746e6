//! The local CA: made at first start (`ingress-ca.key` 0600 and `ingress-ca.crt` in the data
//! directory), it signs a certificate for each host name the ingress serves that has none
//! uploaded or from ACME. Users trust `ingress-ca.crt` (curl --cacert, or the system's store),
//! the way mkcert works. It also signs the API listener's certificate under `--api-tls`. It is
//! a different CA from the one for node identity, so nothing it signs can pass for a node or
//! the control plane's agent listener.

use crate::ca::{random_serial, rcgen_err, CaFiles, CLOCK_SKEW};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType, PKCS_ECDSA_P256_SHA256,
};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

/// How long a certificate of the local CA is valid.
pub const LOCAL_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// The API's certificate is made at each start; clients (Apple's among them) refuse server
/// certificates valid for longer than about 13 months.
const API_LIFETIME: Duration = Duration::from_secs(397 * 24 * 3600);

pub struct LocalCa {
    files: CaFiles,
    cert_path: PathBuf,
    fingerprint: String,
}

/// A certificate made for some host names, with its key.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
    /// Unix seconds.
    pub not_after: i64,
}

fn params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "paas local CA");
    params.distinguished_name.push(DnType::OrganizationName, "paas");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl LocalCa {
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let cert_path = dir.join("ingress-ca.crt");
        let files = CaFiles::load_or_create(
            &dir.join("ingress-ca.key"),
            &cert_path,
            params,
            "the local CA for the apps' HTTPS certificates",
        )?;
        let fingerprint = crate::ca::fingerprint(&files.der);
        Ok(Self { files, cert_path, fingerprint })
    }

    /// The file users trust.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub fn pem(&self) -> &str {
        &self.files.pem
    }

    /// sha256 of the CA certificate: certificates it made carry it, so a replaced CA's are
    /// made again.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A server certificate for `hosts` (each listed by name), valid from now for
    /// [`LOCAL_LIFETIME`], with a fresh P-256 key.
    pub fn issue(&self, hosts: &[String]) -> anyhow::Result<Issued> {
        self.issue_for(hosts, LOCAL_LIFETIME)
    }

    /// TLS for the API listener (`--api-tls`): a certificate for `names` (host names or IP
    /// addresses) made at each start, valid for [`API_LIFETIME`].
    pub fn api_server_config(&self, names: &[String]) -> anyhow::Result<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let issued = self.issue_for(names, API_LIFETIME)?;
        let cert = rustls::pki_types::CertificateDer::from_pem_slice(issued.chain_pem.as_bytes())?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    fn issue_for(&self, hosts: &[String], lifetime: Duration) -> anyhow::Result<Issued> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_err("making a key"))?;
        let mut params = CertificateParams::default();
        if let Some(first) = hosts.first() {
            params.distinguished_name.push(DnType::CommonName, first.as_str());
        }
        params.subject_alt_names = hosts
            .iter()
            .map(|h| match h.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(h.as_str().try_into().map_err(rcgen_err(h))?)),
            })
            .collect::<anyhow::Result<_>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        (params.not_before, params.not_after) = (now - CLOCK_SKEW, now + lifetime);
        let cert = params
            .signed_by(&key, &self.files.issuer, &self.files.key)
            .map_err(rcgen_err("signing a certificate"))?;
        Ok(Issued {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after: (now + lifetime).unix_timestamp(),
        })
    }
}

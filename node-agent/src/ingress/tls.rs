//! The ingress's certificates: the table SNI picks from ([`Certificates`], swapped whole when
//! the assignment brings new ones, so a renewal reaches new handshakes at once and never
//! touches an established connection) and the rustls server configuration (TLS 1.2 and 1.3,
//! ALPN `h2` then `http/1.1`).

use protocol::agent::TlsCertificate;
use protocol::tls::certified_key;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Host name (lowercase, or `*.domain` for a wildcard) to its certificate.
#[derive(Default)]
pub struct Certificates {
    table: RwLock<Arc<Table>>,
}

#[derive(Default)]
struct Table {
    by_host: HashMap<String, Arc<CertifiedKey>>,
    /// What the table was made from, so an unchanged assignment is not parsed again.
    source: Vec<TlsCertificate>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").field("hosts", &self.current().by_host.len()).finish()
    }
}

impl Certificates {
    fn current(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the whole table. A certificate that cannot be used is left out (and logged):
    /// the names it was for fail their handshake instead of taking another name's.
    pub fn set(&self, certs: &[TlsCertificate]) {
        if self.current().source == certs {
            return;
        }
        let mut by_host = HashMap::new();
        for cert in certs {
            match certified_key(&cert.chain_pem, &cert.key_pem) {
                Ok(key) => {
                    let key = Arc::new(key);
                    for host in &cert.hosts {
                        by_host.insert(host.trim_end_matches('.').to_ascii_lowercase(), key.clone());
                    }
                }
                Err(why) => tracing::warn!(hosts = ?cert.hosts, error = %why, "a certificate was left out"),
            }
        }
        let table = Arc::new(Table { by_host, source: certs.to_vec() });
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    /// The certificates as last set.
    pub fn source(&self) -> Vec<TlsCertificate> {
        self.current().source.clone()
    }

    /// The certificate for `host`: its own, else a wildcard one label up.
    pub fn lookup(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let table = self.current();
        if let Some(key) = table.by_host.get(&host) {
            return Some(key.clone());
        }
        let (_, parent) = host.split_once('.')?;
        table.by_host.get(&format!("*.{parent}")).cloned()
    }
}

/// rustls asks this for each handshake.
#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A client that names no host (an IP address in the URL) gets no certificate: there is
        // no app it could mean.
        self.0.lookup(hello.server_name()?)
    }
}

/// The TLS side of the HTTPS listener: certificates from `certs`, HTTP/2 offered first.
pub fn server_config(certs: Arc<Certificates>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(certs)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

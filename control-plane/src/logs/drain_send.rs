//! Sending to a drain: syslog over TCP or TLS (one connection kept open, checked for a close by
//! the server before each write), or HTTPS POSTs of JSON lines. Errors are one sentence that
//! never holds the URL (it may carry credentials).

use super::format::{self, DrainLine};
use anyhow::Context;
use futures_util::FutureExt;
use protocol::drains::{DrainKind, DrainTarget};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a write or a request may take before the drain counts as failing.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The TLS settings drains use: the platform's trust roots plus the PEM certificates in
/// `ca_file` (a private CA), on the ring provider the rest of paas uses.
pub fn tls_config(ca_file: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: one bad file must not stop every drain.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let pem =
            std::fs::read(path).with_context(|| format!("reading the drain CA file {}", path.display()))?;
        let certs: Vec<_> = pem::parse_many(&pem)
            .with_context(|| format!("{} is not PEM", path.display()))?
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .collect();
        anyhow::ensure!(!certs.is_empty(), "{} holds no PEM certificate", path.display());
        for cert in certs {
            roots.add(rustls::pki_types::CertificateDer::from(cert.into_contents())).with_context(|| {
                format!("a certificate in {} is not usable as a trust root", path.display())
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }

    /// Whether the server has closed the connection (or reset it). Syslog servers send
    /// nothing back: anything readable is discarded. Checked before each write, so lines are
    /// not written into a connection already gone (where the first write would "succeed").
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            let read = match self {
                Conn::Tcp(s) => s.read(&mut buf).now_or_never(),
                Conn::Tls(s) => s.read(&mut buf).now_or_never(),
            };
            match read {
                None => return false,
                Some(Ok(0)) | Some(Err(_)) => return true,
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// Whether a drain may be sent to `ip`: public addresses, and private ones only inside the
/// networks the operator allowed (`--drain-allow-net`). A drain is added by an app's deployer,
/// and must not make the control plane talk to its own host's or network's services (a
/// database, an agent, a cloud metadata endpoint) with lines the app wrote.
pub fn allowed_destination(ip: std::net::IpAddr, allowed: &[ipnet::IpNet]) -> bool {
    use std::net::IpAddr;
    if allowed.iter().any(|net| net.contains(&ip)) {
        return true;
    }
    let v4_public = |v4: std::net::Ipv4Addr| {
        let o = v4.octets();
        !(v4.is_loopback()
            || v4.is_private()
            || v4.is_link_local()
            || v4.is_broadcast()
            || v4.is_documentation()
            || v4.is_unspecified()
            || v4.is_multicast()
            || o[0] == 0
            || (o[0] == 100 && (o[1] & 0xc0) == 64)
            || o[0] >= 240)
    };
    match ip {
        IpAddr::V4(v4) => v4_public(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_public(v4),
            None => {
                let first = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// One drain's way out, kept between batches.
pub struct Sender {
    target: DrainTarget,
    tls: Arc<rustls::ClientConfig>,
    allowed: Arc<Vec<ipnet::IpNet>>,
    conn: Option<Conn>,
    /// The HTTPS client, pinned to the address that was checked (a name that resolves to
    /// another address later cannot lead it elsewhere).
    http: Option<(std::net::SocketAddr, reqwest::Client)>,
}

impl Sender {
    pub fn new(target: DrainTarget, tls: Arc<rustls::ClientConfig>, allowed: Arc<Vec<ipnet::IpNet>>) -> Self {
        Self { target, tls, allowed, conn: None, http: None }
    }

    /// The drain's address: its name resolved now, the first address a drain may go to.
    async fn destination(&self) -> Result<std::net::SocketAddr, String> {
        let place = self.place();
        let addrs: Vec<std::net::SocketAddr> = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::lookup_host((self.target.host.as_str(), self.target.port)),
        )
        .await
        .map_err(|_| format!("looking up {place} timed out"))?
        .map_err(|e| format!("looking up {place} failed: {e}"))?
        .collect();
        addrs.iter().copied().find(|a| allowed_destination(a.ip(), &self.allowed)).ok_or_else(|| {
            let ip = addrs.first().map(|a| a.ip().to_string()).unwrap_or_default();
            format!(
                "{place} is a private, loopback or link-local address ({ip}); drains go only to public addresses unless the platform is started with --drain-allow-net (for example --drain-allow-net 10.0.0.0/8)"
            )
        })
    }

    /// Sends a prefix of `lines` (all of them to syslog; one request's worth over HTTPS) and
    /// answers how many were sent.
    pub async fn send(&mut self, lines: &[DrainLine]) -> Result<usize, String> {
        if lines.is_empty() {
            return Ok(0);
        }
        match self.target.kind {
            DrainKind::SyslogTcp | DrainKind::SyslogTls => self.send_syslog(lines).await,
            DrainKind::Https => self.send_https(lines).await,
        }
    }

    fn place(&self) -> String {
        if self.target.host.contains(':') {
            format!("[{}]:{}", self.target.host, self.target.port)
        } else {
            format!("{}:{}", self.target.host, self.target.port)
        }
    }

    async fn connect(&self) -> Result<Conn, String> {
        let place = self.place();
        let addr = self.destination().await?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {place} timed out after {}s", CONNECT_TIMEOUT.as_secs()))?
            .map_err(|e| format!("connecting to {place} failed: {e}"))?;
        let _ = tcp.set_nodelay(true);
        if self.target.kind == DrainKind::SyslogTcp {
            return Ok(Conn::Tcp(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(self.target.host.clone())
            .map_err(|_| format!("{} is not a name TLS can verify", self.target.host))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone());
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, tcp))
            .await
            .map_err(|_| format!("the TLS handshake with {place} timed out"))?
            .map_err(|e| format!("the TLS handshake with {place} failed: {e} (for a private CA, give paas --drain-ca-file)"))?;
        Ok(Conn::Tls(Box::new(stream)))
    }

    async fn send_syslog(&mut self, lines: &[DrainLine]) -> Result<usize, String> {
        if self.conn.as_mut().is_some_and(Conn::closed) {
            self.conn = None;
        }
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect().await?,
        };
        let frames = format::syslog_frames(lines);
        match tokio::time::timeout(SEND_TIMEOUT, conn.write_all(&frames)).await {
            Ok(Ok(())) => {
                self.conn = Some(conn);
                Ok(lines.len())
            }
            Ok(Err(e)) => Err(format!("writing to the syslog server at {} failed: {e}", self.place())),
            Err(_) => Err(format!(
                "the syslog server at {} did not take the lines within {}s",
                self.place(),
                SEND_TIMEOUT.as_secs()
            )),
        }
    }

    async fn http(&mut self) -> Result<reqwest::Client, String> {
        let addr = self.destination().await?;
        if let Some((at, c)) = &self.http {
            if *at == addr {
                return Ok(c.clone());
            }
        }
        let mut tls = (*self.tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(SEND_TIMEOUT)
            // A redirected POST may turn into a GET and lose the lines: a redirect is an error.
            .redirect(reqwest::redirect::Policy::none())
            .resolve(&self.target.host, addr)
            .build()
            .map_err(|e| format!("building the HTTPS client failed: {}", http_error(e)))?;
        self.http = Some((addr, client.clone()));
        Ok(client)
    }

    async fn send_https(&mut self, lines: &[DrainLine]) -> Result<usize, String> {
        let client = self.http().await?;
        let (n, body) = format::json_batch(lines, format::MAX_BATCH_LINES, format::MAX_BATCH_BYTES);
        let resp = client
            .post(self.target.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body)
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("the drain at {} answered {status}", self.place()));
        }
        Ok(n)
    }
}

impl Sender {
    /// A failed request as one sentence: the innermost cause of a failed connection (refused,
    /// a certificate not trusted), or the whole chain.
    fn request_error(&self, e: reqwest::Error) -> String {
        let place = self.place();
        if e.is_timeout() {
            return format!("the drain at {place} did not answer within {}s", SEND_TIMEOUT.as_secs());
        }
        if e.is_connect() {
            let mut root: &dyn std::error::Error = &e;
            while let Some(next) = root.source() {
                root = next;
            }
            let hint = if root.to_string().contains("certificate") {
                " (for a private CA, give paas --drain-ca-file)"
            } else {
                ""
            };
            return format!("connecting to {place} failed: {root}{hint}");
        }
        format!("sending to {place} failed: {}", http_error(e))
    }
}

/// A reqwest error and its causes as one sentence, without the URL.
fn http_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut parts = vec![e.to_string()];
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cause = c.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::drains::parse_drain_url;
    use protocol::logs::{LogSource, LogStream};

    fn loopback() -> Arc<Vec<ipnet::IpNet>> {
        Arc::new(vec!["127.0.0.0/8".parse().unwrap()])
    }

    #[test]
    fn drains_go_to_public_addresses_and_to_private_ones_only_when_allowed() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!allowed_destination(private.parse().unwrap(), &[]), "{private}");
        }
        for public in ["203.0.114.1", "8.8.8.8", "2a00:1450::1"] {
            assert!(allowed_destination(public.parse().unwrap(), &[]), "{public}");
        }
        assert!(allowed_destination("10.1.2.3".parse().unwrap(), &["10.0.0.0/8".parse().unwrap()]));
        assert!(!allowed_destination("10.1.2.3".parse().unwrap(), &["10.9.0.0/16".parse().unwrap()]));
    }

    /// A TLS listener on loopback with a certificate for localhost from a fresh CA, whose PEM is
    /// written to `ca_file`.
    async fn tls_server(ca_file: &Path) -> (tokio::net::TcpListener, tokio_rustls::TlsAcceptor) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(ca_file, ca_cert.pem()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                )
                .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        (listener, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    fn line(text: &str) -> DrainLine {
        DrainLine {
            id: 1,
            at: 0,
            app: "shop".into(),
            env: "production".into(),
            source: LogSource::App,
            process: "web".into(),
            replica: 1,
            release: 1,
            node: "n1".into(),
            stream: LogStream::Stderr,
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn syslog_over_tls_trusts_a_private_ca_only_when_given_its_file() {
        let dir = std::env::temp_dir().join(format!("paas-drain-tls-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        let (listener, acceptor) = tls_server(&ca_file).await;
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            // The first client does not trust the CA and gives up in the handshake.
            let (tcp, _) = listener.accept().await.unwrap();
            assert!(acceptor.accept(tcp).await.is_err());
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.ends_with(b"hello") {
                let n = tls.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            String::from_utf8(got).unwrap()
        });
        let target = parse_drain_url(&format!("syslog+tls://localhost:{port}")).unwrap();

        let mut untrusting = Sender::new(target.clone(), tls_config(None).unwrap(), loopback());
        let e = untrusting.send(&[line("hello")]).await.unwrap_err();
        assert!(e.contains("TLS handshake") && e.contains("--drain-ca-file"), "{e}");

        let mut trusting = Sender::new(target, tls_config(Some(&ca_file)).unwrap(), loopback());
        assert_eq!(trusting.send(&[line("hello")]).await.unwrap(), 1);
        let got = server.await.unwrap();
        let message = format::syslog_message(&line("hello"));
        assert_eq!(got, format!("{} {message}", message.len()));
        assert!(message.starts_with("<12>1 "), "stderr is a warning: {message}");

        std::fs::write(&ca_file, "not a certificate").unwrap();
        assert!(tls_config(Some(&ca_file)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

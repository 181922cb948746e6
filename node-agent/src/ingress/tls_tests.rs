//! Tests of the HTTPS listener: HTTP/2 by ALPN to an HTTP/1.1 backend (with the host and scheme
//! it needs), SNI picking each name's certificate and refusing names without one, a certificate
//! swap reaching new handshakes while open connections go on, and idle HTTP/2 connections
//! closed like idle HTTP/1.1 ones.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// A CA and a certificate it signs for `host`.
struct TestCa {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self { key, cert }
    }

    fn issue(&self, host: &str) -> protocol::agent::TlsCertificate {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![host.to_string()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        protocol::agent::TlsCertificate {
            hosts: vec![host.to_string()],
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

async fn start_tls(routes: &[Route], settings: Settings) -> (SocketAddr, IngressHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = IngressHandle::new();
    handle.set_routes(routes);
    tokio::spawn(serve_tls(listener, handle.clone(), settings, CancellationToken::new()));
    (addr, handle)
}

/// An HTTP/2 connection to `host` through the ingress at `addr`, trusting `ca`; the connection
/// task's handle tells when the server closed it.
async fn h2(
    addr: SocketAddr,
    ca: &TestCa,
    host: &str,
) -> std::io::Result<(hyper::client::conn::http2::SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(host.to_string()).unwrap();
    let tls = ca.connector().connect(name, tcp).await?;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    Ok((send, tokio::spawn(async move { drop(conn.await) })))
}

async fn get(
    send: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    host: &str,
) -> Response<Incoming> {
    let req = Request::get(format!("https://{host}/x")).body(Full::new(Bytes::new())).unwrap();
    tokio::time::timeout(Duration::from_secs(10), send.send_request(req)).await.unwrap().unwrap()
}

#[tokio::test]
async fn http2_over_tls_reaches_an_http1_backend_with_its_host_and_the_https_scheme() {
    let backend = named_backend("one").await;
    let ca = TestCa::new("test CA");
    let (addr, handle) = start_tls(&[route("shop.test", &[backend])], Settings::default()).await;
    handle.set_certificates(&[ca.issue("shop.test")]);
    let (mut send, _conn) = h2(addr, &ca, "shop.test").await.unwrap();
    let resp = get(&mut send, "shop.test").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["seen-host"], "shop.test");
    assert_eq!(resp.headers()["seen-x-forwarded-proto"], "https");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "one");
    // A name with no certificate gets none: the handshake fails.
    assert!(h2(addr, &ca, "other.test").await.is_err());
}

#[tokio::test]
async fn a_new_certificate_reaches_new_handshakes_while_open_connections_go_on() {
    let backend = named_backend("one").await;
    let (old, new) = (TestCa::new("old CA"), TestCa::new("new CA"));
    let (addr, handle) = start_tls(&[route("shop.test", &[backend])], Settings::default()).await;
    handle.set_certificates(&[old.issue("shop.test")]);
    let (mut open, _conn) = h2(addr, &old, "shop.test").await.unwrap();
    assert_eq!(get(&mut open, "shop.test").await.status(), StatusCode::OK);

    handle.set_certificates(&[new.issue("shop.test")]);
    assert!(h2(addr, &old, "shop.test").await.is_err(), "new handshakes get the new certificate");
    let (mut fresh, _conn2) = h2(addr, &new, "shop.test").await.unwrap();
    assert_eq!(get(&mut fresh, "shop.test").await.status(), StatusCode::OK);
    assert_eq!(get(&mut open, "shop.test").await.status(), StatusCode::OK, "the open one goes on");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_header_timeout() {
    let backend = named_backend("one").await;
    let ca = TestCa::new("test CA");
    let settings = Settings { header_read_timeout: Duration::from_millis(500), ..Settings::default() };
    let (addr, handle) = start_tls(&[route("shop.test", &[backend])], settings).await;
    handle.set_certificates(&[ca.issue("shop.test")]);
    let (mut send, conn) = h2(addr, &ca, "shop.test").await.unwrap();
    assert_eq!(get(&mut send, "shop.test").await.status(), StatusCode::OK);
    // Requests keep it open; then, idle, the server ends it.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get(&mut send, "shop.test").await.status(), StatusCode::OK);
    }
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle connection was closed")
        .unwrap();
}

#[tokio::test]
async fn https_redirect_sends_plain_http_clients_to_https_and_hsts_goes_on_https_answers() {
    let backend = named_backend("one").await;
    let mut secure = route("shop.test", &[backend]);
    secure.limits.https_redirect = true;
    secure.limits.hsts_max_age_secs = 3600;
    let plain = route("plain.test", &[backend]);
    let settings = Settings { https_port: Some(8443), ..Settings::default() };
    let (http_addr, _, _stop) = start_ingress_with(&[secure.clone(), plain.clone()], settings).await;
    let resp = send(http_addr, Request::post("/").header("host", "Shop.Test:8080"), "kept").await;
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()["location"], "https://shop.test:8443/path?q=1");
    assert!(!resp.headers().contains_key("strict-transport-security"), "never over plain HTTP");
    let resp = send(http_addr, Request::get("/").header("host", "plain.test"), "").await;
    assert_eq!(resp.status(), StatusCode::OK, "apps without it are served over HTTP");

    let ca = TestCa::new("test CA");
    let (addr, handle) = start_tls(&[secure, plain], Settings::default()).await;
    handle.set_certificates(&[ca.issue("shop.test"), ca.issue("plain.test")]);
    let (mut send_h2, _conn) = h2(addr, &ca, "shop.test").await.unwrap();
    let resp = get(&mut send_h2, "shop.test").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=3600");
    let (mut send_plain, _conn2) = h2(addr, &ca, "plain.test").await.unwrap();
    assert!(!get(&mut send_plain, "plain.test").await.headers().contains_key("strict-transport-security"));
}

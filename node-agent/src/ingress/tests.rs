//! End-to-end tests of the ingress over real sockets on 127.0.0.1: routing, failover, round-robin,
//! streaming, table swaps, upgrades, graceful shutdown, static files, forwarding headers, request
//! ids and access lines, and the bounds (connection cap, timeouts).

use super::*;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::future::Future;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

pub(super) type TestBody = UnsyncBoxBody<Bytes, Infallible>;

pub(super) fn route(host: &str, backends: &[SocketAddr]) -> Route {
    Route {
        host: host.to_owned(),
        app: "shop".to_owned(),
        env: "production".to_owned(),
        release: 1,
        backends: backends.iter().map(|a| a.to_string()).collect(),
        replicas: (1..=backends.len() as u32).collect(),
        static_files: None,
        limits: Default::default(),
        maintenance: false,
    }
}

pub(super) async fn start_ingress(routes: &[Route]) -> (SocketAddr, IngressHandle, CancellationToken) {
    start_ingress_with(routes, Settings::default()).await
}

pub(super) async fn start_ingress_with(
    routes: &[Route],
    settings: Settings,
) -> (SocketAddr, IngressHandle, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = IngressHandle::new();
    handle.set_routes(routes);
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, handle.clone(), settings, shutdown.clone()));
    (addr, handle, shutdown)
}

/// A hyper HTTP/1.1 server calling `handler` for every request.
pub(super) async fn spawn_backend<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

pub(super) fn text(body: impl Into<Bytes>) -> Response<TestBody> {
    Response::new(Full::new(body.into()).boxed_unsync())
}

/// A backend that answers its name (and, for a body, `name:body`), echoing some request headers.
pub(super) async fn named_backend(name: &'static str) -> SocketAddr {
    spawn_backend(move |req: Request<Incoming>| async move {
        let seen: Vec<(String, String)> =
            ["host", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-request-id"]
                .iter()
                .filter_map(|h| {
                    req.headers().get(*h).map(|v| (format!("seen-{h}"), v.to_str().unwrap().to_owned()))
                })
                .collect();
        let hop = req.headers().contains_key("x-hop") || req.headers().contains_key("connection");
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut resp = if body.is_empty() {
            text(name)
        } else {
            text(format!("{name}:{}", String::from_utf8_lossy(&body)))
        };
        for (k, v) in seen {
            resp.headers_mut()
                .insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        if hop {
            resp.headers_mut().insert("seen-hop", "yes".parse().unwrap());
        }
        resp
    })
    .await
}

/// An address nothing listens on: bound, then released.
pub(super) async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

pub(super) fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub(super) async fn send(ingress: SocketAddr, req: http::request::Builder, body: &str) -> Response<Incoming> {
    let req = req.uri(format!("http://{ingress}/path?q=1")).body(Full::new(Bytes::from(body.to_owned())));
    tokio::time::timeout(Duration::from_secs(10), client().request(req.unwrap())).await.unwrap().unwrap()
}

pub(super) async fn get(ingress: SocketAddr, host: &str) -> (StatusCode, String) {
    let resp = send(ingress, Request::get("/").header("host", host), "").await;
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[test]
fn normalizes_hosts() {
    assert_eq!(normalize_host("Example.COM.:8080"), "example.com");
    assert_eq!(normalize_host("app.test"), "app.test");
    assert_eq!(normalize_host("[::1]:80"), "[::1]");
}

#[tokio::test]
async fn unknown_host_gets_404_page() {
    let (ingress, _, shutdown) = start_ingress(&[]).await;
    let resp = send(ingress, Request::get("/").header("host", "nope.test"), "").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("nope.test"));
    shutdown.cancel();
}

#[tokio::test]
async fn route_without_backends_gets_503() {
    let (ingress, _, shutdown) = start_ingress(&[route("app.test", &[])]).await;
    let (status, body) = get(ingress, "app.test").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("shop"), "{body}");
    shutdown.cancel();
}

#[tokio::test]
async fn only_dead_backend_gets_502() {
    let (ingress, _, shutdown) = start_ingress(&[route("app.test", &[dead_addr().await])]).await;
    let (status, body) = get(ingress, "app.test").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(!body.is_empty());
    shutdown.cancel();
}

#[tokio::test]
async fn dead_backend_is_skipped() {
    let live = named_backend("live").await;
    let (ingress, _, shutdown) = start_ingress(&[route("app.test", &[dead_addr().await, live])]).await;
    for _ in 0..6 {
        assert_eq!(get(ingress, "app.test").await, (StatusCode::OK, "live".to_owned()));
    }
    // A body is not lost when the connect to the dead backend fails first.
    for _ in 0..2 {
        let resp = send(ingress, Request::post("/").header("host", "app.test"), "payload").await;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "live:payload");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn round_robin_alternates() {
    let (a, b) = (named_backend("a").await, named_backend("b").await);
    let (ingress, _, shutdown) = start_ingress(&[route("app.test", &[a, b])]).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, body) = get(ingress, "APP.test:80").await;
        assert_eq!(status, StatusCode::OK);
        seen.push(body);
    }
    assert_ne!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    assert_eq!(seen[1], seen[3]);
    shutdown.cancel();
}

#[tokio::test]
async fn forwards_proxy_headers() {
    let backend = named_backend("a").await;
    let (ingress, _, shutdown) = start_ingress(&[route("app.test", &[backend])]).await;
    let req = Request::get("/")
        .header("host", "App.Test:8080")
        .header("x-forwarded-for", "10.1.2.3")
        .header("connection", "x-hop")
        .header("x-hop", "1");
    let resp = send(ingress, req, "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h["seen-host"], "App.Test:8080");
    // A client's own X-Forwarded-For is replaced, not appended to (no proxy is trusted).
    assert_eq!(h["seen-x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["seen-x-forwarded-host"], "App.Test:8080");
    assert_eq!(h["seen-x-forwarded-proto"], "http");
    assert!(!h.contains_key("seen-hop"));
    shutdown.cancel();
}

/// A backend whose response sends one chunk, then waits for `release` before the last one.
async fn streaming_backend(release: Arc<Notify>) -> SocketAddr {
    spawn_backend(move |_req| {
        let release = release.clone();
        async move {
            let (tx, rx) = mpsc::channel::<Bytes>(1);
            tokio::spawn(async move {
                tx.send(Bytes::from_static(b"first ")).await.unwrap();
                release.notified().await;
                tx.send(Bytes::from_static(b"last")).await.unwrap();
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (Ok::<_, Infallible>(Frame::data(chunk)), rx))
            });
            Response::new(StreamBody::new(stream).boxed_unsync())
        }
    })
    .await
}

#[tokio::test]
async fn streams_responses_without_buffering() {
    let release = Arc::new(Notify::new());
    let backend = streaming_backend(release.clone()).await;
    let (ingress, _, shutdown) = start_ingress(&[route("stream.test", &[backend])]).await;
    let resp = send(ingress, Request::get("/").header("host", "stream.test"), "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // The first chunk must arrive while the backend is still holding back the rest.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first ");
    release.notify_one();
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect()).await.unwrap().unwrap();
    assert_eq!(rest.to_bytes(), "last");
    shutdown.cancel();
}

#[tokio::test]
async fn set_routes_switches_backends() {
    let (a, b) = (named_backend("a").await, named_backend("b").await);
    let (ingress, handle, shutdown) = start_ingress(&[route("app.test", &[a])]).await;
    assert_eq!(get(ingress, "app.test").await.1, "a");
    let table = vec![route("app.test", &[b]), route("other.test", &[a])];
    handle.set_routes(&table);
    assert_eq!(handle.routes(), table);
    assert_eq!(get(ingress, "app.test").await.1, "b");
    assert_eq!(get(ingress, "other.test").await.1, "a");
    handle.set_routes(&[]);
    assert_eq!(get(ingress, "app.test").await.0, StatusCode::NOT_FOUND);
    shutdown.cancel();
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "connection closed mid-head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[tokio::test]
async fn upgrade_round_trips_bytes() {
    // Raw backend: answers 101 to an upgrade request, then echoes whatever it receives.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = read_head(&mut stream).await.to_ascii_lowercase();
        assert!(head.contains("upgrade: websocket") && head.contains("connection: upgrade"), "{head}");
        stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            )
            .await
            .unwrap();
        let (mut rd, mut wr) = stream.split();
        let _ = tokio::io::copy(&mut rd, &mut wr).await;
    });

    let (ingress, _, shutdown) = start_ingress(&[route("ws.test", &[backend])]).await;
    let mut client = TcpStream::connect(ingress).await.unwrap();
    client
        .write_all(b"GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut client)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    for message in [&b"hello"[..], b"second message"] {
        client.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut echoed)).await.unwrap().unwrap();
        assert_eq!(echoed, message);
    }
    shutdown.cancel();
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let release = Arc::new(Notify::new());
    let backend = streaming_backend(release.clone()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingress = listener.local_addr().unwrap();
    let handle = IngressHandle::new();
    handle.set_routes(&[route("stream.test", &[backend])]);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, handle, Settings::default(), shutdown.clone()));

    let resp = send(ingress, Request::get("/").header("host", "stream.test"), "").await;
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!server.is_finished(), "serve returned with a request in flight");
    // New connections are refused once shutdown started.
    assert!(TcpStream::connect(ingress).await.is_err());
    release.notify_one();
    assert_eq!(body.collect().await.unwrap().to_bytes(), "last");
    tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn missing_host_gets_400() {
    let (ingress, _, shutdown) = start_ingress(&[]).await;
    let mut stream = TcpStream::connect(ingress).await.unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.0 400") || response.starts_with("HTTP/1.1 400"), "{response}");
    shutdown.cancel();
}

#[test]
fn handle_is_cheap_shared_state() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<IngressHandle>();
}

#[tokio::test]
async fn serves_static_files_itself_with_cache_headers() {
    let dir = std::env::temp_dir().join(format!("paas-static-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("css")).unwrap();
    std::fs::write(dir.join("css/site.css"), "body{}").unwrap();
    // No backends: a static hit needs no replica, a miss falls through to the app (503 here).
    let mut r = route("shop.test", &[]);
    let (ingress, shutdown) = start_static_ingress(&mut r, &dir).await;
    let fetch = |path: &str, etag: Option<String>| {
        let mut req = Request::get(format!("http://{ingress}{path}")).header("host", "shop.test");
        if let Some(e) = etag {
            req = req.header("if-none-match", e);
        }
        client().request(req.body(Full::new(Bytes::new())).unwrap())
    };
    let resp = fetch("/static/css/site.css", None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["cache-control"], "public, max-age=60");
    assert_eq!(resp.headers()["content-type"], "text/css; charset=utf-8");
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "body{}");
    assert_eq!(fetch("/static/css/site.css", Some(etag)).await.unwrap().status(), StatusCode::NOT_MODIFIED);
    assert_eq!(fetch("/static/missing.css", None).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(fetch("/static/../x", None).await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    shutdown.cancel();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Sends `head` (request line and headers, no final blank line) on a fresh connection and
/// returns the raw response.
pub(super) async fn raw_request(ingress: SocketAddr, head: String) -> String {
    String::from_utf8_lossy(&raw_bytes(ingress, head).await).into_owned()
}

/// [`raw_request`]'s response as bytes (compressed bodies).
pub(super) async fn raw_bytes(ingress: SocketAddr, head: String) -> Vec<u8> {
    let mut stream = TcpStream::connect(ingress).await.unwrap();
    stream.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await.unwrap().unwrap();
    out
}

#[tokio::test]
async fn static_files_answer_ranges_and_never_follow_links() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("files");
    std::fs::create_dir_all(dir.join("css")).unwrap();
    std::fs::write(dir.join("digits.txt"), "0123456789").unwrap();
    std::fs::write(tmp.path().join("secret.key"), "SECRET").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
    std::os::unix::fs::symlink("../secret.key", dir.join("key")).unwrap();
    std::os::unix::fs::symlink("/", dir.join("root")).unwrap();
    std::os::unix::fs::symlink("css", dir.join("css-link")).unwrap();
    std::fs::hard_link(tmp.path().join("secret.key"), dir.join("css/hard")).unwrap();
    let mut r = route("shop.test", &[named_backend("app").await]);
    let (ingress, shutdown) = start_static_ingress(&mut r, &dir).await;
    let get = |path: &str, extra: &str| {
        raw_request(ingress, format!("GET {path} HTTP/1.1\r\nHost: shop.test{extra}"))
    };

    let whole = get("/static/digits.txt", "").await;
    assert!(whole.starts_with("HTTP/1.1 200"), "{whole}");
    assert!(whole.to_ascii_lowercase().contains("accept-ranges: bytes"), "{whole}");
    assert!(whole.ends_with("\r\n\r\n0123456789"), "{whole}");
    for (range, status, content_range, body) in [
        ("bytes=2-5", "206", "bytes 2-5/10", "2345"),
        ("bytes=7-", "206", "bytes 7-9/10", "789"),
        ("bytes=-2", "206", "bytes 8-9/10", "89"),
        ("bytes=10-", "416", "bytes */10", ""),
    ] {
        let resp = get("/static/digits.txt", &format!("\r\nRange: {range}")).await;
        assert!(resp.starts_with(&format!("HTTP/1.1 {status}")), "{range}: {resp}");
        assert!(resp.to_ascii_lowercase().contains(&format!("content-range: {content_range}")), "{resp}");
        assert!(resp.ends_with(&format!("\r\n\r\n{body}")), "{range}: {resp}");
    }
    // A range for another version of the file (If-Range) gets the whole current one.
    let resp = get("/static/digits.txt", "\r\nRange: bytes=2-5\r\nIf-Range: \"old\"").await;
    assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("0123456789"), "{resp}");
    let head = "HEAD /static/digits.txt HTTP/1.1\r\nHost: shop.test\r\nRange: bytes=0-3";
    let head = raw_request(ingress, head.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-length: 4"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");

    // Links of every kind are not served: the request goes on to the app.
    for path in ["passwd", "key", "root/etc/passwd", "css-link/hard", "css/hard", "%2e%2e/secret.key"] {
        let resp = get(&format!("/static/{path}"), "").await;
        assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("\r\n\r\napp"), "{path}: {resp}");
    }
    shutdown.cancel();
}

#[tokio::test]
async fn trusted_proxies_keep_their_forwarding_headers() {
    let backend = named_backend("a").await;
    let settings = Settings { trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()], ..Default::default() };
    let (ingress, _, shutdown) = start_ingress_with(&[route("app.test", &[backend])], settings).await;
    let req = Request::get("/")
        .header("host", "app.test")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https");
    let resp = send(ingress, req, "").await;
    assert_eq!(resp.headers()["seen-x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(resp.headers()["seen-x-forwarded-proto"], "https");
    shutdown.cancel();
}

#[tokio::test]
async fn backend_without_a_response_head_gets_504() {
    // Accepts and reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let settings = Settings { response_header_timeout: Duration::from_millis(300), ..Default::default() };
    let (ingress, _, shutdown) = start_ingress_with(&[route("app.test", &[backend])], settings).await;
    let (status, body) = get(ingress, "app.test").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(body.contains("did not answer in time"), "{body}");
    shutdown.cancel();
}

#[tokio::test]
async fn backend_that_never_accepts_gets_502_after_the_connect_timeout() {
    // A listener with a full accept queue: the kernel drops further SYNs, so connects hang.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let backend = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(backend)).await
        {
            fillers.push(s);
        }
    }
    let settings = Settings { connect_timeout: Duration::from_millis(300), ..Default::default() };
    let (ingress, _, shutdown) = start_ingress_with(&[route("app.test", &[backend])], settings).await;
    let (status, _) = get(ingress, "app.test").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    drop(listener);
    shutdown.cancel();
}

#[tokio::test]
async fn stalled_request_body_gets_408() {
    let backend = named_backend("a").await;
    let settings = Settings { body_read_timeout: Duration::from_millis(300), ..Default::default() };
    let (ingress, _, shutdown) = start_ingress_with(&[route("app.test", &[backend])], settings).await;
    let mut stream = TcpStream::connect(ingress).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await.unwrap().unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    shutdown.cancel();
}

#[tokio::test]
async fn slow_request_head_is_cut_off() {
    let settings = Settings { header_read_timeout: Duration::from_millis(300), ..Default::default() };
    let (ingress, _, shutdown) = start_ingress_with(&[], settings).await;
    let mut stream = TcpStream::connect(ingress).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: app").await.unwrap();
    let mut out = Vec::new();
    // The connection is closed by the ingress (read ends) long before the test's own deadline.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the ingress kept a half-sent request open");
    assert!(!String::from_utf8_lossy(&out).contains("200"), "{out:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let backend = named_backend("a").await;
    let settings = Settings { max_connections: 1, ..Default::default() };
    let (ingress, _, shutdown) = start_ingress_with(&[route("app.test", &[backend])], settings).await;
    let mut first = TcpStream::connect(ingress).await.unwrap();
    first.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n").await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut first)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The first connection stays open (keep-alive), so the second is not served...
    let second = tokio::spawn(get(ingress, "app.test"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "a connection beyond the cap was served");
    // ...until the first one closes.
    drop(first);
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), second).await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
    shutdown.cancel();
}

#[test]
fn parses_trusted_proxies() {
    assert_eq!(parse_trusted_proxy("10.0.0.0/8").unwrap(), "10.0.0.0/8".parse::<IpNet>().unwrap());
    assert_eq!(parse_trusted_proxy(" 192.0.2.7 ").unwrap(), "192.0.2.7/32".parse::<IpNet>().unwrap());
    assert_eq!(parse_trusted_proxy("::1").unwrap(), "::1/128".parse::<IpNet>().unwrap());
    let err = parse_trusted_proxy("10.0.0.0/33").unwrap_err();
    assert!(err.contains("neither an IP address nor a CIDR block"), "{err}");
}

/// An ingress serving `r` with static files from `dir` under `/static/`.
pub(super) async fn start_static_ingress(
    r: &mut Route,
    dir: &std::path::Path,
) -> (SocketAddr, CancellationToken) {
    let st = protocol::agent::StaticRoute {
        image: "sha256:0123456789abcdef0123".into(),
        dir: "/app/public".into(),
        prefix: "/static/".into(),
        max_age_secs: 60,
        errors: r.static_files.take().map(|st| st.errors).unwrap_or_default(),
    };
    r.static_files = Some(st.clone());
    let (ingress, handle, shutdown) = start_ingress(std::slice::from_ref(r)).await;
    handle.set_static_root(&st.key(), dir.to_path_buf());
    (ingress, shutdown)
}

/// An ingress whose access lines land in the returned receiver.
async fn start_logged_ingress(
    routes: &[Route],
    trusted_proxies: Vec<IpNet>,
) -> (SocketAddr, mpsc::Receiver<protocol::logs::ShippedLine>, CancellationToken) {
    let (logs, lines) = crate::logs::LogHandle::pushed_to(100);
    let settings = Settings { trusted_proxies, logs, ..Settings::default() };
    let (ingress, _, shutdown) = start_ingress_with(routes, settings).await;
    (ingress, lines, shutdown)
}

async fn next_line(lines: &mut mpsc::Receiver<protocol::logs::ShippedLine>) -> protocol::logs::ShippedLine {
    tokio::time::timeout(Duration::from_secs(10), lines.recv()).await.unwrap().unwrap()
}

#[tokio::test]
async fn answered_requests_get_an_access_line_and_a_fresh_request_id() {
    let backend = named_backend("alpha").await;
    let (ingress, mut lines, shutdown) = start_logged_ingress(&[route("app.test", &[backend])], vec![]).await;
    let req = Request::get("/").header("host", "App.Test:80").header("x-request-id", "chosen-by-client");
    let resp = send(ingress, req, "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(id, "chosen-by-client");
    assert_eq!(resp.headers()["seen-x-request-id"], id.as_str(), "the backend got the same id");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "alpha");

    let line = next_line(&mut lines).await;
    assert_eq!((line.app.as_str(), line.env.as_str(), line.release), ("shop", "production", 1));
    assert_eq!(
        (line.source, line.process.as_str(), line.replica),
        (protocol::logs::LogSource::Router, "web", 1)
    );
    let text = &line.text;
    assert!(text.starts_with("at=info method=GET path=\"/path?q=1\" host=app.test "), "{text}");
    for part in
        [format!(" request_id={id} "), " fwd=\"127.0.0.1\" dyno=web.1 ".into(), " status=200 bytes=5 ".into()]
    {
        assert!(text.contains(&part), "{part} in {text}");
    }
    assert!(text.contains(" connect=") && text.contains("ms service="), "{text}");
    assert!(line.at.ends_with('Z') && line.at.len() == 30, "{}", line.at);
    shutdown.cancel();
}

#[tokio::test]
async fn a_trusted_proxys_request_id_is_kept() {
    let backend = named_backend("alpha").await;
    let trusted = vec!["127.0.0.0/8".parse().unwrap()];
    let (ingress, mut lines, shutdown) =
        start_logged_ingress(&[route("app.test", &[backend])], trusted).await;
    let req = Request::get("/").header("host", "app.test").header("x-request-id", "edge-1234");
    let resp = send(ingress, req, "").await;
    assert_eq!(resp.headers()["x-request-id"], "edge-1234");
    assert_eq!(resp.headers()["seen-x-request-id"], "edge-1234");
    assert!(next_line(&mut lines).await.text.contains(" request_id=edge-1234 "));
    shutdown.cancel();
}

#[tokio::test]
async fn ingress_answers_get_error_lines_and_unknown_hosts_none() {
    let routes = [route("none.test", &[]), route("dead.test", &[dead_addr().await])];
    let (ingress, mut lines, shutdown) = start_logged_ingress(&routes, vec![]).await;
    // Unknown host: a request id, but no line (the next line is the next request's).
    let resp = send(ingress, Request::get("/").header("host", "nope.test"), "").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(get(ingress, "none.test").await.0, StatusCode::SERVICE_UNAVAILABLE);
    let line = next_line(&mut lines).await;
    assert!(line.text.starts_with("at=error desc=\"No healthy replica\" "), "{}", line.text);
    assert!(line.text.contains(" host=none.test ") && line.text.contains(" dyno=none "), "{}", line.text);
    assert!(line.text.contains(" status=503 "), "{}", line.text);
    assert_eq!((line.process.as_str(), line.replica), ("router", 0));
    assert_eq!(get(ingress, "dead.test").await.0, StatusCode::BAD_GATEWAY);
    let line = next_line(&mut lines).await;
    assert!(line.text.starts_with("at=error desc=\"No replica answered\" "), "{}", line.text);
    assert!(line.text.contains(" status=502 "), "{}", line.text);
    shutdown.cancel();
}

#[tokio::test]
async fn a_full_log_queue_drops_and_counts_without_holding_requests() {
    let backend = named_backend("alpha").await;
    let (logs, mut lines) = crate::logs::LogHandle::pushed_to(1);
    let settings = Settings { logs: logs.clone(), ..Settings::default() };
    let (ingress, _, shutdown) = start_ingress_with(&[route("app.test", &[backend])], settings).await;
    for _ in 0..3 {
        assert_eq!(get(ingress, "app.test").await.0, StatusCode::OK);
    }
    // The lines are written once the bodies are done: wait for the two beyond the queue.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while logs.lost().values().sum::<u64>() < 2 {
        assert!(std::time::Instant::now() < deadline, "lost: {:?}", logs.lost());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(logs.lost(), [(("shop".to_string(), "production".to_string()), 2)].into());
    assert!(lines.try_recv().is_ok());
    shutdown.cancel();
}

#[path = "tls_tests.rs"]
mod tls;

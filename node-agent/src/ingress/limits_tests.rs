//! Tests of the per-app protections over real sockets on 127.0.0.1: the body size limit (by
//! declared length and while a chunked body streams), the per-client rate limit, the
//! concurrency cap and maintenance mode, each answered with its page and never reaching the app
//! when it should not.

use super::tests::{
    get, named_backend, raw_request, route, spawn_backend, start_ingress, start_ingress_with, text,
};
use super::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use protocol::manifest::IngressLimits;
use std::sync::atomic::AtomicU64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn limited(host: &str, backends: &[SocketAddr], limits: IngressLimits) -> Route {
    Route { limits, ..route(host, backends) }
}

/// A backend that counts the requests and body bytes it gets, reading bodies to their end (or
/// to where the ingress cut them off).
async fn counting_backend() -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicU64>) {
    let (hits, bytes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicU64::new(0)));
    let (h, b) = (hits.clone(), bytes.clone());
    let addr = spawn_backend(move |req: Request<Incoming>| {
        let (hits, bytes) = (h.clone(), b.clone());
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let mut body = req.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
                }
            }
            text("counted")
        }
    })
    .await;
    (addr, hits, bytes)
}

#[tokio::test]
async fn a_declared_body_past_the_limit_gets_413_before_it_is_read() {
    let (backend, hits, _) = counting_backend().await;
    let limits = IngressLimits { max_body_bytes: 1024, ..Default::default() };
    let (ingress, _, shutdown) = start_ingress(&[limited("app.test", &[backend], limits)]).await;
    // With `Expect: 100-continue` the client waits: it must get the 413, not a 100.
    let head =
        "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4096\r\nExpect: 100-continue".to_string();
    let out = raw_request(ingress, head).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("Request too large") && out.contains("(1 KiB)"), "{out}");
    assert!(out.to_ascii_lowercase().contains("connection: close"), "{out}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the app saw a refused request");
    // A body within the limit goes through.
    let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{ingress}/"))
        .header("host", "app.test")
        .body(Full::new(Bytes::from(vec![b'x'; 1024])))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    shutdown.cancel();
}

#[tokio::test]
async fn a_streamed_body_growing_past_the_limit_is_cut_off_with_413() {
    let (backend, _, bytes) = counting_backend().await;
    let limits = IngressLimits { max_body_bytes: 1024, ..Default::default() };
    let (ingress, _, shutdown) = start_ingress(&[limited("app.test", &[backend], limits)]).await;
    let mut stream = TcpStream::connect(ingress).await.unwrap();
    let head = "POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    // Three 512-byte chunks, no final chunk: the third crosses the limit, and the client then
    // waits for an answer as a slow uploader would.
    for _ in 0..3 {
        let chunk = format!("200\r\n{}\r\n", "y".repeat(512));
        stream.write_all(chunk.as_bytes()).await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await.unwrap().unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("Request too large"), "{out}");
    assert!(bytes.load(Ordering::SeqCst) <= 1024, "the app got {} bytes", bytes.load(Ordering::SeqCst));
    shutdown.cancel();
}

/// GET / with `extra` headers; the status, `Retry-After` and body.
async fn get_with(ingress: SocketAddr, host: &str, extra: &[(&str, &str)]) -> (StatusCode, String, String) {
    let mut head = format!("GET / HTTP/1.1\r\nHost: {host}");
    for (k, v) in extra {
        head.push_str(&format!("\r\n{k}: {v}"));
    }
    let out = raw_request(ingress, head).await;
    let status = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let retry = out
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after: ").map(str::to_string))
        .unwrap_or_default();
    (StatusCode::from_u16(status).unwrap(), retry, out)
}

#[tokio::test]
async fn a_client_past_the_rate_limit_gets_429_with_retry_after() {
    let backend = named_backend("a").await;
    let limits = IngressLimits { rate_per_sec: 1, rate_burst: 2, ..Default::default() };
    // The ingress believes the local proxy's X-Real-IP, so the test can be several clients.
    let settings = Settings { trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()], ..Default::default() };
    let (ingress, _, shutdown) =
        start_ingress_with(&[limited("app.test", &[backend], limits)], settings).await;
    let one = [("X-Real-IP", "203.0.113.1")];
    assert_eq!(get_with(ingress, "app.test", &one).await.0, StatusCode::OK);
    assert_eq!(get_with(ingress, "app.test", &one).await.0, StatusCode::OK);
    let (status, retry, out) = get_with(ingress, "app.test", &one).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{out}");
    assert_eq!(retry, "1", "{out}");
    assert!(out.contains("Too many requests") && out.contains("text/html"), "{out}");
    // Another client has its own allowance.
    let other = [("X-Real-IP", "203.0.113.2")];
    assert_eq!(get_with(ingress, "app.test", &other).await.0, StatusCode::OK);
    shutdown.cancel();
}

#[tokio::test]
async fn requests_past_the_concurrency_cap_get_503_at_once() {
    // Requests to /hold wait until `release` is cancelled.
    let release = CancellationToken::new();
    let held = release.clone();
    let backend = spawn_backend(move |req: Request<Incoming>| {
        let held = held.clone();
        async move {
            if req.uri().path() == "/hold" {
                held.cancelled().await;
            }
            text("done")
        }
    })
    .await;
    let limits = IngressLimits { max_concurrent: 2, ..Default::default() };
    let (ingress, handle, shutdown) = start_ingress(&[limited("app.test", &[backend], limits)]).await;
    let hold = || {
        tokio::spawn(
            async move { raw_request(ingress, "GET /hold HTTP/1.1\r\nHost: app.test".to_string()).await },
        )
    };
    let (a, b) = (hold(), hold());
    let guards = handle.lookup("app.test").unwrap().guards.clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while guards.active() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the two held requests reach the app");
    let (status, retry, out) = get_with(ingress, "app.test", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{out}");
    assert_eq!(retry, "1");
    assert!(out.contains("at capacity"), "{out}");
    release.cancel();
    for held in [a, b] {
        assert!(held.await.unwrap().starts_with("HTTP/1.1 200"));
    }
    // The slots are given back once the responses are done.
    tokio::time::timeout(Duration::from_secs(10), async {
        while guards.active() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the slots are released");
    assert_eq!(get(ingress, "app.test").await.0, StatusCode::OK);
    shutdown.cancel();
}

#[tokio::test]
async fn maintenance_mode_answers_503_without_touching_the_app() {
    let (backend, hits, _) = counting_backend().await;
    let on = Route { maintenance: true, ..route("app.test", &[backend]) };
    let domain = Route { host: "shop.example".into(), ..on.clone() };
    let (ingress, handle, shutdown) = start_ingress(&[on, domain]).await;
    for host in ["app.test", "shop.example"] {
        let (status, retry, out) = get_with(ingress, host, &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{out}");
        assert_eq!(retry, "120");
        assert!(out.contains("down for maintenance"), "{out}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    handle.set_routes(&[route("app.test", &[backend])]);
    assert_eq!(get(ingress, "app.test").await, (StatusCode::OK, "counted".to_string()));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    shutdown.cancel();
}

#[test]
fn an_environments_hostnames_share_their_guards_across_table_swaps() {
    let handle = IngressHandle::new();
    let a = route("app.test", &[]);
    let domain = Route { host: "shop.example".into(), ..a.clone() };
    let other = Route { env: "staging".into(), host: "app-staging.test".into(), ..a.clone() };
    handle.set_routes(&[a.clone(), domain.clone(), other.clone()]);
    let guards = |host: &str| handle.lookup(host).unwrap().guards.clone();
    let before = guards("app.test");
    assert!(Arc::ptr_eq(&before, &guards("shop.example")));
    assert!(!Arc::ptr_eq(&before, &guards("app-staging.test")));
    handle.set_routes(&[Route { release: 2, ..a }, domain, other]);
    assert!(Arc::ptr_eq(&before, &guards("app.test")));
}

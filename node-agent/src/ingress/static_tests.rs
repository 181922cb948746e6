//! Tests over real sockets of what the ingress serves from a release's files: compressed copies
//! chosen by `Accept-Encoding`, immutable caching of fingerprinted names, and the app's own
//! `[errors]` pages in place of the ingress's (never in place of the app's own answers).

use super::tests::{dead_addr, raw_bytes, raw_request, route, spawn_backend, start_static_ingress, text};
use super::*;
use http::StatusCode;
use protocol::agent::StaticRoute;
use std::io::Read;

/// `raw` split into its head (lower-cased) and body bytes.
fn split(raw: &[u8]) -> (String, Vec<u8>) {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    (String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase(), raw[end..].to_vec())
}

#[tokio::test]
async fn text_files_go_out_compressed_as_the_client_accepts_and_fingerprinted_ones_immutable() {
    let tmp = tempfile::tempdir().unwrap();
    let files = tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let script = "export function greet(name) { return `hello, ${name}`; }\n".repeat(100);
    std::fs::write(files.join("app.3f2a9c1b.js"), &script).unwrap();
    std::fs::write(files.join("site.css"), "body { margin: 0; padding: 0; }\n".repeat(50)).unwrap();
    crate::precompress::precompress(&files).unwrap();
    let mut r = route("shop.test", &[]);
    let (ingress, shutdown) = start_static_ingress(&mut r, &files).await;
    let get = |path: &str, extra: &str| {
        raw_bytes(ingress, format!("GET {path} HTTP/1.1\r\nHost: shop.test{extra}"))
    };

    let (head, body) = split(&get("/static/app.3f2a9c1b.js", "\r\nAccept-Encoding: gzip, deflate, br").await);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-encoding: br\r\n"), "{head}");
    assert!(head.contains("vary: accept-encoding\r\n"), "{head}");
    assert!(head.contains("cache-control: public, max-age=31536000, immutable\r\n"), "{head}");
    let mut plain = Vec::new();
    brotli::Decompressor::new(&body[..], 4096).read_to_end(&mut plain).unwrap();
    assert_eq!(plain, script.as_bytes());
    assert!(body.len() * 5 < script.len(), "{} of {} bytes", body.len(), script.len());
    let br_tag = head.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap().to_string();

    // Brotli refused: gzip; neither: the file itself, with another tag.
    let (head, body) =
        split(&get("/static/app.3f2a9c1b.js", "\r\nAccept-Encoding: br;q=0, gzip;q=0.5").await);
    assert!(head.contains("content-encoding: gzip\r\n"), "{head}");
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut plain).unwrap();
    assert_eq!(plain, script);
    for extra in ["", "\r\nAccept-Encoding: identity", "\r\nAccept-Encoding: *;q=0"] {
        let (head, body) = split(&get("/static/app.3f2a9c1b.js", extra).await);
        assert!(!head.contains("content-encoding"), "{extra}: {head}");
        assert_eq!(body, script.as_bytes(), "{extra}");
        assert!(!head.contains(&br_tag), "each representation has its own tag: {head}");
    }
    // A range is of the file itself; a revalidation of the brotli copy is answered 304.
    let (head, body) =
        split(&get("/static/app.3f2a9c1b.js", "\r\nAccept-Encoding: br\r\nRange: bytes=0-5").await);
    assert!(head.starts_with("http/1.1 206") && !head.contains("content-encoding"), "{head}");
    assert_eq!(body, &script.as_bytes()[..6]);
    let revalidate = format!("\r\nAccept-Encoding: br\r\nIf-None-Match: {br_tag}");
    let (head, _) = split(&get("/static/app.3f2a9c1b.js", &revalidate).await);
    assert!(head.starts_with("http/1.1 304"), "{head}");
    // A name without a content hash keeps the route's max-age.
    let (head, _) = split(&get("/static/site.css", "\r\nAccept-Encoding: gzip").await);
    assert!(head.contains("content-encoding: gzip\r\n"), "{head}");
    assert!(head.contains("cache-control: public, max-age=60\r\n"), "{head}");
    shutdown.cancel();
}

/// A route whose `[errors]` maps 503 and the 5xx class to pages under `files`.
fn route_with_pages(backends: &[SocketAddr]) -> Route {
    let errors = [("503", "errors/busy.html"), ("5xx", "errors/oops.html")];
    let mut r = route("shop.test", backends);
    r.static_files = Some(StaticRoute {
        image: String::new(),
        dir: String::new(),
        prefix: String::new(),
        max_age_secs: 0,
        errors: errors.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    });
    r
}

#[tokio::test]
async fn the_apps_error_pages_replace_the_ingresss_own_but_never_the_apps_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let files = tmp.path().join("files");
    std::fs::create_dir_all(files.join("errors")).unwrap();
    std::fs::write(files.join("errors/busy.html"), "<h1>We are busy</h1>").unwrap();
    std::fs::write(files.join("errors/oops.html"), "<h1>Oops</h1>").unwrap();
    let get =
        |ingress, extra: &str| raw_request(ingress, format!("GET / HTTP/1.1\r\nHost: shop.test{extra}"));

    // No replica: the ingress's 503, with the app's page.
    let mut r = route_with_pages(&[]);
    let (ingress, shutdown) = start_static_ingress(&mut r, &files).await;
    let out = get(ingress, "").await;
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.ends_with("<h1>We are busy</h1>"), "{out}");
    assert!(out.to_ascii_lowercase().contains("content-type: text/html; charset=utf-8"), "{out}");
    shutdown.cancel();

    // Maintenance: the page, and the ingress's Retry-After stays.
    let mut r = Route { maintenance: true, ..route_with_pages(&[]) };
    let (ingress, shutdown) = start_static_ingress(&mut r, &files).await;
    let out = get(ingress, "").await;
    assert!(out.starts_with("HTTP/1.1 503") && out.ends_with("<h1>We are busy</h1>"), "{out}");
    assert!(out.to_ascii_lowercase().contains("retry-after: 120"), "{out}");
    shutdown.cancel();

    // A replica that refuses: 502, the class's page.
    let mut r = route_with_pages(&[dead_addr().await]);
    let (ingress, shutdown) = start_static_ingress(&mut r, &files).await;
    let out = get(ingress, "").await;
    assert!(out.starts_with("HTTP/1.1 502") && out.ends_with("<h1>Oops</h1>"), "{out}");
    shutdown.cancel();

    // The app's own 503 is the app's to word.
    let app = spawn_backend(|_req| async {
        let mut resp = text("the app says: busy");
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        resp
    })
    .await;
    let mut r = route_with_pages(&[app]);
    let (ingress, shutdown) = start_static_ingress(&mut r, &files).await;
    let out = get(ingress, "").await;
    assert!(out.starts_with("HTTP/1.1 503") && out.ends_with("the app says: busy"), "{out}");
    shutdown.cancel();

    // A page that is missing leaves the ingress's own.
    std::fs::remove_file(files.join("errors/busy.html")).unwrap();
    let mut r = route_with_pages(&[]);
    let (ingress, shutdown) = start_static_ingress(&mut r, &files).await;
    let out = get(ingress, "").await;
    assert!(out.starts_with("HTTP/1.1 503") && out.contains("No healthy replica"), "{out}");
    shutdown.cancel();
}

//! The ingress's per-app protections end to end: the hello example deployed with a small body
//! limit and a rate limit in its `paas.toml` gets 413 past the body limit (answered before the
//! body is read) and 429 with `Retry-After` past the rate; `paas maintenance on` makes the
//! ingress answer 503 with the app's own `[errors]` page for it (the 413 and 429 keep the
//! platform's), and `off` brings the app back. The same deploy checks the ingress's static
//! files: compressed copies by `Accept-Encoding`, immutable caching of fingerprinted names.

use paas_tests::{http, Platform};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const MANIFEST: &str = "[processes.web]\nhealthcheck = { path = \"/healthz\" }\n\
                        [deploy]\nstability_window = \"0s\"\n\
                        [ingress]\nmax_body = \"64k\"\nrate_limit = 5\nrate_burst = 10\n\
                        [static]\ndir = \"/app/public\"\n\
                        [errors]\n503 = \"errors/busy.html\"\n";

/// The app's page for the ingress's 503s (`[errors]`).
const BUSY_PAGE: &str = "<h1>Our own page: back soon</h1>";

/// Sends only the head of a request that announces `length` body bytes and waits for the
/// answer, as a client using `Expect: 100-continue` does.
fn announce_body(addr: &str, host: &str, length: usize) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /health/ok HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

/// Asks until the answer is not a 429 (the rate limit also counts the test's own requests).
fn past_the_rate_limit(mut ask: impl FnMut() -> (u16, String)) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, out) = ask();
        if status != 429 || Instant::now() > deadline {
            return (status, out);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls the ingress until `host` answers `status` with a body containing `needle`.
#[track_caller]
fn wait_for(p: &Platform, host: &str, status: u16, needle: &str) -> http::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = p.get(host, "/");
        if r.status == status && r.body.contains(needle) {
            return r;
        }
        assert!(Instant::now() < deadline, "{host} never answered {status} with {needle:?}; last {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A fingerprinted script and the app's error page in the example's static directory; the script.
fn add_static_files(src: &Path) -> String {
    let script = "export function greet(name) { return `hello, ${name}`; }\n".repeat(300);
    std::fs::write(src.join("public/app.3f2a9c1b.js"), &script).unwrap();
    std::fs::create_dir_all(src.join("public/errors")).unwrap();
    std::fs::write(src.join("public/errors/busy.html"), BUSY_PAGE).unwrap();
    script
}

/// The ingress's static files: the script in the encoding the client prefers, immutable.
fn check_static_files(p: &Platform, host: &str, script: &str) {
    let fetch = |encodings: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let headers = [("Accept-Encoding", encodings)];
            let r = http::request(&p.ingress, "GET", host, "/static/app.3f2a9c1b.js", &headers, "");
            if r.status != 429 || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let r = fetch("gzip, deflate, br");
    let head = r.headers.to_ascii_lowercase();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(head.contains("content-encoding: br"), "{head}");
    assert!(head.contains("cache-control: public, max-age=31536000, immutable"), "{head}");
    let mut plain = Vec::new();
    brotli::Decompressor::new(&r.body_bytes[..], 4096).read_to_end(&mut plain).unwrap();
    assert_eq!(plain, script.as_bytes());
    assert!(r.body_bytes.len() * 10 < script.len(), "{} bytes of {}", r.body_bytes.len(), script.len());
    let r = fetch("gzip");
    assert!(r.headers.to_ascii_lowercase().contains("content-encoding: gzip"), "{r:?}");
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&r.body_bytes[..]).read_to_string(&mut plain).unwrap();
    assert_eq!(plain, script);
    let r = fetch("identity");
    assert!(!r.headers.to_ascii_lowercase().contains("content-encoding"), "{r:?}");
    assert_eq!(r.body, script);
}

#[test]
fn body_limit_rate_limit_and_maintenance_mode_answer_with_their_pages() {
    let mut p = Platform::start();
    let app = p.app_name("limits");
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), MANIFEST).unwrap();
    let script = add_static_files(src.path());
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let host = p.host(&app);
    p.wait_for_body(&host, "served by", Duration::from_secs(60));
    check_static_files(&p, &host, &script);

    // Past the body limit: 413 with the platform's page, before the client sends the body.
    let (status, out) = past_the_rate_limit(|| {
        let out = announce_body(&p.ingress, &host, 100 * 1024);
        (out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), out)
    });
    assert_eq!(status, 413, "{out}");
    assert!(out.contains("Request too large") && out.contains("64 KiB"), "{out}");
    assert!(!out.contains("100 Continue"), "the body was asked for: {out}");
    // A body within the limit reaches the app.
    let body = "x".repeat(60 * 1024);
    let r = past_the_rate_limit(|| {
        let r = http::request(&p.ingress, "POST", &host, "/health/ok", &[], &body);
        (r.status, format!("{r:?}"))
    });
    assert_eq!(r.0, 200, "{}", r.1);

    // Past the rate: 429 with Retry-After and a page, while the burst lasts no longer than
    // the limit allows.
    let started = Instant::now();
    let answers: Vec<http::Response> = (0..40).map(|_| p.get(&host, "/")).collect();
    let elapsed = started.elapsed().as_secs_f64();
    let limited = answers.iter().find(|r| r.status == 429).expect("no request was rate limited");
    let lower = limited.headers.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 1"), "{limited:?}");
    assert!(limited.body.contains("Too many requests"), "{limited:?}");
    let served = answers.iter().filter(|r| r.status == 200).count();
    let allowed = 10 + (5.0 * elapsed).ceil() as usize;
    assert!(served <= allowed, "{served} of 40 served in {elapsed:.1}s at 5/s with a burst of 10");
    assert!(answers.iter().all(|r| r.status == 200 || r.status == 429), "{answers:?}");

    // Maintenance mode: the ingress answers 503, with the app's own page for it (`[errors]`);
    // the app is back once it is off.
    p.paas(&["maintenance", "on", "--app", &app]).expect_ok();
    let r = wait_for(&p, &host, 503, BUSY_PAGE);
    assert!(r.headers.to_ascii_lowercase().contains("retry-after: 120"), "{r:?}");
    let envs = p.paas(&["envs", "list", "--app", &app]).expect_ok();
    assert!(envs.stdout.contains("maintenance"), "{}", envs.stdout);
    let json = p.paas(&["--output", "json", "apps", "list"]).expect_ok().json();
    let listed = json.as_array().unwrap().iter().find(|a| a["name"] == app.as_str()).unwrap();
    assert_eq!(listed["envs"][0]["maintenance"], true, "{listed}");
    p.paas(&["maintenance", "off", "--app", &app]).expect_ok();
    wait_for(&p, &host, 200, "served by");
    // An unknown environment is refused with one clear sentence.
    p.paas(&["maintenance", "on", "--app", &app, "--env", "nope"]).expect_err("no environment named");
}

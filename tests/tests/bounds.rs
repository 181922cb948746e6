//! Bounds end to end: `paas run -- yes` costs the platform little memory, and a run started
//! through the API without joining it costs the store a capped number of rows; a failing release command's error shows its real last lines,
//! masked; the API closes connections that never finish their request head (body limits are
//! tested beside the router, `control-plane/src/http/mod.rs`).

use paas_tests::{http, paas_bin, Platform};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FAST: &str =
    "[processes.web]\nhealthcheck = { path = \"/healthz\" }\n[deploy]\nstability_window = \"0s\"\n";
/// Output lines the store keeps per job (`control-plane/src/store/jobs.rs`).
const MAX_JOB_LINES: usize = 10_000;

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS in /proc/pid/status");
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// Every output line of run `id` the API still has, read from the start.
fn stored_output(p: &Platform, app: &str, id: &str) -> Vec<String> {
    let auth = format!("Bearer {}", p.token());
    let (mut after, mut lines) = (0u64, Vec::new());
    loop {
        let path = format!("/api/v1/apps/{app}/envs/production/runs/{id}?after={after}");
        let r = http::request(p.api_addr(), "GET", "paas", &path, &[("Authorization", &auth)], "");
        assert_eq!(r.status, 200, "{r:?}");
        let page: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let got = page["lines"].as_array().unwrap();
        lines.extend(got.iter().map(|l| l.as_str().unwrap().to_string()));
        after = page["next"].as_u64().unwrap();
        if page["finished"] == true || got.is_empty() {
            return lines;
        }
    }
}

#[test]
fn a_run_printing_without_end_for_a_minute_costs_bounded_memory_and_store_rows() {
    let mut p = Platform::start();
    let app = p.app_name("yes");
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), FAST).unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    // A first run, so what any run allocates once is in the baseline.
    p.paas(&["run", "--app", &app, "--", "true"]).expect_ok();
    let before = rss_kib(p.pid());

    // `paas run`: the output streams through the platform as fast as the reader takes it.
    let mut run = Command::new(paas_bin())
        .args(["run", "--app", &app, "--", "timeout", "20", "yes"])
        .env("XDG_CONFIG_HOME", p.dir.path().join("config"))
        .env_remove("PAAS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = run.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).filter(|l| l == "y").count()
    });
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(120);
    while run.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the run did not end");
        peak = peak.max(rss_kib(p.pid()));
        std::thread::sleep(Duration::from_millis(250));
    }
    let status = run.wait().unwrap();
    let ys = reader.join().unwrap();
    let mut stderr = String::new();
    run.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(124), "`timeout` ends yes with 124, passed through: {stderr}");
    let grown = peak.saturating_sub(before);
    eprintln!(
        "paas up RSS before {before} KiB, peak {peak} KiB during `paas run` (+{grown} KiB); {ys} lines"
    );
    assert!(grown < 50 * 1024, "the platform grew by {grown} KiB while `yes` ran");
    assert!(ys > 100_000, "the output streamed: {ys} lines");

    // A run started through the API without joining it: its output is stored, capped, and read
    // back by line number; what the store could not take in time is counted, not silent.
    let auth = format!("Bearer {}", p.token());
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let runs = format!("/api/v1/apps/{app}/envs/production/runs");
    let body = r#"{"command": ["timeout", "40", "yes"]}"#;
    let started = http::request(p.api_addr(), "POST", "paas", &runs, &headers, body);
    assert_eq!(started.status, 202, "{started:?}");
    let id =
        serde_json::from_str::<serde_json::Value>(&started.body).unwrap()["id"].as_str().unwrap().to_string();
    let (mut after, mut ys, mut markers, mut peak) = (0u64, 0u64, Vec::new(), before);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "the run did not end");
        peak = peak.max(rss_kib(p.pid()));
        let path = format!("{runs}/{id}?after={after}&wait=5");
        let r = http::request(p.api_addr(), "GET", "paas", &path, &headers[..1], "");
        assert_eq!(r.status, 200, "{r:?}");
        let page: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        for line in page["lines"].as_array().unwrap().iter().filter_map(|l| l.as_str()) {
            if line == "y" {
                ys += 1;
            } else {
                markers.push(line.to_string());
            }
        }
        after = page["next"].as_u64().unwrap();
        if page["finished"] == true {
            assert_eq!(page["exit_code"], 124, "{page}");
            break;
        }
    }
    let grown = peak.saturating_sub(before);
    eprintln!("paas up RSS peak {peak} KiB during the stored run (+{grown} KiB); {ys} lines read back");
    assert!(grown < 50 * 1024, "the platform grew by {grown} KiB while `yes` ran");
    assert!(ys > 10_000, "the output streamed: {ys} lines");
    assert!(
        markers.iter().any(|m| m.starts_with("[paas] ") && m.ends_with(" lines dropped")),
        "what was left out is counted: {markers:?}"
    );

    // The store keeps the newest lines and says how many it no longer has.
    let stored = stored_output(&p, &app, &id);
    assert!(stored.len() <= MAX_JOB_LINES + 1, "{} lines stored", stored.len());
    assert!(
        stored[0].starts_with("[paas] ") && stored[0].ends_with(" earlier lines were not kept"),
        "{}",
        stored[0]
    );

    // And the platform still answers.
    p.paas(&["apps", "list"]).expect_ok();
    p.wait_for_body(&p.host(&app), "Hello from paas!", Duration::from_secs(30));
    let ok = p.paas(&["run", "--app", &app, "--", "echo", "still here"]).expect_ok();
    assert_eq!(ok.stdout.trim(), "still here");
}

#[test]
fn a_failing_release_command_shows_its_own_last_lines_masked() {
    let mut p = Platform::start();
    let app = p.app_name("relfail");
    let src = paas_tests::example_copy("hello");
    // 3000 lines, then a secret and the line that explains the failure.
    let script = "import os, sys; [print(f'migration line {i}') for i in range(1, 3001)]; \
                  print('token is', os.environ['API_TOKEN']); print('the real last line'); sys.exit(3)";
    let manifest = format!("{FAST}[release]\ncommand = [\"python3\", \"-c\", \"{script}\"]\n");
    std::fs::write(src.path().join("paas.toml"), manifest).unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["config", "set", "--app", &app, "API_TOKEN=hunter2-very-secret"]).expect_ok();
    let out = p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]);
    let out = out.expect_err("the release command exited with 3");
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    // A first deploy: no "old release" to keep serving.
    assert!(
        out.stderr.contains("nothing served before it") && !out.stderr.contains("old release"),
        "{}",
        out.stderr
    );

    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    let error = releases[0]["error"].as_str().unwrap();
    let tail = error.split_once("Last lines:\n").map_or("", |(_, t)| t);
    let tail: Vec<&str> = tail.lines().collect();
    assert_eq!(tail.last(), Some(&"the real last line"), "{error}");
    assert_eq!(tail.len(), 20, "{error}");
    assert!(tail.contains(&"token is ****") && tail.contains(&"migration line 3000"), "{error}");
    assert!(!error.contains("hunter2") && !error.contains("migration line 1000\n"), "{error}");
}

#[test]
fn the_api_closes_connections_that_never_finish_their_request_head() {
    let p = Platform::start();
    let mut slow = TcpStream::connect(p.api_addr()).unwrap();
    slow.write_all(b"GET /api/v1/apps HTTP/1.1\r\nHost: paas\r\nX-Never-Ending: ").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let closed = match slow.read_to_end(&mut answer) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    let waited = started.elapsed();
    assert!(closed, "the connection was still open after {waited:?}");
    assert!(waited < Duration::from_secs(20), "closed only after {waited:?}");
    // Meanwhile and afterwards the API serves whole requests.
    p.paas(&["apps", "list"]).expect_ok();
}

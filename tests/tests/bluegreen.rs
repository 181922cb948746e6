//! Blue/green deploys end to end: no failed request under continuous keep-alive load across
//! deploys and rollbacks, long requests finish on the old release, failing releases never take
//! traffic, unhealthy replicas leave rotation and come back, scaling touches only what changes.

use paas_tests::load::{served_by, Load, Sample};
use paas_tests::{docker, http, Platform};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const SERVE: Duration = Duration::from_secs(60);

/// Copies examples/hello with `manifest` as its paas.toml, creates `app` and deploys it
/// (building the image); returns the directory and the image tag.
fn first_deploy(p: &Platform, app: &str, manifest: &str) -> (tempfile::TempDir, String) {
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), manifest).unwrap();
    p.paas(&["apps", "create", app]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", app]).expect_ok();
    p.wait_for_body(&p.host(app), "Hello from paas!", SERVE);
    (src, format!("paas/{app}--production:v1"))
}

/// A directory holding only a paas.toml, for `paas deploy DIR --image IMG`.
fn manifest_dir(manifest: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("paas.toml"), manifest).unwrap();
    dir
}

/// Hostnames (short container ids) of a release's containers.
fn hosts(app: &str, release: u64) -> HashSet<String> {
    let out = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=paas.app={app}"),
        "--filter",
        &format!("label=paas.release={release}"),
    ]);
    out.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
}

fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| s.status != 200).collect()
}

const TWO_REPLICAS: &str = r#"
[processes.web]
replicas = 2
healthcheck = { path = "/healthz", interval = "1s" }
[deploy]
stability_window = "500ms"
drain_timeout = "10s"
"#;

#[test]
fn no_request_fails_across_ten_deploys_and_two_rollbacks() {
    let mut p = Platform::start();
    let app = p.app_name("bg");
    let (src, image) = first_deploy(&p, &app, TWO_REPLICAS);
    let dir = src.path().to_str().unwrap();
    let load = Load::start(&p.ingress, &p.host(&app), 4);
    let began = Instant::now();

    // (release, when its deploy started, when it returned, its containers)
    let mut marks: Vec<(u64, Instant, Instant, HashSet<String>)> = Vec::new();
    for i in 0..12 {
        let started = Instant::now();
        let out = if i < 10 {
            p.paas(&["deploy", dir, "--app", &app, "--image", &image, "-o", "json"])
        } else {
            p.paas(&["rollback", "--app", &app, "-o", "json"])
        };
        let out = out.expect_ok();
        let returned = Instant::now();
        let version = out.json()["version"].as_u64().unwrap();
        marks.push((version, started, returned, hosts(&app, version)));
    }
    std::thread::sleep(Duration::from_millis(500));
    let samples = load.finish();
    let elapsed = began.elapsed().as_secs_f64();

    let failed = failures(&samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    let rate = samples.len() as f64 / elapsed;
    assert!(rate >= 100.0, "the load generator only reached {rate:.0} requests/s");
    // Every request that started after a deploy returned, and before the next one began, was
    // answered by the new release's containers.
    for (i, (version, _, returned, release_hosts)) in marks.iter().enumerate() {
        assert_eq!(release_hosts.len(), 2, "v{version} runs two replicas");
        let until = marks.get(i + 1).map(|m| m.1).unwrap_or_else(Instant::now);
        let window: Vec<&Sample> =
            samples.iter().filter(|s| s.start > *returned && s.start < until).collect();
        let stray: Vec<&&Sample> = window.iter().filter(|s| !release_hosts.contains(&s.served_by)).collect();
        assert!(
            stray.is_empty(),
            "after v{version} went live, {} requests came from elsewhere: {:?}",
            stray.len(),
            &stray[..stray.len().min(3)]
        );
    }
    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(releases[0]["version"], 13);
    assert_eq!(releases[0]["description"], "Rollback to v11");
    assert_eq!(releases[1]["description"], "Rollback to v10");
    eprintln!("{} requests at {rate:.0}/s across 10 deploys and 2 rollbacks, none failed", samples.len());
}

#[test]
fn a_long_request_started_before_the_switch_completes() {
    let mut p = Platform::start();
    let app = p.app_name("slow");
    let manifest =
        "[processes.web]\nhealthcheck = { path = \"/healthz\" }\n[deploy]\nstability_window = \"0s\"\n";
    let (src, image) = first_deploy(&p, &app, manifest);
    let old = hosts(&app, 1);
    let (ingress, host) = (p.ingress.clone(), p.host(&app));
    let slow = std::thread::spawn(move || http::get(&ingress, &host, "/slow?seconds=4"));
    std::thread::sleep(Duration::from_millis(500));
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app, "--image", &image]).expect_ok();
    // The new release serves while the old one still finishes the slow request.
    let r = p.get(&p.host(&app), "/");
    assert!(hosts(&app, 2).contains(&served_by(&r.body)), "{r:?}");
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("slow request done"), "{r:?}");
    assert!(old.iter().any(|h| r.body.contains(h.as_str())), "the old release answered it: {r:?}");
    // Once drained, the old container is stopped and removed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !hosts(&app, 1).is_empty() {
        assert!(Instant::now() < deadline, "the drained container was not removed");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn releases_that_fail_health_checks_or_crash_never_take_traffic() {
    let mut p = Platform::start();
    let app = p.app_name("fail");
    let (_src, image) = first_deploy(&p, &app, TWO_REPLICAS);
    let v1 = hosts(&app, 1);
    let load = Load::start(&p.ingress, &p.host(&app), 1);

    // The flag overrides the manifest's probe (and keeps its interval).
    let never = manifest_dir(
        "[processes.web]\nhealthcheck = { path = \"/healthz\", interval = \"500ms\" }\n[deploy]\ntimeout = \"20s\"\n",
    );
    let dir = never.path().to_str().unwrap();
    let out = p.paas(&["deploy", dir, "--app", &app, "--image", &image, "--health-check", "http:/nope"]);
    let out = out.expect_err("did not pass its health check");
    assert!(out.stderr.contains("GET /nope answered 404"), "names the cause: {}", out.stderr);

    // The worker dies 2 s after it first answers its health check, so the release passes its
    // probe and fails in the stability window however slowly the machine starts Python.
    let crash = manifest_dir(
        r#"
[processes.web]
command = ["python3", "-c", "import os, subprocess, sys, time, urllib.request as u\np = subprocess.Popen(['python3', '/app/app.py'])\nwhile True:\n    try:\n        u.urlopen('http://127.0.0.1:%s/healthz' % os.environ['PORT'], timeout=1); break\n    except Exception:\n        time.sleep(0.1)\ntime.sleep(2)\nprint('worker died after 2s', flush=True); p.kill(); sys.exit(1)"]
healthcheck = { path = "/healthz", interval = "500ms" }
[deploy]
stability_window = "5s"
"#,
    );
    let out = p.paas(&["deploy", crash.path().to_str().unwrap(), "--app", &app, "--image", &image]);
    assert!(!out.ok, "the crashing release went live:\n{}\n{}", out.stderr, p.log());
    let out = out.expect_err("stability window");
    assert!(out.stderr.contains("worker died after 2s"), "shows the last log lines: {}", out.stderr);

    let samples = load.finish();
    assert!(
        failures(&samples).is_empty(),
        "requests failed: {:?}",
        &failures(&samples)[..failures(&samples).len().min(5)]
    );
    assert!(samples.iter().all(|s| v1.contains(&s.served_by)), "only v1 served throughout");

    // A command probe runs inside the container (here: the app's file exists) and can pass.
    let args =
        ["deploy", dir, "--app", &app, "--image", &image, "--health-check", "command:test -f /app/app.py"];
    p.paas(&args).expect_ok();
    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    let statuses: Vec<&str> =
        releases.as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["active", "failed", "failed", "superseded"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(hosts(&app, 2).is_empty() && hosts(&app, 3).is_empty()) {
        assert!(Instant::now() < deadline, "failed releases left containers behind");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn unhealthy_replicas_leave_rotation_and_scaling_keeps_healthy_ones() {
    let mut p = Platform::start();
    let app = p.app_name("heal");
    let manifest = r#"
[processes.web]
replicas = 2
healthcheck = { path = "/healthz", interval = "500ms", unhealthy_threshold = 2 }
[deploy]
stability_window = "0s"
drain_timeout = "5s"
"#;
    let (src, image) = first_deploy(&p, &app, manifest);
    let ps = p.paas(&["ps", "--app", &app, "-o", "json"]).expect_ok().json();
    let addr1 = ps[0]["address"].as_str().unwrap().to_string();
    let name1 = ps[0]["name"].as_str().unwrap().to_string();
    let id = |name: &str| docker(&["inspect", "-f", "{{.Id}}", name]).trim().to_string();
    let host1 = id(&name1)[..12].to_string();

    let r = http::request(&addr1, "POST", "x", "/health/fail", &[], "");
    assert_eq!(r.status, 200, "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ps = p.paas(&["ps", "--app", &app, "-o", "json"]).expect_ok().json();
        if ps[0]["healthy"] == false {
            break;
        }
        assert!(Instant::now() < deadline, "replica 1 never turned unhealthy: {ps}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..30 {
        let r = p.get(&p.host(&app), "/");
        assert_eq!(r.status, 200);
        assert_ne!(served_by(&r.body), host1, "an unhealthy replica still gets requests");
    }
    http::request(&addr1, "POST", "x", "/health/ok", &[], "");
    let deadline = Instant::now() + Duration::from_secs(30);
    while served_by(&p.get(&p.host(&app), "/").body) != host1 {
        assert!(Instant::now() < deadline, "replica 1 never came back into rotation");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Scaling up leaves the running replicas alone; scaling down under load drops nothing.
    let before: Vec<String> = (1..=2).map(|n| id(&format!("paas-{app}--production--web-1-{n}"))).collect();
    p.paas(&["scale", "--app", &app, "web=3"]).expect_ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ps = p.paas(&["ps", "--app", &app, "-o", "json"]).expect_ok().json();
        if ps.as_array().unwrap().iter().filter(|r| r["healthy"] == true).count() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the third replica never became healthy: {ps}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after: Vec<String> = (1..=2).map(|n| id(&format!("paas-{app}--production--web-1-{n}"))).collect();
    assert_eq!(before, after, "scaling up recreated running replicas");
    let load = Load::start(&p.ingress, &p.host(&app), 2);
    p.paas(&["scale", "--app", &app, "web=1"]).expect_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    while hosts(&app, 1).len() != 1 {
        assert!(Instant::now() < deadline, "scaling down did not remove replicas");
        std::thread::sleep(Duration::from_millis(200));
    }
    let samples = load.finish();
    assert!(
        failures(&samples).is_empty(),
        "scaling down failed requests: {:?}",
        &failures(&samples)[..failures(&samples).len().min(5)]
    );
    assert_eq!(id(&format!("paas-{app}--production--web-1-1")), before[0]);

    // One deploy per environment at a time.
    let dir = src.path().to_str().unwrap();
    p.paas(&["deploy", dir, "--app", &app, "--image", &image, "--detach"]).expect_ok();
    p.paas(&["deploy", dir, "--app", &app, "--image", &image]).expect_err("in progress");
    let out = p.paas(&["deploy", dir, "--app", &app, "--image", &image, "--wait", "-o", "json"]).expect_ok();
    assert_eq!(out.json()["version"], 3);
    p.paas(&["scale", "--app", &app, "web=x"]).expect_err("whole number");
    p.paas(&["rollback", "--app", &app, "--to", "9"]).expect_err("no release v9");
}

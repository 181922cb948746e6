//! Platform lines in the central log through the real binaries: a deploy's start and switch,
//! a scale and a config change with who made them, a deploy that fails its health check, a
//! replica that turns unhealthy and back, and one that crashes all show up in
//! `paas logs --source platform`, in order, without the config's values; `paas events` still
//! lists platform events.

use paas_tests::{docker, http, Platform};
use serde_json::Value;
use std::time::{Duration, Instant};

const SECRET: &str = "greeting-value-never-logged";

/// `paas logs --source platform` as JSON objects.
fn platform_lines(p: &Platform, app: &str) -> Vec<Value> {
    let out = p.paas(&["logs", "--app", app, "--source", "platform", "-n", "1000", "-o", "json"]).expect_ok();
    out.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

fn text(l: &Value) -> &str {
    l["text"].as_str().unwrap()
}

/// Waits until a platform line containing `needle` is there; answers every line then.
fn wait_for(p: &Platform, app: &str, needle: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = platform_lines(p, app);
        if lines.iter().any(|l| text(l).contains(needle)) {
            return lines;
        }
        let texts: Vec<&str> = lines.iter().map(text).collect();
        assert!(Instant::now() < deadline, "no platform line with {needle:?}: {texts:#?}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Where the first line containing each needle is, in order; fails naming a missing one.
fn positions(lines: &[Value], needles: &[&str]) -> Vec<usize> {
    let texts: Vec<&str> = lines.iter().map(text).collect();
    needles
        .iter()
        .map(|n| texts.iter().position(|t| t.contains(n)).unwrap_or_else(|| panic!("no {n:?} in {texts:#?}")))
        .collect()
}

#[test]
fn deploys_scaling_config_failures_and_crashes_are_platform_lines_in_order() {
    let mut p = Platform::start();
    let app = p.app_name("plat");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    p.paas(&["scale", "--app", &app, "web=2"]).expect_ok();
    p.paas(&["config", "set", "--app", &app, &format!("GREETING={SECRET}")]).expect_ok();

    // v3 never passes its health check: it fails, v2 keeps serving.
    let manifest = tempfile::tempdir().unwrap();
    let toml = "[processes.web]\nhealthcheck = { path = \"/healthz\", interval = \"500ms\" }\n[deploy]\ntimeout = \"8s\"\n";
    std::fs::write(manifest.path().join("paas.toml"), toml).unwrap();
    let image = format!("paas/{app}--production:v1");
    let dir = manifest.path().to_str().unwrap();
    p.paas(&["deploy", dir, "--app", &app, "--image", &image, "--health-check", "http:/nope"])
        .expect_err("did not pass its health check");

    let lines = wait_for(&p, &app, "Deploy v3 failed");
    let order = positions(
        &lines,
        &[
            "Deploy v1 of a source upload started by admin",
            "Deploy v1 is live",
            "Scaled web to 2 by admin (",
            "Deploy v2 (Set GREETING) started by admin",
            "Set config GREETING by admin (",
            "Deploy v2 is live",
            "Deploy v3 of image",
            "Deploy v3 failed: release v3 did not pass its health check within 8s",
        ],
    );
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in the order they happened: {order:?}");
    let failed = lines.iter().find(|l| text(l).starts_with("Deploy v3 failed")).unwrap();
    assert!(!text(failed).contains('\n'), "one sentence: {failed}");
    assert_eq!((failed["release"].as_u64(), failed["source"].as_str()), (Some(3), Some("platform")));
    assert_eq!(lines.iter().filter(|l| text(l).contains("Scaled web to 2")).count(), 1, "exactly once");

    // web.2 fails its health check for a while, then passes again: both changes are told.
    let ps = p.paas(&["ps", "--app", &app, "-o", "json"]).expect_ok().json();
    let web2 = format!("paas-{app}--production--web-2-2");
    let replica = ps.as_array().unwrap().iter().find(|r| r["name"] == web2.as_str());
    let addr =
        replica.unwrap_or_else(|| panic!("no {web2} in {ps}"))["address"].as_str().unwrap().to_string();
    assert_eq!(http::request(&addr, "POST", "x", "/health/fail", &[], "").status, 200);
    let lines = wait_for(&p, &app, "web.2 is unhealthy: ");
    let sick = lines.iter().find(|l| text(l).starts_with("web.2 is unhealthy")).unwrap();
    assert_eq!((sick["replica"].as_u64(), sick["release"].as_u64()), (Some(2), Some(2)), "{sick}");
    assert_eq!(http::request(&addr, "POST", "x", "/health/ok", &[], "").status, 200);
    wait_for(&p, &app, "web.2 is healthy again");

    // A replica dies (SIGKILL: exit code 137): the crash and the restart are told.
    let names = docker(&[
        "ps",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=paas.app={app}"),
        "--filter",
        "label=paas.release=2",
        "--filter",
        "label=paas.replica=1",
    ]);
    let victim = names.lines().next().unwrap_or_else(|| panic!("no container of web.1 v2: {names:?}")).trim();
    docker(&["kill", victim]);
    let lines = wait_for(&p, &app, "web.1 crashed (exit code 137)");
    let crash = lines.iter().find(|l| text(l).contains("web.1 crashed")).unwrap();
    assert_eq!(
        (crash["process"].as_str(), crash["replica"].as_u64(), crash["release"].as_u64()),
        (Some("web"), Some(1), Some(2)),
        "{crash}"
    );
    // Restarted: in the same line, or in the next once the agent has restarted it.
    if !text(crash).contains("restarted") {
        wait_for(&p, &app, "web.1 restarted (restart 1)");
    }

    // No config value anywhere in the platform's lines; text output prefixes them `paas:`.
    let all = platform_lines(&p, &app);
    let texts: Vec<String> = all.iter().map(|l| format!("{} {}", l["at"], text(l))).collect();
    eprintln!("platform lines:\n{}", texts.join("\n"));
    assert!(all.iter().all(|l| !text(l).contains(SECRET)), "a config value leaked: {all:#?}");
    let plain = p.paas(&["logs", "--app", &app, "--source", "platform", "--grep", "Scaled"]).expect_ok();
    assert!(plain.stdout.contains(" paas: Scaled web to 2 by admin"), "{}", plain.stdout);

    // `paas events` reads the same table: the activity feed has what the platform did and
    // what users changed, with who, oldest first.
    let events = p.paas(&["events", "--app", &app, "-n", "1000", "-o", "json"]).expect_ok().json();
    let events = events.as_array().unwrap();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in
        ["deploy.started", "deploy.live", "deploy.failed", "replica.crashed", "scale", "config.change"]
    {
        assert!(kinds.contains(&kind), "{kind} missing from paas events: {kinds:?}");
    }
    assert!(events.iter().all(|e| e["app"] == app.as_str()), "only the app asked for");
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    let scaled = events.iter().find(|e| e["kind"] == "scale").unwrap();
    assert_eq!((scaled["by"].as_str(), scaled["message"].as_str()), (Some("admin"), Some("Scaled web to 2")));
    let config = events.iter().find(|e| e["kind"] == "config.change").unwrap();
    assert!(!config.to_string().contains(SECRET), "keys only: {config}");
    assert!(
        events.iter().filter(|e| e["kind"] == "deploy.live").all(|e| e["by"] == ""),
        "the platform's own"
    );
    // The newest few, and what came after an id (for scripts that poll).
    let newest = p.paas(&["events", "--app", &app, "-n", "2", "-o", "json"]).expect_ok().json();
    let newest: Vec<i64> = newest.as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    // (The app keeps running: events may come between two calls, never go.)
    assert!(
        newest.len() == 2 && newest[0] < newest[1] && newest[0] >= ids[ids.len() - 2],
        "{newest:?} {ids:?}"
    );
    let after = ids[ids.len() - 3];
    let polled =
        p.paas(&["events", "--app", &app, "--since", &after.to_string(), "-o", "json"]).expect_ok().json();
    let polled: Vec<i64> = polled.as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(polled.starts_with(&ids[ids.len() - 2..]) && polled.iter().all(|id| *id > after), "{polled:?}");
    let table = p.paas(&["events", "--app", &app, "-n", "1000"]).expect_ok().stdout;
    assert!(table.contains("WHO") && table.contains(" admin ") && table.contains(" platform "), "{table}");
    // Another app's feed is not this one's.
    let other = p.paas(&["events", "--app", "nosuchapp", "-o", "json"]).expect_ok().json();
    assert_eq!(other, serde_json::json!([]));
}

//! `paas restart --process web` through the real binaries: the web replicas are replaced one at
//! a time in the serving release (no new release), under load without a failed request, while
//! the worker's container is not touched; a process that does not exist is refused.

use paas_tests::load::Load;
use paas_tests::Platform;
use std::time::Duration;

const MANIFEST: &str = r#"
[processes.web]
port = 8080
replicas = 2
healthcheck = { type = "http", path = "/healthz", interval = "500ms" }

[processes.worker]
command = ["python3", "-c", "import time; time.sleep(10**9)"]
healthcheck = { type = "command", command = ["true"], interval = "1s" }

[deploy]
stability_window = "1s"
drain_timeout = "5s"
"#;

/// Container names of `process` as `paas ps` lists them.
fn names(p: &Platform, app: &str, process: &str) -> Vec<String> {
    let ps = p.paas(&["ps", "--app", app, "-o", "json"]).expect_ok().json();
    let mut out: Vec<String> = ps
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["process"] == process)
        .map(|c| c["name"].as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn restarting_one_process_replaces_its_replicas_under_load_and_leaves_the_others() {
    let mut p = Platform::start();
    let app = p.app_name("rsp");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), MANIFEST).unwrap();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let (web, worker) = (names(&p, &app, "web"), names(&p, &app, "worker"));
    assert_eq!((web.len(), worker.len()), (2, 1), "{web:?} {worker:?}");

    let load = Load::start(&p.ingress, &p.host(&app), 2);
    load.wait_for_answers(20, Duration::from_secs(30));
    let out = p.paas(&["restart", "--app", &app, "--process", "web", "-o", "json"]).expect_ok().json();
    let samples = load.finish();
    let failed: Vec<_> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );

    let replaced: Vec<String> =
        out["replaced"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect();
    assert_eq!((replaced.len(), out["release"].as_u64()), (2, Some(1)), "{out}");
    let now_web = names(&p, &app, "web");
    let mut want = replaced.clone();
    want.sort();
    assert_eq!(now_web, want, "the new containers serve and the old ones are gone");
    assert!(web.iter().all(|old| !now_web.contains(old)));
    assert_eq!(names(&p, &app, "worker"), worker, "the worker was not touched");
    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(releases.as_array().map(Vec::len), Some(1), "no new release: {releases}");
    // Both new replicas answer.
    let hosts: std::collections::BTreeSet<String> = samples.iter().map(|s| s.served_by.clone()).collect();
    assert!(hosts.len() >= 2, "{hosts:?}");
    let events = p.paas(&["events", "--app", &app]).expect_ok().stdout;
    assert!(events.contains("Restart of web (v1) is done"), "{events}");

    // Refusals in the user's words.
    p.paas(&["restart", "--app", &app, "--process", "nope"]).expect_err("release v1 has no process \"nope\"");
    p.paas(&["restart", "--app", &app, "--process", "Web"]).expect_err("lowercase");
    let text = p.paas(&["restart", "--app", &app, "--process", "worker"]).expect_ok().stdout;
    assert!(text.contains("Restarted 1 replica(s) of worker in v1"), "{text}");
}

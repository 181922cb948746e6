//! Restarts disturb nothing, with the platform as separate processes as on several machines:
//! `paas server`, the ingress node's `paas agent` (on a socket passed in, as systemd's socket
//! activation does) and a worker's `paas agent`. Under continuous load, restarting the control
//! plane, then the worker's agent (SIGKILL), then the ingress node's agent (SIGTERM, as systemd
//! stops it) fails no request and recreates no container; the longest a request waited is reported.

use paas_tests::load::Load;
use paas_tests::{docker, Platform};
use std::time::{Duration, Instant};

/// Every container of `app` (full ids, sorted): a recreated one would show a new id.
fn containers(app: &str) -> Vec<String> {
    let ids = docker(&["ps", "-aq", "--no-trunc", "--filter", &format!("label=paas.app={app}")]);
    let mut ids: Vec<String> = ids.split_whitespace().map(str::to_string).collect();
    ids.sort();
    ids
}

/// Waits until `node`'s agent log says it started `times` times, then until both replicas are
/// reported healthy again.
fn wait_started(p: &Platform, node: &str, times: usize, app: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.agent_log(node).matches("node agent running").count() < times || p.placement(app).len() < 2 {
        assert!(Instant::now() < deadline, "{node} did not come back:\n{}", p.agent_log(node));
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn restarting_the_control_plane_a_worker_and_the_ingress_agent_fails_no_request_and_recreates_nothing() {
    let mut p = Platform::start_split(&[]);
    let b = p.join_agent("127.0.0.2");
    let app = p.app_name("calm");
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), paas_tests::replicas_manifest(2, "5s")).unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let mut both = vec![p.node.clone(), b.clone()];
    both.sort();
    assert_eq!(p.placement(&app), both, "one replica on each node");
    let before = containers(&app);
    assert_eq!(before.len(), 2, "{before:?}");

    let load = Load::start(&p.ingress, &p.host(&app), 2);
    load.wait_for_answers(50, Duration::from_secs(30));
    p.restart_server();
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.placement(&app).len() < 2 {
        assert!(Instant::now() < deadline, "the control plane did not see both replicas again:\n{}", p.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    load.wait_for_answers(50, Duration::from_secs(30));

    p.restart_agent(&b, None, "127.0.0.2");
    wait_started(&p, &b, 2, &app);
    load.wait_for_answers(50, Duration::from_secs(30));

    p.restart_ingress_agent();
    let node = p.node.clone();
    wait_started(&p, &node, 2, &app);
    load.wait_for_answers(200, Duration::from_secs(30));
    let samples = load.finish();

    let failed: Vec<_> = samples.iter().filter(|s| s.status != 200).collect();
    let longest = samples.iter().map(|s| s.end.duration_since(s.start)).max().unwrap_or_default();
    println!(
        "restarts of the control plane, a worker agent and the ingress agent: {} requests, {} failed, longest wait {:.0} ms",
        samples.len(),
        failed.len(),
        longest.as_secs_f64() * 1000.0
    );
    assert!(failed.is_empty(), "requests failed: {:?}", &failed[..failed.len().min(5)]);
    assert_eq!(containers(&app), before, "no container was recreated");
    let served: std::collections::BTreeSet<&str> = samples.iter().map(|s| s.served_by.as_str()).collect();
    assert_eq!(served.len(), 2, "both replicas served throughout: {served:?}");
}

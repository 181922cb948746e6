//! A node's link to the control plane, through a TCP proxy the test cuts and heals: a worker
//! agent restarted under load recreates no container and fails no request; cut off for longer
//! than the loss timeout, the node is declared lost and its replica placed on the other node;
//! healed, it stops its stale replica at once (fenced by the raised assignment generation: no
//! waiting out the 60 s drain timeout, since no ingress routes to it any more) instead of
//! serving beside the replacement, and no request fails at any point (the stale replica kept
//! answering while the ingress still routed to it).

use paas_tests::cut::CutProxy;
use paas_tests::load::Load;
use paas_tests::{docker, wait_for, Platform};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TWO: &str = r#"
[processes.web]
replicas = 2
healthcheck = { path = "/healthz", interval = "1s" }
[deploy]
stability_window = "0s"
drain_timeout = "60s"
stop_grace = "2s"
"#;

fn ids(node: &str, app: &str) -> Vec<String> {
    let (n, a) = (format!("label=paas.node={node}"), format!("label=paas.app={app}"));
    let mut ids: Vec<String> = docker(&["ps", "-q", "--no-trunc", "--filter", &n, "--filter", &a])
        .split_whitespace()
        .map(String::from)
        .collect();
    ids.sort();
    ids
}

/// Healthy running replicas by replica number, with their nodes.
fn serving(p: &Platform, app: &str) -> BTreeMap<u64, Vec<String>> {
    let ps = p.paas(&["ps", "--app", app, "-o", "json"]).expect_ok().json();
    let mut by = BTreeMap::<u64, Vec<String>>::new();
    for c in ps.as_array().unwrap() {
        if c["state"] == "running" && c["healthy"] == true {
            by.entry(c["replica"].as_u64().unwrap())
                .or_default()
                .push(c["node"].as_str().unwrap().to_string());
        }
    }
    by
}

fn status(p: &Platform, node: &str) -> String {
    p.node_view(node)["status"].as_str().unwrap().to_string()
}

#[test]
fn a_cut_off_node_is_replaced_and_stops_its_stale_replica_when_the_link_heals() {
    let mut p = Platform::start_with(&["--node-lost-after", "6s"]);
    let proxy = CutProxy::start(p.agent_url.trim_start_matches("https://"));
    let via = format!("https://{}", proxy.addr);
    let b = p.join_agent_at(&via, "127.0.0.2", &[]);
    let app = p.app_name("fence");
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), TWO).unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let host = p.host(&app);
    let load = Load::start(&p.ingress, &host, 4);
    load.wait_for_answers(50, Duration::from_secs(30));

    // A worker agent restarted under load adopts its container.
    let before = ids(&b, &app);
    assert_eq!(before.len(), 1, "one replica on {b}");
    p.restart_agent(&b, Some(&via), "127.0.0.2");
    wait_for(30, "the restarted agent to report", || {
        (p.agent_log(&b).matches("registered with the control plane").count() >= 2).then_some(())
    });
    load.wait_for_answers(100, Duration::from_secs(30));
    assert_eq!(ids(&b, &app), before, "the restarted agent recreated nothing");

    // Cut the link past the loss timeout: b is lost, its replica placed on the other node.
    let stale = before[0].clone();
    proxy.cut();
    let cut_at = Instant::now();
    wait_for(30, "the cut-off node to be declared lost", || (status(&p, &b) == "lost").then_some(()));
    let lost_after = cut_at.elapsed();
    wait_for(60, "both replicas serving from the remaining node", || {
        let s = serving(&p, &app);
        (s.len() == 2 && s.values().all(|nodes| nodes == &vec![p.node.clone()])).then_some(())
    });
    // Cut off, the agent keeps what it runs: apps never depend on the control plane.
    assert_eq!(docker(&["inspect", "-f", "{{.State.Running}}", &stale]).trim(), "true");

    // Healed: the node's next assignment has no replica for it, and it stops the stale one.
    proxy.heal();
    let healed = Instant::now();
    let stopped = wait_for(20, "the stale replica to stop after the link healed", || {
        for nodes in serving(&p, &app).values() {
            assert_eq!(nodes.len(), 1, "two containers serve one replica: {nodes:?}");
        }
        (!ids(&b, &app).contains(&stale)).then(|| healed.elapsed())
    });
    wait_for(30, "the node to be ready again", || (status(&p, &b) == "ready").then_some(()));
    load.wait_for_answers(100, Duration::from_secs(30));
    let samples = load.finish();
    let failed: Vec<_> = samples.iter().filter(|s| s.status != 200).collect();
    println!(
        "lost {:.1}s after the cut; stale replica stopped {:.1}s after healing; {} requests, {} failed",
        lost_after.as_secs_f64(),
        stopped.as_secs_f64(),
        samples.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
}

//! Several nodes on one machine: `paas up` (127.0.0.1) and two agents joined with `paas agent`
//! on 127.0.0.2 and 127.0.0.3, sharing the Docker engine; each touches only containers with its
//! node label. Replicas spread one per node and the one ingress reaches all three; a drain
//! moves a node's replicas away under load without one failed request; a node whose agent is
//! killed and whose containers are gone is declared lost and its replica placed on the others,
//! with at most the requests in flight to it failing; a node with too little memory gets
//! nothing, and an app larger than any node gets an error naming the shortfall.

use paas_tests::load::Load;
use paas_tests::{wait_for, Platform};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const THREE: &str = r#"
[processes.web]
replicas = 3
healthcheck = { path = "/healthz", interval = "1s" }
[deploy]
stability_window = "0s"
drain_timeout = "5s"
stop_grace = "2s"
"#;

fn failures(samples: &[paas_tests::load::Sample]) -> Vec<&paas_tests::load::Sample> {
    samples.iter().filter(|s| s.status != 200).collect()
}

#[test]
fn replicas_spread_over_three_nodes_move_off_a_drained_node_and_off_a_lost_one() {
    let mut p = Platform::start_with(&["--node-lost-after", "8s"]);
    let b = p.join_agent("127.0.0.2");
    let c = p.join_agent("127.0.0.3");
    let app = p.app_name("spread");
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), THREE).unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();

    // One replica per node, and requests through the one ingress reach all three.
    let mut want = vec![p.node.clone(), b.clone(), c.clone()];
    want.sort();
    assert_eq!(p.placement(&app), want, "one replica on each node");
    let host = p.host(&app);
    let mut seen = BTreeSet::new();
    wait_for(30, "requests to reach all three replicas", || {
        let r = p.get(&host, "/");
        if r.status == 200 {
            seen.insert(paas_tests::load::served_by(&r.body));
        }
        (seen.len() == 3).then_some(())
    });
    let view = p.node_view(&b);
    assert_eq!(view["status"], "ready", "{view}");
    assert_eq!(view["replicas"], 1, "{view}");
    assert!(view["capacity"]["memory_bytes"].as_u64().unwrap() > 0, "the node offers its memory: {view}");
    assert_eq!(view["allocated"]["memory_bytes"], 32 << 20, "the default reservation: {view}");

    // Drain b under load: its replica starts elsewhere before it stops; nothing fails.
    let load = Load::start(&p.ingress, &host, 4);
    load.wait_for_answers(50, Duration::from_secs(30));
    let drained = p.paas(&["nodes", "drain", &b, "-o", "json"]).expect_ok().json();
    assert_eq!(drained["moved"].as_array().unwrap().len(), 1, "{drained}");
    load.wait_for_answers(50, Duration::from_secs(30));
    let samples = load.finish();
    let failed = failures(&samples);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the drain: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    println!("drain: {} requests, 0 failed", samples.len());
    let placed = p.placement(&app);
    assert_eq!(placed.len(), 3, "{placed:?}");
    assert!(!placed.contains(&b), "nothing left on the drained node: {placed:?}");
    assert_eq!(p.node_view(&b)["status"], "draining");
    p.paas(&["nodes", "undrain", &b]).expect_ok();
    assert_eq!(p.node_view(&b)["status"], "ready");

    // Kill c (its agent with SIGKILL, and its containers) under load: it is declared lost and
    // its replica placed on the other nodes; only requests in flight to it may fail.
    assert_eq!(p.placement(&app).iter().filter(|n| **n == c).count(), 1, "c still runs one replica");
    let load = Load::start(&p.ingress, &host, 4);
    load.wait_for_answers(50, Duration::from_secs(30));
    let killed = Instant::now();
    p.kill_node(&c);
    let back = wait_for(60, "three healthy replicas again, none on the lost node", || {
        let placed = p.placement(&app);
        (placed.len() == 3 && !placed.contains(&c)).then(|| killed.elapsed())
    });
    load.wait_for_answers(50, Duration::from_secs(30));
    let samples = load.finish();
    let failed = failures(&samples);
    let window = match (failed.first(), failed.last()) {
        (Some(a), Some(z)) => z.end.duration_since(a.start),
        _ => Duration::ZERO,
    };
    println!(
        "node loss: back at 3 replicas {:.1}s after the kill; {} of {} requests failed over {:.2}s",
        back.as_secs_f64(),
        failed.len(),
        samples.len(),
        window.as_secs_f64()
    );
    assert!(
        failed.len() <= 4,
        "only requests in flight to the lost node may fail (4 clients): {:?}",
        &failed[..failed.len().min(5)]
    );
    assert_eq!(p.node_view(&c)["status"], "lost");
    let events = p.paas(&["events", "--app", &app]).expect_ok().stdout;
    assert!(events.contains(&format!("from lost node {c}")), "{events}");
}

#[test]
fn a_node_with_too_little_memory_gets_nothing_and_an_app_larger_than_any_node_is_refused() {
    let mut p = Platform::start_with(&["--memory", "2G"]);
    let small = p.join_agent_with("127.0.0.2", &["--memory", "64M"]);
    let app = p.app_name("fit");
    let src = paas_tests::tiny_app("fit", "");
    std::fs::write(src.path().join("v.txt"), "1").unwrap();
    let toml = "[processes.web]\nreplicas = 2\nreserve_memory = \"100M\"\nhealthcheck = { type = \"command\", command = [\"true\"], interval = \"1s\" }\n[deploy]\nstability_window = \"0s\"\n";
    std::fs::write(src.path().join("paas.toml"), toml).unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    assert_eq!(p.placement(&app), vec![p.node.clone(), p.node.clone()], "nothing on the small node");
    assert_eq!(p.node_view(&small)["replicas"], 0);

    let big = "[processes.web]\nmemory = \"8G\"\nreserve_memory = \"4G\"\nhealthcheck = { type = \"command\", command = [\"true\"], interval = \"1s\" }\n";
    std::fs::write(src.path().join("paas.toml"), big).unwrap();
    let refused =
        p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_err("4.00 GiB of memory");
    let text = format!("{}{}", refused.stdout, refused.stderr);
    assert!(
        text.contains("the most is") && text.contains(&p.node),
        "the error names the node with the most free: {text}"
    );
    // The serving release keeps serving.
    assert_eq!(p.placement(&app).len(), 2);
}

//! Two control planes on one PostgreSQL database (`paas server --database-url` twice, each with
//! its own data directory and ports): the first leads, the second stands by, answering 503 with
//! the leader's address. `kill -9` of the leader while a deploy rolls out under continuous load:
//! the standby takes the lead (next term) within 10 s, ends the interrupted deploy with a clear
//! status, the agents move to it, and the app fails no request. The terms in the store show one
//! leader at a time; the new leader deploys again.

use paas_tests::load::Load;
use paas_tests::Platform;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn killing_the_leader_mid_deploy_hands_over_and_the_app_serves_throughout() {
    let (mut p, second) = Platform::start_two_control_planes(&[]);
    let psql = |p: &Platform, sql: &str| p.pg.as_ref().expect("PostgreSQL").psql("postgres", sql);
    let first_holder = psql(&p, "SELECT holder FROM leadership");
    assert_eq!(psql(&p, "SELECT term FROM leadership"), "1");

    // The standby answers, naming the leader; the CLI, given both, goes on to the leader.
    let standby = second.api_url.trim_start_matches("http://");
    let r = paas_tests::http::request(standby, "GET", "localhost", "/api/v1/apps", &[], "");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("standby") && r.body.contains(&p.api_url), "{r:?}");
    let page = paas_tests::http::request(standby, "GET", "localhost", "/apps", &[], "");
    assert_eq!(page.status, 307, "a browser goes to the leader's console: {page:?}");
    assert!(page.headers.contains(&format!("location: {}/apps", p.api_url)), "{page:?}");

    let app = p.app_name("ha");
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), paas_tests::replicas_manifest(2, "5s")).unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let load = Load::start(&p.ingress, &p.host(&app), 2);
    load.wait_for_answers(50, Duration::from_secs(30));

    // A deploy in flight: its build takes a while (a changed file), so the kill lands in it.
    std::fs::write(src.path().join("message.txt"), "Second release\n").unwrap();
    let deploy = Command::new(paas_tests::paas_bin())
        .args(["deploy", src.path().to_str().unwrap(), "--app", &app])
        .env("XDG_CONFIG_HOME", p.dir.path().join("config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let sql = format!("SELECT status FROM releases WHERE app = '{app}' AND version = 2");
    paas_tests::wait_for(60, "the second deploy to start", || {
        matches!(psql(&p, &sql).as_str(), "building" | "deploying").then_some(())
    });
    let killed = Instant::now();
    p.kill_server();

    // The standby leads within 10 s and ends the interrupted deploy with a clear status.
    let took_over = loop {
        let r = paas_tests::http::request(standby, "GET", "localhost", "/api/v1/apps", &[], "");
        if r.status != 503 {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "no takeover within 10 s: {r:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(psql(&p, "SELECT term FROM leadership"), "2");
    let second_holder = psql(&p, "SELECT holder FROM leadership");
    assert_ne!(second_holder, first_holder);
    let leaders = psql(&p, "SELECT message FROM events WHERE kind = 'platform.leader' ORDER BY id");
    assert_eq!(
        leaders,
        format!("Control plane {first_holder} leads (term 1)\nControl plane {second_holder} leads (term 2)"),
        "one leader per term"
    );
    let status = paas_tests::wait_for(60, "the interrupted deploy to end", || {
        let s = psql(&p, &sql);
        (!matches!(s.as_str(), "building" | "deploying")).then_some(s)
    });
    assert!(matches!(status.as_str(), "failed" | "active"), "{status}");
    drop(deploy);
    // The nodes talked to the old leader until now: the new one counts their silence from its
    // takeover, not from its own start, so it neither suspects nor loses any of them.
    let second_log = std::fs::read_to_string(p.dir.path().join("second.log")).unwrap_or_default();
    for wrong in ["node suspected", "node lost"] {
        assert!(!second_log.contains(wrong), "the new leader logged {wrong:?}:\n{second_log}");
    }

    // The agents move to the new leader (their requests to the dead one fail, so they try the
    // next address); then a deploy through it goes live.
    paas_tests::wait_for(30, "the node to report to the new leader", || {
        let nodes = p.paas(&["nodes", "list", "-o", "json"]).expect_ok().json();
        let ready = nodes.as_array()?.iter().any(|n| n["name"] == p.node.as_str() && n["status"] == "ready");
        ready.then_some(())
    });
    std::fs::write(src.path().join("message.txt"), "Third release\n").unwrap();
    let out = p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app, "-o", "json"]).expect_ok();
    assert_eq!(out.json()["status"], "active", "{}", p.log());
    p.wait_for_body(&p.host(&app), "Third release", Duration::from_secs(30));
    load.wait_for_answers(100, Duration::from_secs(30));
    let samples = load.finish();
    let failed: Vec<_> = samples.iter().filter(|s| s.status != 200).collect();
    println!(
        "leader killed mid-deploy: standby led after {:.1} s, interrupted deploy {status}; {} requests, {} failed",
        took_over.as_secs_f64(),
        samples.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "requests failed: {:?}", &failed[..failed.len().min(5)]);
}

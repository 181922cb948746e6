//! Restarts without failed requests: `paas restart` of an app (a new release of the same image,
//! rolled out blue/green), then `paas up` given its ingress socket by its supervisor (socket
//! activation, `LISTEN_FDS`, as a systemd `.socket` unit does) stopped and started again twice,
//! all while clients keep sending requests over keep-alive connections; not one request fails,
//! and requests are answered after each restart.

use paas_tests::load::Load;
use paas_tests::Platform;
use std::time::{Duration, Instant};

const FAST: &str =
    "[processes.web]\nhealthcheck = { path = \"/healthz\" }\n[deploy]\nstability_window = \"0s\"\n";

#[test]
fn restarting_the_platform_on_a_passed_socket_fails_no_request() {
    let mut p = Platform::start_with_passed_ingress();
    let app = p.app_name("restart");
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), FAST).unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let host = p.host(&app);
    p.wait_for_body(&host, "Hello from paas!", Duration::from_secs(60));

    let load = Load::start(&p.ingress, &host, 4);
    load.wait_for_answers(50, Duration::from_secs(30));
    let out = p.paas(&["restart", "--app", &app, "-o", "json"]).expect_ok();
    assert_eq!(out.json()["version"], 2, "{}", out.stdout);
    assert_eq!(out.json()["description"], "Restart of v1", "{}", out.stdout);
    let ps = p.paas(&["ps", "--app", &app, "-o", "json"]).expect_ok().json();
    assert!(ps.as_array().unwrap().iter().all(|c| c["release"] == 2), "new containers serve: {ps}");
    let mut restarted = Vec::new();
    for _ in 0..2 {
        // Requests are flowing before each restart, and after it.
        load.wait_for_answers(50, Duration::from_secs(30));
        p.restart();
        restarted.push(Instant::now());
    }
    load.wait_for_answers(50, Duration::from_secs(30));
    let samples = load.finish();

    let failed: Vec<_> = samples.iter().filter(|s| s.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the restarts, e.g. {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(5)]
    );
    // The clients were answered by each new process, not only before the first restart.
    for at in &restarted {
        let after = samples.iter().filter(|s| s.start > *at).count();
        assert!(after > 0, "no request was answered after a restart ({} in all)", samples.len());
    }
    assert!(p.log().contains("socket activation"), "the passed socket was used:\n{}", p.log());
}

//! Managed PostgreSQL end to end: `paas db create` builds the image locally, initialises the
//! data on a named volume and sets DATABASE_URL; examples/notes stores rows through it; the
//! rows survive the database container's removal; the port is only on the private address.

use paas_tests::{docker, http, Platform};
use std::process::Command;
use std::time::{Duration, Instant};

fn count(p: &Platform, app: &str) -> Option<u64> {
    let r = p.get(&p.host(app), "/");
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    v["count"].as_u64()
}

#[test]
fn database_rows_survive_the_container_and_the_port_stays_private() {
    let mut p = Platform::start();
    let app = p.app_name("notes");
    p.paas(&["apps", "create", &app]).expect_ok();
    let out = p.paas(&["db", "create", "--app", &app]).expect_ok();
    assert!(
        out.stdout.contains("DATABASE_URL") && out.stdout.contains(":****@db-primary:5432/"),
        "{}",
        out.stdout
    );
    p.paas(&["db", "create", "--app", &app]).expect_err("already has a database");
    p.paas(&["db", "create", "--app", &app, "--version", "9"]).expect_err("not available");
    let listed = p.paas(&["config", "list", "--app", &app]).expect_ok();
    assert!(listed.stdout.contains("DATABASE_URL=****"), "{}", listed.stdout);
    assert!(listed.stdout.contains("DATABASE_REPLICA_URL=****"), "{}", listed.stdout);
    p.wait_db_healthy(&app);
    let info = p.paas(&["apps", "info", &app]).expect_ok();
    assert!(
        info.stdout.contains("database: PostgreSQL") && info.stdout.contains("primary healthy"),
        "{}",
        info.stdout
    );

    let src = paas_tests::example_copy("notes");
    let out = p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    assert!(
        out.stderr.contains("notes: schema is up to date"),
        "the release command migrated: {}",
        out.stderr
    );
    for note in ["alpha", "beta", "gamma"] {
        let r = http::request(&p.ingress, "POST", &p.host(&app), "/notes", &[], note);
        assert_eq!(r.status, 201, "{r:?}");
    }
    assert_eq!(count(&p, &app), Some(3));

    // The data lives on the volume: a removed primary is recreated with every row.
    let primary = format!("paas-{app}--production--db-primary");
    assert_eq!(
        docker(&["inspect", "-f", "{{index .Config.Labels \"paas.role\"}}", &primary]).trim(),
        "db-primary"
    );
    docker(&["rm", "-f", &primary]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while count(&p, &app) != Some(3) {
        assert!(Instant::now() < deadline, "the rows did not come back:\n{}", p.log());
        std::thread::sleep(Duration::from_millis(500));
    }

    // Published only on the node's private address; the revealed node URL works from the node.
    let info = p.wait_db_healthy(&app);
    let ports = docker(&["port", &primary, "5432/tcp"]);
    assert!(!ports.trim().is_empty() && ports.lines().all(|l| l.starts_with("127.0.0.1:")), "{ports}");
    assert!(info["node_url"].as_str().unwrap().contains(":****@127.0.0.1:"), "{info}");
    // The node's next report may come from the container's restart and lack its port a moment.
    let url = paas_tests::wait_for(60, "the revealed node URL", || {
        let revealed = p.paas(&["db", "info", "--app", &app, "--reveal", "-o", "json"]).expect_ok().json();
        revealed["node_url"].as_str().map(str::to_string)
    });
    assert!(!url.contains("****"));
    let psql = Command::new("psql")
        .args([url.as_str(), "-tAc", "SELECT count(*) FROM notes"])
        .output()
        .expect("psql");
    assert_eq!(String::from_utf8_lossy(&psql.stdout).trim(), "3", "{psql:?}");

    // At a terminal `paas db psql` is one real psql session on a TTY: a statement over two
    // lines, and a temporary table that only the same session still sees.
    let steps = serde_json::json!([
        ["wait", "=>"],
        ["send", "SELECT count(*) || ' notes'\r"],
        ["send", "FROM notes;\r"],
        ["wait", "3 notes"],
        ["send", "CREATE TEMP TABLE t AS SELECT 41 + 1 AS n;\r"],
        ["wait", "SELECT 1"],
        ["send", "SELECT n * 1000 FROM t;\r"],
        ["wait", "42000"],
        ["send", "\\q\r"],
    ]);
    let session = p.paas_at_terminal(steps, &["db", "psql", "--app", &app]);
    let shown = String::from_utf8_lossy(&session.stdout);
    assert!(session.status.success(), "{shown}\n{}", String::from_utf8_lossy(&session.stderr));
    p.paas(&["db", "info", "--app", &app, "--env", "nope"]).expect_err("no environment named");
    p.paas(&["envs", "create", "--app", &app, "staging"]).expect_ok();
    p.paas(&["db", "info", "--app", &app, "--env", "staging"]).expect_err("has no database");
}

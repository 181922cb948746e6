//! `paas server --database-url`: the control plane keeps its state in PostgreSQL (a throwaway
//! server from Debian's packages) instead of SQLite in its data directory. An app is created,
//! configured and deployed through a separate ingress agent; the rows are in PostgreSQL and no
//! `state.db` exists; the control plane restarts and finds everything again. A database that
//! does not answer is one clear error, before anything listens.

use paas_tests::{example_copy, free_port, paas_bin, Platform};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_control_plane_keeps_its_state_in_postgresql_across_a_restart() {
    let mut p = Platform::start_split_on_postgres(&[]);
    let app = p.app_name("pgstate");
    let src = example_copy("hello");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["config", "set", "--app", &app, "GREETING=kept-in-postgres"]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    // The hello app greets with GREETING when it is set.
    p.wait_for_body(&p.host(&app), "kept-in-postgres", Duration::from_secs(60));

    assert!(!p.dir.path().join("data/state.db").exists(), "SQLite is not used");
    let psql = |p: &Platform, sql: &str| p.pg.as_ref().expect("a PostgreSQL server").psql("postgres", sql);
    let sql = format!("SELECT version, status FROM releases WHERE app = '{app}'");
    assert_eq!(psql(&p, &sql), "1|active");
    let nodes = psql(&p, "SELECT name FROM nodes");
    assert!(nodes.contains(&p.node), "the ingress node registered in PostgreSQL: {nodes}");

    p.restart_server();
    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(releases[0]["version"], 1);
    assert_eq!(releases[0]["status"], "active");
    let value = p.paas(&["config", "get", "GREETING", "--app", &app]).expect_ok().stdout;
    assert_eq!(value.trim(), "kept-in-postgres");
    // The app served throughout and still does; a second deploy goes through the restarted
    // control plane.
    assert_eq!(p.get(&p.host(&app), "/").status, 200);
    let out = p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app, "-o", "json"]).expect_ok();
    assert_eq!(out.json()["version"], 2, "{}", p.log());
    assert_eq!(psql(&p, &format!("SELECT COUNT(*) FROM releases WHERE app = '{app}'")), "2");
}

#[test]
fn a_database_that_does_not_answer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let bin = paas_bin(); // built before the clock starts
    let started = Instant::now();
    let out = Command::new(bin)
        .args(["server", "--api-addr", "127.0.0.1:0", "--agent-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("PAAS_DATABASE_URL", format!("postgres://paas:secret-pw@127.0.0.1:{port}/platform"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("connecting to the state database at 127.0.0.1:{port}/platform")),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-pw"), "the password stays out of the message: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "gave up in {:?}", started.elapsed());
    assert!(!dir.path().join("data/state.db").exists());

    let bad = Command::new(paas_bin())
        .args(["server", "--api-addr", "127.0.0.1:0", "--agent-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--database-url", "mysql://nope"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("not a valid postgres:// URL"), "{stderr}");
}

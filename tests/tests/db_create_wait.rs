//! `paas db create` waits until PostgreSQL accepts connections as the app's role (primary and
//! replica), saying what it is doing meanwhile; `--no-wait` returns at once.

use paas_tests::Platform;

#[test]
fn db_create_returns_once_the_database_accepts_connections() {
    let mut p = Platform::start();
    let app = p.app_name("dbwait");
    p.paas(&["apps", "create", &app]).expect_ok();
    let out = p.paas(&["db", "create", "--app", &app]).expect_ok();
    // The first look always finds the new servers unreported (their statuses start afresh).
    assert!(out.stderr.contains("creating the primary's volume and container…"), "{}", out.stderr);
    assert!(out.stdout.contains("DATABASE_URL is set") && out.stdout.contains("Ready in "), "{}", out.stdout);
    assert!(!out.stdout.contains("shows when it is up"), "{}", out.stdout);

    // Ready means ready: no waiting after it returned, for either server.
    let info = p.paas(&["db", "info", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(info["primary"]["healthy"], true, "{info}");
    assert_eq!(info["replica"]["healthy"], true, "{info}");
    assert_eq!(p.psql(&app, &[], "SELECT 41 + 1"), "42");
    assert_eq!(p.psql(&app, &["--replica"], "SELECT pg_is_in_recovery()"), "t");

    // --no-wait: back at once with the hint, no progress.
    p.paas(&["envs", "create", "--app", &app, "staging"]).expect_ok();
    let quick = p
        .paas(&["db", "create", "--app", &app, "--env", "staging", "--replicas", "0", "--no-wait"])
        .expect_ok();
    assert!(quick.stdout.contains("`paas db info` shows when it is up"), "{}", quick.stdout);
    assert!(!quick.stdout.contains("Ready in") && !quick.stderr.contains("creating the"), "{}", quick.stderr);
    // And JSON output waits quietly, then prints the ready database.
    p.paas(&["envs", "create", "--app", &app, "qa"]).expect_ok();
    let json =
        p.paas(&["db", "create", "--app", &app, "--env", "qa", "--replicas", "0", "-o", "json"]).expect_ok();
    assert!(json.stderr.is_empty(), "{}", json.stderr);
    assert_eq!(json.json()["primary"]["healthy"], true, "{}", json.stdout);
}

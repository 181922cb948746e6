//! A database volume kept after its app was deleted is never inherited silently: a new app of
//! the same name is refused `paas db create` with the volume's name, `--reuse-volume` adopts
//! its data and gives the app's role the new password, and `paas db info` calls a database the
//! app cannot log in to unhealthy, with the reason.

use paas_tests::{docker, Platform};
use std::time::{Duration, Instant};

/// Waits until `paas db info` says the primary is unhealthy for a reason; returns the reason.
fn wait_db_problem(p: &Platform, app: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = p.paas(&["db", "info", "--app", app, "-o", "json"]).expect_ok().json();
        if let Some(why) = info["primary"]["problem"].as_str() {
            assert_eq!(info["primary"]["healthy"], false, "{info}");
            return why.to_string();
        }
        assert!(Instant::now() < deadline, "db info never reported the failed login: {info}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_kept_volume_is_refused_by_name_reused_on_request_and_a_failed_login_is_unhealthy() {
    let mut p = Platform::start();
    let app = p.app_name("keptvol");
    let volume = format!("paas-{app}--production--db-primary");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--replicas", "0"]).expect_ok();
    p.wait_db_healthy(&app);
    p.psql(&app, &[], "CREATE TABLE kept (note text); INSERT INTO kept VALUES ('from the first app')");
    let first_url = p.paas(&["config", "get", "DATABASE_URL", "--app", &app]).expect_ok().stdout;

    // Deleting the app keeps the volume (on purpose: data is never deleted implicitly).
    p.paas(&["apps", "delete", &app, "--confirm", &app]).expect_ok();
    assert_eq!(docker(&["volume", "ls", "-q", "--filter", &format!("name=^{volume}$")]).trim(), volume);

    // A new app of the same name: its database would start on the old data with the old
    // password, so it is refused, naming the volume and both ways out.
    p.paas(&["apps", "create", &app]).expect_ok();
    let refused = p.paas(&["db", "create", "--app", &app, "--replicas", "0"]).expect_err(&volume);
    for needle in ["still holds the data of an earlier database", "docker volume rm", "--reuse-volume"] {
        assert!(refused.stderr.contains(needle), "{needle:?} missing: {}", refused.stderr);
    }
    assert_eq!(refused.stderr.trim().lines().count(), 1, "one sentence: {}", refused.stderr);
    p.paas(&["db", "info", "--app", &app]).expect_err("has no database");
    p.paas(&["config", "get", "DATABASE_URL", "--app", &app]).expect_err("DATABASE_URL");

    // Reattached: the old rows are there and the app logs in with its new password.
    let out = p.paas(&["db", "create", "--app", &app, "--replicas", "0", "--reuse-volume"]).expect_ok();
    assert!(out.stdout.contains("DATABASE_URL"), "{}", out.stdout);
    let second_url = p.paas(&["config", "get", "DATABASE_URL", "--app", &app]).expect_ok().stdout;
    assert_ne!(first_url, second_url, "a new password");
    let info = p.wait_db_healthy(&app);
    assert!(info["primary"]["problem"].is_null(), "{info}");
    assert_eq!(p.psql(&app, &[], "SELECT note FROM kept"), "from the first app");
    let revealed = p.paas(&["db", "info", "--app", &app, "--reveal", "-o", "json"]).expect_ok().json();
    let node_url = revealed["node_url"].as_str().expect("the node URL").to_string();
    let login = std::process::Command::new("psql")
        .args([node_url.as_str(), "-tAc", "SELECT count(*) FROM kept"])
        .output()
        .expect("psql");
    assert_eq!(String::from_utf8_lossy(&login.stdout).trim(), "1", "{login:?}");

    // Nothing to reuse where no volume is kept.
    p.paas(&["envs", "create", "--app", &app, "staging"]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--env", "staging", "--replicas", "0", "--reuse-volume"])
        .expect_err("to reuse");

    // The app's role changes its own password: the server still runs, but the app cannot log
    // in with DATABASE_URL, and db info says so instead of "healthy".
    p.psql(&app, &[], "ALTER ROLE CURRENT_USER PASSWORD 'not-the-one-in-database-url'");
    let why = wait_db_problem(&p, &app);
    assert!(why.contains("password authentication failed"), "{why}");
    let text = p.paas(&["db", "info", "--app", &app]).expect_ok().stdout;
    assert!(text.contains("UNHEALTHY: the app cannot log in"), "{text}");
}

//! Point-in-time recovery end to end against real PostgreSQL containers: a primary archives its
//! WAL continuously, a base backup is proven by a recovery with the archive, the primary's
//! container and volume are destroyed, and `db restore --to-time --to-new` brings back exactly
//! the rows committed up to the chosen moment (none after it).

use paas_tests::{docker, Platform};
use std::time::{Duration, Instant};

/// Inserts rows `from..=to`, each in its own transaction (psql runs each `-c` on its own).
fn insert(p: &Platform, app: &str, from: u32, to: u32) {
    let statements: Vec<String> = (from..=to).map(|n| format!("INSERT INTO t (n) VALUES ({n})")).collect();
    let mut args = vec!["db", "psql", "--app", app, "--", "-q", "-v", "ON_ERROR_STOP=1"];
    for s in &statements {
        args.extend(["-c", s.as_str()]);
    }
    p.paas(&args).expect_ok();
}

/// Waits until the archive holds the segment the server writes to now (so every commit so
/// far is archived); archive_timeout (2 s here) forces the switch.
fn wait_archived(p: &Platform, app: &str) {
    let current = p.psql(app, &[], "SELECT pg_walfile_name(pg_current_wal_lsn())");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = p.paas(&["db", "info", "--app", app, "-o", "json"]).expect_ok().json();
        if info["archive"]["last_segment"].as_str().is_some_and(|s| s >= current.as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "segment {current} never reached the archive: {}",
            info["archive"]
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_destroyed_primary_is_restored_to_a_moment_from_the_archive() {
    let mut p = Platform::start_with(&["--db-archive-timeout", "2s"]);
    let app = p.app_name("pitr");
    p.paas(&["apps", "create", &app]).expect_ok();
    // No schedule: the daily base backup would start by itself once the archive runs.
    p.paas(&["db", "create", "--app", &app, "--replicas", "0", "--backup-schedule", "off"]).expect_ok();
    p.wait_db_healthy(&app);
    p.psql(
        &app,
        &[],
        "CREATE TABLE t (n int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())",
    );
    insert(&p, &app, 1, 50);
    wait_archived(&p, &app);

    // A base backup, proven by a recovery with the archive to its end.
    let out = p.paas(&["db", "backup", "--app", &app, "--base"]).expect_ok();
    assert!(out.stdout.contains("Verified"), "{}", out.stdout);
    let info = p.paas(&["db", "info", "--app", &app, "-o", "json"]).expect_ok().json();
    assert!(info["archive"]["earliest"].is_string(), "{}", info["archive"]);
    let listed = p.paas(&["db", "backups", "--app", &app, "-o", "json"]).expect_ok().json();
    let base =
        listed.as_array().unwrap().iter().find(|b| b["kind"] == "base").expect("a base backup").clone();
    assert_eq!(base["verification"], "ok", "{base}");
    // A base backup restores only to a moment.
    p.paas(&["db", "restore", base["id"].as_str().unwrap(), "--app", &app, "--to-new"])
        .expect_err("--to-time");

    // Rows 51..=100 before the moment, 101..=150 after it.
    insert(&p, &app, 51, 100);
    let moment = p.psql(
        &app,
        &[],
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    insert(&p, &app, 101, 150);
    wait_archived(&p, &app);

    // The primary's disk is gone: container and volume.
    let container = format!("paas-{app}--production--db-primary");
    let volume = docker(&["inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", &container]);
    docker(&["rm", "-f", &container]);
    docker(&["volume", "rm", "-f", volume.trim()]);
    p.wait_db_healthy(&app);
    let fresh = p.paas(&["db", "psql", "--app", &app, "--", "-tAc", "SELECT count(*) FROM t"]);
    assert!(!fresh.ok, "the new primary should start empty: {fresh:?}");

    // Before every base backup: refused, saying how far back it reaches.
    p.paas(&["db", "restore", "--app", &app, "--to-time", "2020-01-01T00:00:00Z", "--to-new"])
        .expect_err("earliest moment");
    p.paas(&["db", "restore", "--app", &app, "--to-time", "yesterday", "--to-new"])
        .expect_err("2026-11-27T10:42:00Z");

    // Refused, saying when, until the archive must hold the moment (its timeout plus shipping).
    let started = Instant::now();
    let out = loop {
        let run = p.paas(&["db", "restore", "--app", &app, "--to-time", &moment, "--to-new", "-o", "json"]);
        if run.ok {
            break run.json();
        }
        assert!(run.stderr.contains("try again"), "{run:?}");
        assert!(started.elapsed() < Duration::from_secs(60), "{run:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let secs = started.elapsed().as_secs_f64();
    let target = out["target_database"].as_str().expect("the new database").to_string();
    let sql = "SELECT count(*) || ' ' || max(n) FROM t";
    let got = p.paas(&["db", "psql", "--app", &app, "--", "-d", &target, "-tAc", sql]).expect_ok();
    let got = got.stdout.trim();
    assert_eq!(got, "100 100", "recovered to {moment}: every row before it, none after ({secs:.1}s)");
    eprintln!("point-in-time restore to {moment} into {target} took {secs:.1}s");

    // The recovered backup is listed as such, and proven like any dump.
    let listed = p.paas(&["db", "backups", "--app", &app, "-o", "json"]).expect_ok().json();
    let recovered =
        listed.as_array().unwrap().iter().find(|b| b["trigger"] == "recovered").expect("listed").clone();
    assert_eq!(recovered["tables"]["public.t"], 100, "{recovered}");
}

//! Backups proven by restores, end to end against real PostgreSQL containers and a real
//! S3-compatible server (moto): a backup taken from the replica (the primary sees no dump),
//! stored locally and in S3, verified by a restore; restores in place and to a new database;
//! damaged copies failing verification loudly; a primary-only backup under concurrent writes;
//! and more concurrent clients than a pool of 10 without a connection error.

use paas_tests::s3::Moto;
use paas_tests::{http, load::Load, Platform};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn count(p: &Platform, app: &str) -> Option<u64> {
    let r = p.get(&p.host(app), "/");
    let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
    v["count"].as_u64()
}

fn post_note(p: &Platform, app: &str, note: &str) {
    let r = http::request(&p.ingress, "POST", &p.host(app), "/notes", &[], note);
    assert_eq!(r.status, 201, "{r:?}");
}

fn deploy_notes(p: &Platform, app: &str) {
    let src = paas_tests::example_copy("notes");
    // CI runs several end-to-end tests side by side on two cores: under 40 clients a 2 s probe
    // can time out and take the only replica out of rotation, which is not what these tests
    // are about.
    let manifest = std::fs::read_to_string(src.path().join("paas.toml")).unwrap().replace(
        "healthcheck = { path = \"/healthz\" }",
        "healthcheck = { path = \"/healthz\", timeout = \"10s\", unhealthy_threshold = 10 }",
    );
    std::fs::write(src.path().join("paas.toml"), manifest).unwrap();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", app]).expect_ok();
}

/// The app's dumps (base backups for point-in-time recovery start by themselves once the WAL
/// archive runs; `db_pitr` tests them).
fn backups(p: &Platform, app: &str) -> Vec<serde_json::Value> {
    let all = p.paas(&["db", "backups", "--app", app, "-o", "json"]).expect_ok().json();
    all.as_array().unwrap().iter().filter(|b| b["kind"] != "base").cloned().collect()
}

fn seq_scans(p: &Platform, app: &str, extra: &[&str]) -> u64 {
    // Cumulative statistics reach the view when the scanning session ends.
    let sql = "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'notes'";
    p.psql(app, extra, sql).parse().unwrap_or_else(|_| panic!("no seq_scan for notes"))
}

#[test]
fn backups_come_from_the_replica_land_in_both_stores_and_restore() {
    let moto = Moto::start();
    let bucket = format!("paas-test-{}", paas_tests::rand_suffix());
    let mut p = Platform::start_with_env(
        &["--backup-s3-endpoint", &moto.endpoint, "--backup-s3-bucket", &bucket],
        &[("PAAS_BACKUP_S3_ACCESS_KEY", "test-key"), ("PAAS_BACKUP_S3_SECRET_KEY", "test-secret")],
    );
    assert!(!p.log().contains("test-secret"), "the S3 secret reached the log");
    let app = p.app_name("bk");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--backup-schedule", "61 * * * *"]).expect_err("minute");
    p.paas(&["db", "create", "--app", &app]).expect_ok();
    p.wait_db_healthy(&app);
    deploy_notes(&p, &app);
    for note in ["alpha", "beta", "gamma"] {
        post_note(&p, &app, note);
    }

    // Rows written to the primary appear on the replica (psql runs inside the containers).
    let deadline = Instant::now() + Duration::from_secs(30);
    while p.psql(&app, &["--replica"], "SELECT count(*) FROM notes") != "3" {
        assert!(Instant::now() < deadline, "the replica never caught up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let on_replica = p.paas(&[
        "db",
        "psql",
        "--app",
        &app,
        "--replica",
        "--",
        "-c",
        "INSERT INTO notes (body) VALUES ('x')",
    ]);
    assert!(!on_replica.ok && on_replica.stdout.contains("read-only transaction"), "{on_replica:?}");

    // The backup reads the replica: the primary's table sees no scan, the replica's does.
    let (primary_before, replica_before) = (seq_scans(&p, &app, &[]), seq_scans(&p, &app, &["--replica"]));
    let out = p.paas(&["db", "backup", "--app", &app]).expect_ok();
    assert!(out.stderr.contains("from the replica"), "{}", out.stderr);
    assert!(out.stdout.contains("Verified"), "{}", out.stdout);
    assert_eq!(seq_scans(&p, &app, &[]), primary_before, "the primary was scanned by the backup");
    assert!(seq_scans(&p, &app, &["--replica"]) > replica_before, "the replica was not read");

    let list = backups(&p, &app);
    assert_eq!(list.len(), 1, "{list:?}");
    let b = &list[0];
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(b["source"], "db-replica");
    assert_eq!(b["status"], "stored");
    assert_eq!(b["verification"], "ok", "{b}");
    assert_eq!(b["tables"]["public.notes"], 3, "{b}");
    let sha = b["sha256"].as_str().unwrap();
    let size = b["size_bytes"].as_u64().unwrap();
    assert!(size > 0);
    // Both copies hold exactly the manifest's bytes.
    let local = b["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|l| l.as_str()?.strip_prefix("local:"))
        .unwrap()
        .to_string();
    let bytes = std::fs::read(&local).unwrap();
    assert_eq!(hex(&bytes), sha);
    let key = format!("{app}/production/{id}.dump");
    let object = moto.get_object(&bucket, &key).expect("the backup is in S3");
    assert_eq!(object.len() as u64, size);
    assert_eq!(hex(&object), sha);
    let manifest =
        moto.get_object(&bucket, &format!("{app}/production/{id}.manifest.json")).expect("manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["tables"]["public.notes"], 3);
    assert_eq!(manifest["sha256"], sha);
    let info = p.paas(&["db", "info", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(info["last_verified"]["id"], id.as_str());
    assert_eq!(info["warnings"].as_array().unwrap().len(), 0, "{info}");

    // Restore in place: refused without --confirm; with it, a safety backup first.
    p.psql(&app, &[], "DELETE FROM notes WHERE body <> 'alpha'");
    assert_eq!(count(&p, &app), Some(1));
    p.paas(&["db", "restore", &id, "--app", &app]).expect_err("--confirm");
    let out = p.paas(&["db", "restore", &id, "--app", &app, "--confirm"]).expect_ok();
    assert!(out.stdout.contains("safety backup"), "{}", out.stdout);
    assert_eq!(count(&p, &app), Some(3));
    let list = backups(&p, &app);
    let safety = list.iter().find(|b| b["trigger"] == "safety").expect("a safety backup");
    assert_eq!(safety["tables"]["public.notes"], 1, "{safety}");

    // Restore to a new database: the original keeps its newer rows.
    post_note(&p, &app, "delta");
    let out = p.paas(&["db", "restore", &id, "--app", &app, "--to-new", "-o", "json"]).expect_ok().json();
    let new_db = out["target_database"].as_str().unwrap().to_string();
    assert_eq!(count(&p, &app), Some(4));
    let restored =
        p.paas(&["db", "psql", "--app", &app, "--", "-d", &new_db, "-tAc", "SELECT count(*) FROM notes"]);
    assert_eq!(restored.expect_ok().stdout.trim(), "3");

    // A damaged copy fails verification by name, never "ok": a flipped byte locally...
    let mut damaged = bytes.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    std::fs::write(&local, &damaged).unwrap();
    let out = p.paas(&["db", "verify", &id, "--app", &app]);
    assert!(!out.ok, "{out:?}");
    assert!(out.stderr.contains("FAILED") && out.stderr.contains("corrupt"), "{}", out.stderr);
    let info = p.paas(&["db", "info", "--app", &app]).expect_ok();
    assert!(
        info.stdout.contains("WARNING") && info.stdout.contains("FAILED verification"),
        "{}\n{}",
        info.stdout,
        p.paas(&["db", "backups", "--app", &app]).stdout
    );
    // ...and a truncated object in S3.
    std::fs::write(&local, &bytes).unwrap();
    moto.put_object(&bucket, &key, &bytes[..bytes.len() / 3]);
    let out = p.paas(&["db", "verify", &id, "--app", &app]);
    assert!(!out.ok && out.stderr.contains("truncated"), "{out:?}");
    let listed = p.paas(&["db", "backups", "--app", &app]).expect_ok();
    assert!(listed.stdout.contains("FAILED: "), "{}", listed.stdout);
    let events = p.paas(&["events", "-o", "json"]).expect_ok().json();
    let failed: Vec<_> =
        events.as_array().unwrap().iter().filter(|e| e["kind"] == "db.verify.failed").collect();
    assert_eq!(failed.len(), 2, "{events}");
    assert!(failed.iter().all(|e| e["severity"] == "critical" && e["app"] == app.as_str()), "{events}");
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn many_clients_get_no_connection_errors_and_a_primary_backup_is_consistent_under_writes() {
    let mut p = Platform::start();
    let app = p.app_name("pool");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--replicas", "0"]).expect_ok();
    p.wait_db_healthy(&app);
    deploy_notes(&p, &app);
    post_note(&p, &app, "first");

    // 40 concurrent clients: more than the old default pool of 10.
    let load = Load::start(&p.ingress, &p.host(&app), 40);
    // A writer keeps changing the table until the backup from the primary (no replica) is done.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (ingress, host, stop, written) = (p.ingress.clone(), p.host(&app), stop.clone(), written.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = written.load(Ordering::Relaxed);
                let r = http::request(&ingress, "POST", &host, "/notes", &[], &format!("w{n}"));
                if r.status != 201 {
                    return Err(format!("write {n} failed: {r:?}"));
                }
                written.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    // The server sees the pool's connections (sampled every few seconds) exceed 10.
    let deadline = Instant::now() + Duration::from_secs(60);
    let info = loop {
        let info = p.paas(&["db", "info", "--app", &app, "-o", "json"]).expect_ok().json();
        if info["primary"]["figures"]["connections"].as_u64().unwrap_or(0) > 10 {
            break info;
        }
        assert!(Instant::now() < deadline, "the app's pool never used more than 10 connections: {info}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        info["primary"]["figures"]["connections"].as_u64().unwrap()
            <= info["max_connections"].as_u64().unwrap()
    );
    while written.load(Ordering::Relaxed) < 5 {
        assert!(Instant::now() < deadline && !writer.is_finished(), "the writer stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = p.paas(&["db", "backup", "--app", &app, "-o", "json"]).expect_ok();
    stop.store(true, Ordering::Relaxed);
    if let Err(e) = writer.join().unwrap() {
        panic!("{e}\n{}", p.log());
    }
    // Taken in the middle of the writes, and still its counts match its dump.
    let b = out.json();
    assert_eq!(b["source"], "db-primary", "{b}");
    assert_eq!(b["verification"], "ok", "the counts of a dump under writes must match: {b}");
    assert!(b["tables"]["public.notes"].as_u64().unwrap() >= 6, "{b}");
    let samples = load.finish();
    let failed: Vec<_> =
        samples.iter().filter(|s| s.status != 200).take(5).map(|s| (s.status, s.served_by.clone())).collect();
    assert!(samples.len() > 200, "only {} requests", samples.len());
    assert!(failed.is_empty(), "requests failed under 40 clients: {failed:?}\n{}", p.log());

    // The schedule: every minute (the first run is due at once, the database being older than
    // a minute); retention then keeps one backup, the newest verified.
    let manual = b["id"].as_str().unwrap().to_string();
    p.paas(&["db", "settings", "--app", &app, "--backup-schedule", "60 * * * *"]).expect_err("out of range");
    p.paas(&["db", "settings", "--app", &app, "--backup-schedule", "* * * * *", "--keep", "1"]).expect_ok();
    let deadline = Instant::now() + Duration::from_secs(120);
    let scheduled = loop {
        let list = backups(&p, &app);
        let done = list.iter().find(|b| b["trigger"] == "scheduled" && b["verification"] == "ok");
        if let (Some(b), false) = (done, list.iter().any(|b| b["id"] == manual.as_str())) {
            break b.clone();
        }
        assert!(Instant::now() < deadline, "no verified scheduled backup replaced the manual one: {list:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(scheduled["source"], "db-primary");
    let gone = b["locations"][0].as_str().unwrap().trim_start_matches("local:").to_string();
    assert!(!std::path::Path::new(&gone).exists(), "retention left {gone}");
    let info = p.paas(&["db", "info", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(info["backup_schedule"], "* * * * *");
    assert_eq!(info["keep"], 1);
}

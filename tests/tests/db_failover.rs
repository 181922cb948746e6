//! Switchover end to end against real PostgreSQL containers: under a writer that commits rows
//! one by one, `paas db failover` makes the streaming replica the primary (on the replica's
//! volume, a new timeline) with every acknowledged row kept, writes go on through the same
//! `db-primary` name, and a new replica is cloned and follows the new primary.

use paas_tests::{docker, Platform};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn info(p: &Platform, app: &str) -> serde_json::Value {
    p.paas(&["db", "info", "--app", app, "-o", "json"]).expect_ok().json()
}

#[test]
fn a_switchover_loses_no_committed_row() {
    let mut p = Platform::start();
    let app = p.app_name("sw");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--backup-schedule", "off"]).expect_ok();
    p.wait_db_healthy(&app);
    p.psql(&app, &[], "CREATE TABLE t (n int PRIMARY KEY)");
    let primary = format!("paas-{app}--production--db-primary");
    let replica_volume = docker(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Name}}{{end}}",
        &format!("paas-{app}--production--db-replica"),
    ]);
    let replica_volume = replica_volume.trim().to_string();
    assert!(!replica_volume.is_empty());

    // A writer commits rows one at a time and remembers each one the server acknowledged.
    let (stop, acked, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(0u32)));
    let writer = {
        let (stop, acked, failed, app) = (stop.clone(), acked.clone(), failed.clone(), app.clone());
        let bin = paas_tests::paas_bin().to_path_buf();
        let config = p.config_home();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let sql = format!("INSERT INTO t (n) VALUES ({n})");
                let out = std::process::Command::new(&bin)
                    .args(["db", "psql", "--app", &app, "--", "-tAc", &sql])
                    .env("XDG_CONFIG_HOME", &config)
                    .env_remove("PAAS_TOKEN")
                    .output()
                    .unwrap();
                if out.status.success() {
                    acked.lock().unwrap().push(n);
                } else {
                    *failed.lock().unwrap() += 1;
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "the writer never got going");
        std::thread::sleep(Duration::from_millis(100));
    }

    let started = Instant::now();
    let out = p.paas(&["db", "failover", "--app", &app]).expect_ok();
    let secs = started.elapsed().as_secs_f64();
    assert!(out.stdout.contains("is the primary"), "{}", out.stdout);
    // Writes go on against the new primary through the same name.
    let before = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < before + 5 {
        assert!(Instant::now() < deadline, "no write succeeded after the switchover");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    // Every acknowledged row is there.
    let acked = acked.lock().unwrap().clone();
    let stored: Vec<u32> = p
        .psql(&app, &[], "SELECT string_agg(n::text, ',' ORDER BY n) FROM t")
        .split(',')
        .filter_map(|n| n.parse().ok())
        .collect();
    let lost: Vec<&u32> = acked.iter().filter(|n| !stored.contains(n)).collect();
    assert!(lost.is_empty(), "acknowledged rows lost in the switchover: {lost:?}");
    eprintln!(
        "switchover took {secs:.1}s; {} rows acknowledged, none lost; {} writes failed while the primary changed",
        acked.len(),
        failed.lock().unwrap()
    );

    // The new primary runs on the old replica's volume, on a new timeline, and is writable.
    let mounted = docker(&["inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", &primary]);
    assert_eq!(mounted.trim(), replica_volume, "the primary should run on the replica's volume");
    assert_eq!(p.psql(&app, &[], "SELECT timeline_id FROM pg_control_checkpoint()"), "2");
    // A new replica is cloned on a fresh volume and follows the new primary.
    let i = p.wait_db_healthy(&app);
    assert!(i["replica"]["healthy"] == true, "{i}");
    p.psql(&app, &[], "INSERT INTO t (n) VALUES (1000000)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.psql(&app, &["--replica"], "SELECT count(*) FROM t WHERE n = 1000000") != "1" {
        assert!(Instant::now() < deadline, "the new replica does not follow the new primary");
        std::thread::sleep(Duration::from_millis(300));
    }
    let events = p.paas(&["events", "--app", &app]).expect_ok().stdout;
    assert!(events.contains("Switchover"), "{events}");
    // Without a healthy replica there is nothing to switch to; a second switchover works too.
    p.paas(&["db", "failover", "--app", &app]).expect_ok();
    assert_eq!(info(&p, &app)["primary"]["healthy"], true);
}

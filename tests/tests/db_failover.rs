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
    let (stop, acked, failed, handle) = writer(&p, &app);
    wait_acked(&acked, 5, "the writer never got going");

    let started = Instant::now();
    let out = p.paas(&["db", "failover", "--app", &app]).expect_ok();
    let secs = started.elapsed().as_secs_f64();
    assert!(out.stdout.contains("is the primary"), "{}", out.stdout);
    // Writes go on against the new primary through the same name.
    wait_acked(&acked, 5, "no write succeeded after the switchover");
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();

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

/// The host's address on Docker's default bridge: private, and unlike loopback reachable from
/// containers, as a machine's private address is from containers on the other machines.
fn bridge_address() -> String {
    let out =
        std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "docker0"]).output().expect("ip");
    let text = String::from_utf8_lossy(&out.stdout);
    let cidr =
        text.split_whitespace().skip_while(|w| *w != "inet").nth(1).expect("docker0 has an IPv4 address");
    cidr.split('/').next().unwrap().to_string()
}

/// A second private address of this host that containers reach: the gateway of a Docker
/// network made for the test (removed when dropped).
struct SecondAddress {
    network: String,
    addr: String,
}

impl SecondAddress {
    fn new() -> Self {
        let network = format!("paas-test-addr-{}", paas_tests::rand_suffix());
        docker(&["network", "create", "--label", "paas.test=failover", &network]);
        let addr = docker(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", &network]);
        let addr = addr.trim().to_string();
        assert!(!addr.is_empty(), "network {network} has no gateway");
        Self { network, addr }
    }
}

impl Drop for SecondAddress {
    fn drop(&mut self) {
        docker(&["network", "rm", &self.network]);
    }
}

/// Starts a writer committing rows one at a time; returns its stop flag, the rows the server
/// acknowledged and the failed attempts.
#[allow(clippy::type_complexity)]
fn writer(
    p: &Platform,
    app: &str,
) -> (Arc<AtomicBool>, Arc<Mutex<Vec<u32>>>, Arc<Mutex<u32>>, std::thread::JoinHandle<()>) {
    let (stop, acked, failed) =
        (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(0u32)));
    let handle = {
        let (stop, acked, failed, app) = (stop.clone(), acked.clone(), failed.clone(), app.to_string());
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
    (stop, acked, failed, handle)
}

fn wait_acked(acked: &Mutex<Vec<u32>>, more: usize, what: &str) {
    let before = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(90);
    while acked.lock().unwrap().len() < before + more {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_lost_primary_node_fails_over_to_the_replica_and_comes_back_as_a_replica() {
    let second = SecondAddress::new();
    let mut p = Platform::start_with(&["--private-addr", &bridge_address(), "--node-lost-after", "6s"]);
    let other = p.join_agent(&second.addr);
    let app = p.app_name("fo");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--backup-schedule", "off"]).expect_ok();
    let i = p.wait_db_healthy(&app);
    assert_eq!(i["replica"]["node"], other.as_str(), "{i}");
    p.psql(&app, &[], "CREATE TABLE t (n int PRIMARY KEY)");
    // The primary moves to the joined node, which the test can kill.
    p.paas(&["db", "failover", "--app", &app]).expect_ok();
    let i = p.wait_db_healthy(&app);
    assert_eq!(i["primary"]["node"], other.as_str(), "{i}");

    let (stop, acked, failed, handle) = writer(&p, &app);
    wait_acked(&acked, 10, "the writer never got going");
    let killed_at = Instant::now();
    let acked_at_kill = acked.lock().unwrap().len();
    p.kill_node(&other);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let i = info(&p, &app);
        if i["primary"]["node"] == p.node.as_str() && i["primary"]["healthy"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "no failover: {i}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = killed_at.elapsed().as_secs_f64();
    wait_acked(&acked, 5, "no write succeeded after the failover");
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let stored: Vec<u32> = p
        .psql(&app, &[], "SELECT string_agg(n::text, ',' ORDER BY n) FROM t")
        .split(',')
        .filter_map(|n| n.parse().ok())
        .collect();
    let lost: Vec<u32> = acked.iter().copied().filter(|n| !stored.contains(n)).collect();
    // Asynchronous replication can lose the last moments before the loss, nothing older.
    assert!(
        lost.iter().all(|n| acked.iter().position(|a| a == n).unwrap() + 20 >= acked_at_kill),
        "rows committed well before the loss are gone: {lost:?}"
    );
    eprintln!(
        "failover {took:.1}s after the node died (lost after 6 s); {} acknowledged rows lost, {} writes failed meanwhile",
        lost.len(),
        failed.lock().unwrap()
    );
    let events = p.paas(&["events", "--app", &app]).expect_ok().stdout;
    assert!(events.contains("Failover"), "{events}");

    // The old primary's node returns: its primary is never started again; it clones a new
    // replica of the new primary on a fresh volume.
    p.restart_agent(&other, None, &second.addr);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let i = info(&p, &app);
        if i["replica"]["healthy"] == true && i["replica"]["node"] == other.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old primary's node never got a healthy replica: {i}\n{}",
            p.agent_log(&other)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let on_other =
        docker(&["ps", "-a", "--filter", &format!("label=paas.node={other}"), "--format", "{{.Names}}"]);
    assert!(!on_other.contains("db-primary"), "the old primary runs again: {on_other}");
    p.psql(&app, &[], "INSERT INTO t (n) VALUES (1000000)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.psql(&app, &["--replica"], "SELECT count(*) FROM t WHERE n = 1000000") != "1" {
        assert!(Instant::now() < deadline, "the new replica does not follow");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_primary_cut_off_from_the_control_plane_and_its_replica_stops_before_the_replica_takes_over() {
    let second = SecondAddress::new();
    let mut p = Platform::start_with(&["--private-addr", &bridge_address(), "--node-lost-after", "6s"]);
    let proxy = paas_tests::cut::CutProxy::start(p.agent_url.trim_start_matches("https://"));
    let other = p.join_agent_at(&format!("https://{}", proxy.addr), &second.addr, &[]);
    let app = p.app_name("lease");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--backup-schedule", "off"]).expect_ok();
    p.wait_db_healthy(&app);
    p.psql(&app, &[], "CREATE TABLE t (n int PRIMARY KEY); INSERT INTO t VALUES (1)");
    p.paas(&["db", "failover", "--app", &app]).expect_ok();
    let i = p.wait_db_healthy(&app);
    assert_eq!(i["primary"]["node"], other.as_str(), "{i}");
    let primary = format!("paas-{app}--production--db-primary");
    let running = |name: &str| docker(&["inspect", "-f", "{{.State.Running}}", name]).trim() == "true";

    // The primary's node is cut off from the control plane, and the replica from the primary
    // (its role may no longer log in; the connection it had ends).
    let psql = "/usr/lib/postgresql/15/bin/psql";
    let cut_replica =
        "ALTER ROLE replicator NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_replication;";
    docker(&["exec", &primary, psql, "-X", "-q", "-U", "postgres", "-d", "postgres", "-c", cut_replica]);
    proxy.cut();
    let cut_at = Instant::now();
    // Its lease (two thirds of 6 s) runs out first: it stops itself, its agent still running.
    let deadline = Instant::now() + Duration::from_secs(30);
    while running(&primary) {
        assert!(Instant::now() < deadline, "the cut-off primary kept running\n{}", p.agent_log(&other));
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped_after = cut_at.elapsed().as_secs_f64();
    // Then the node is declared lost and the replica promoted: one primary at a time.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let i = info(&p, &app);
        if i["primary"]["node"] == p.node.as_str() && i["primary"]["healthy"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "no failover: {i}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let promoted_after = cut_at.elapsed().as_secs_f64();
    assert!(stopped_after < promoted_after, "the old primary stopped after the promotion");
    eprintln!("cut off: the primary stopped itself after {stopped_after:.1}s, the replica was promoted after {promoted_after:.1}s");
    assert_eq!(p.psql(&app, &[], "SELECT count(*) FROM t"), "1");

    // Healed: the old primary is not started again; the node clones a new replica.
    proxy.heal();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let i = info(&p, &app);
        if i["replica"]["healthy"] == true && i["replica"]["node"] == other.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "no replica on the healed node: {i}\n{}", p.agent_log(&other));
        std::thread::sleep(Duration::from_millis(300));
    }
    let on_other = docker(&["ps", "--filter", &format!("label=paas.node={other}"), "--format", "{{.Names}}"]);
    assert!(!on_other.contains("db-primary"), "the old primary runs again: {on_other}");
}

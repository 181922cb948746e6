//! Switchover end to end against real PostgreSQL containers: under a writer that commits rows
//! one by one, `paas db failover` makes the streaming replica the primary (on the replica's
//! volume, a new timeline) with every acknowledged row kept, writes go on through the same
//! `db-primary` name, and a new replica is cloned and follows the new primary.

use paas_tests::db::{bridge_address, stored_rows, SecondAddress, Writer};
use paas_tests::{docker, Platform};
use std::time::{Duration, Instant};

fn info(p: &Platform, app: &str) -> serde_json::Value {
    p.paas(&["db", "info", "--app", app, "-o", "json"]).expect_ok().json()
}

/// Creates `app`'s database (its replica lands on the joined node `other`), runs `sql` in it,
/// and switches the primary over to `other`, which the test can then kill or cut off.
fn primary_on(p: &Platform, app: &str, other: &str, sql: &str) {
    p.paas(&["apps", "create", app]).expect_ok();
    p.paas(&["db", "create", "--app", app, "--backup-schedule", "off"]).expect_ok();
    let i = p.wait_db_healthy(app);
    assert_eq!(i["replica"]["node"], other, "{i}");
    p.psql(app, &[], sql);
    paas_tests::db::switch_over(p, app);
    let i = p.wait_db_healthy(app);
    assert_eq!(i["primary"]["node"], other, "{i}");
}

/// Runs `sql` as the superuser inside database container `container` (what the platform never
/// does on a user's behalf: the tests' way to break things).
fn as_superuser(container: &str, sql: &str) {
    docker(&[
        "exec",
        container,
        "/usr/lib/postgresql/15/bin/psql",
        "-X",
        "-q",
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-c",
        sql,
    ]);
}

/// Waits until the primary answers, healthy, on the platform's own node (a failover to it).
fn wait_primary_here(p: &Platform, app: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let i = info(p, app);
        if i["primary"]["node"] == p.node.as_str() && i["primary"]["healthy"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "no failover: {i}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(200));
    }
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
    // An app writes through its DATABASE_URL too.
    let src = paas_tests::example_copy("notes");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let note = |p: &Platform, body: &str| {
        paas_tests::http::request(&p.ingress, "POST", &p.host(&app), "/notes", &[], body).status
    };
    assert_eq!(note(&p, "before"), 201);

    // A writer commits rows one at a time and remembers each one the server acknowledged.
    let w = Writer::start(&p, &app);
    w.wait_acked(5, "the writer never got going");

    let started = Instant::now();
    let out = paas_tests::db::switch_over(&p, &app);
    let secs = started.elapsed().as_secs_f64();
    assert!(out.stdout.contains("is the primary"), "{}", out.stdout);
    // Writes go on against the new primary through the same name.
    w.wait_acked(5, "no write succeeded after the switchover");
    let (acked, failed) = w.stop();

    // Every acknowledged row is there.
    let stored = stored_rows(&p, &app);
    let lost: Vec<&u32> = acked.iter().filter(|n| !stored.contains(n)).collect();
    assert!(lost.is_empty(), "acknowledged rows lost in the switchover: {lost:?}");
    eprintln!(
        "switchover took {secs:.1}s; {} rows acknowledged, none lost; {} writes failed while the primary changed",
        acked.len(),
        failed
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
    // The app reconnects through the same DATABASE_URL: its pooled connections to the old
    // server fail once each, then it writes to the new primary.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    while note(&p, "after") != 201 {
        refused += 1;
        assert!(Instant::now() < deadline, "the app never wrote to the new primary");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(p.psql(&app, &[], "SELECT string_agg(body, ',' ORDER BY id) FROM notes"), "before,after");
    eprintln!("the app wrote again after {refused} failed requests");
    let events = p.paas(&["events", "--app", &app]).expect_ok().stdout;
    assert!(events.contains("Switchover"), "{events}");
    // A second switchover works too, once the base backup of the new primary (started after the
    // promotion) and its drill are done: it refuses, saying so, meanwhile.
    paas_tests::db::switch_over(&p, &app);
    assert_eq!(info(&p, &app)["primary"]["healthy"], true);
}

#[test]
fn a_lost_primary_node_fails_over_to_the_replica_and_comes_back_as_a_replica() {
    let second = SecondAddress::new();
    let mut p = Platform::start_with(&["--private-addr", &bridge_address(), "--node-lost-after", "6s"]);
    let other = p.join_agent(&second.addr);
    let app = p.app_name("fo");
    primary_on(&p, &app, &other, "CREATE TABLE t (n int PRIMARY KEY)");
    // An app writes through its DATABASE_URL, from whichever node it was placed on.
    let src = paas_tests::example_copy("notes");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let note = |p: &Platform, body: &str| {
        paas_tests::http::request(&p.ingress, "POST", &p.host(&app), "/notes", &[], body).status
    };
    assert_eq!(note(&p, "before"), 201);

    let w = Writer::start(&p, &app);
    w.wait_acked(10, "the writer never got going");
    let killed_at = Instant::now();
    let acked_at_kill = w.acked();
    p.kill_node(&other);
    wait_primary_here(&p, &app, Duration::from_secs(90));
    let took = killed_at.elapsed().as_secs_f64();
    w.wait_acked(5, "no write succeeded after the failover");
    let (acked, failed) = w.stop();
    let stored = stored_rows(&p, &app);
    let lost: Vec<u32> = acked.iter().copied().filter(|n| !stored.contains(n)).collect();
    // Asynchronous replication can lose the last moments before the loss, nothing older.
    assert!(
        lost.iter().all(|n| acked.iter().position(|a| a == n).unwrap() + 20 >= acked_at_kill),
        "rows committed well before the loss are gone: {lost:?}"
    );
    eprintln!(
        "failover {took:.1}s after the node died (lost after 6 s); {} acknowledged rows lost, {} writes failed meanwhile",
        lost.len(),
        failed
    );
    // The app reconnects through the same DATABASE_URL (moved off the dead node first if it ran
    // there) and writes to the new primary.
    let deadline = Instant::now() + Duration::from_secs(120);
    while note(&p, "after") != 201 {
        assert!(Instant::now() < deadline, "the app never wrote to the new primary\n{}", p.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(p.psql(&app, &[], "SELECT string_agg(body, ',' ORDER BY id) FROM notes"), "before,after");
    let releases = p.paas(&["releases", "--app", &app]).expect_ok().stdout;
    assert!(
        releases.contains("Database failover"),
        "the app did not roll out to the new primary: {releases}"
    );
    let events = p.paas(&["events", "--app", &app]).expect_ok().stdout;
    assert!(events.contains("Failover"), "{events}");
    let timeline = p.paas(&["db", "info", "--app", &app]).expect_ok().stdout;
    assert!(
        timeline.contains("timeline:") && timeline.contains("Failover: the primary's node"),
        "{timeline}"
    );
    assert!(timeline.contains("Switchover:"), "the earlier switchover stays in the timeline: {timeline}");
    paas_tests::wait_for(30, "the db-failover alert", || firing(&p, &app).then_some(()));

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
    let select =
        ["db", "psql", "--app", &app, "--replica", "--", "-tAc", "SELECT count(*) FROM t WHERE n = 1000000"];
    loop {
        let run = p.paas(&select);
        if run.ok && run.stdout.trim() == "1" {
            break;
        }
        let containers = || {
            let filter = format!("label=paas.app={app}");
            docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}} {{.Status}} {{.Labels}}"])
        };
        assert!(
            Instant::now() < deadline,
            "the new replica does not follow: {run:?}\n{}\n--- {other}:\n{}\n--- platform:\n{}",
            containers(),
            p.agent_log(&other),
            p.log()
        );
        if !run.ok {
            // Seen once under CI load; said here so the run's output shows what the replica did.
            eprintln!(
                "psql on the new replica failed ({}); its containers:\n{}",
                run.stderr.trim(),
                containers()
            );
        }
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
    primary_on(&p, &app, &other, "CREATE TABLE t (n int PRIMARY KEY); INSERT INTO t VALUES (1)");
    let primary = format!("paas-{app}--production--db-primary");
    let running = |name: &str| docker(&["inspect", "-f", "{{.State.Running}}", name]).trim() == "true";

    // The primary's node is cut off from the control plane, and the replica from the primary
    // (its role may no longer log in; the connection it had ends).
    let cut_replica =
        "ALTER ROLE replicator NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_replication;";
    as_superuser(&primary, cut_replica);
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
    wait_primary_here(&p, &app, Duration::from_secs(60));
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

#[test]
fn a_replica_that_stopped_following_is_not_promoted_and_the_platform_says_why() {
    let second = SecondAddress::new();
    let mut p = Platform::start_with(&["--private-addr", &bridge_address(), "--node-lost-after", "6s"]);
    let other = p.join_agent(&second.addr);
    let app = p.app_name("lag");
    primary_on(&p, &app, &other, "CREATE TABLE t (n int PRIMARY KEY); INSERT INTO t VALUES (1)");

    // The replica stops following (its WAL receiver points nowhere) while the primary writes on:
    // how far behind it falls is unknown to the platform, which must not bet the data on it.
    let replica = format!("paas-{app}--production--db-replica");
    let astray = "ALTER SYSTEM SET primary_conninfo = 'host=192.0.2.1 connect_timeout=1'";
    as_superuser(&replica, astray);
    as_superuser(&replica, "SELECT pg_reload_conf()");
    p.psql(&app, &[], "INSERT INTO t SELECT generate_series(2, 1000)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while info(&p, &app)["replica"]["figures"]["streaming"] != false {
        assert!(Instant::now() < deadline, "the replica still streams: {}", info(&p, &app));
        std::thread::sleep(Duration::from_millis(300));
    }
    // Three loss timeouts (18 s) after it last streamed, its lag counts as unknown and large:
    // that is a matter of time, so the test lets it pass.
    std::thread::sleep(Duration::from_secs(20));
    p.kill_node(&other);
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        let events = p.paas(&["events", "--app", &app]).expect_ok().stdout;
        if let Some(line) = events.lines().find(|l| l.contains("was NOT failed over")) {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no refusal was said: {events}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(refused.contains("has not streamed from the primary lately"), "{refused}");
    let i = info(&p, &app);
    assert_eq!(i["primary"]["node"], other.as_str(), "the stale replica was promoted: {i}");
    let timeline = p.paas(&["db", "info", "--app", &app]).expect_ok().stdout;
    assert!(timeline.contains("was NOT failed over"), "{timeline}");
    // A person hears of it: the db-failover alert fires while the primary stays down.
    paas_tests::wait_for(30, "the db-failover alert", || firing(&p, &app).then_some(()));
}

fn firing(p: &Platform, app: &str) -> bool {
    let alerts = p.paas(&["alerts", "list", "-o", "json"]).expect_ok().json();
    alerts
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["rule"] == "db-failover" && a["app"] == app && a["state"] == "firing")
}

#[test]
fn a_primary_that_cannot_be_restarted_fails_over_to_its_replica() {
    let mut p = Platform::start_with(&["--node-lost-after", "6s"]);
    let app = p.app_name("crash");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--backup-schedule", "off"]).expect_ok();
    p.wait_db_healthy(&app);
    p.psql(&app, &[], "CREATE TABLE t (n int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.psql(&app, &["--replica"], "SELECT count(*) FROM t") != "100" {
        assert!(Instant::now() < deadline, "the replica never caught up");
        std::thread::sleep(Duration::from_millis(300));
    }
    let primary = format!("paas-{app}--production--db-primary");
    let volume =
        |c: &str| docker(&["inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", c]).trim().to_string();
    let (broken, replica_volume) = (volume(&primary), volume(&format!("paas-{app}--production--db-replica")));

    // Its data directory loses pg_control: PostgreSQL stops and can never start on it again.
    docker(&["exec", &primary, "rm", "/var/lib/postgresql/data/pgdata/global/pg_control"]);
    docker(&["kill", &primary]);
    let killed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let i = info(&p, &app);
        if i["primary"]["healthy"] == true && volume(&primary) == replica_volume {
            break;
        }
        assert!(Instant::now() < deadline, "no failover from the broken primary: {i}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("the replica took over {:.1}s after the primary broke", killed.elapsed().as_secs_f64());
    assert_eq!(p.psql(&app, &[], "SELECT count(*) FROM t"), "100");
    p.psql(&app, &[], "INSERT INTO t VALUES (101)");
    let events = p.paas(&["events", "--app", &app]).expect_ok().stdout;
    assert!(events.contains("could not be restarted"), "{events}");
    // The broken volume is kept, for inspection, and mounted by nothing.
    let users = docker(&["ps", "-a", "--filter", &format!("volume={broken}"), "--format", "{{.Names}}"]);
    assert!(users.trim().is_empty(), "the broken volume is still in use: {users}");
    // A new replica is cloned and follows.
    let deadline = Instant::now() + Duration::from_secs(90);
    while p
        .paas(&["db", "psql", "--app", &app, "--replica", "--", "-tAc", "SELECT count(*) FROM t"])
        .stdout
        .trim()
        != "101"
    {
        assert!(Instant::now() < deadline, "the new replica does not follow: {}", info(&p, &app));
        std::thread::sleep(Duration::from_millis(300));
    }
}

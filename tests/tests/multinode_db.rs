//! A database across two nodes: `paas up` plus a second node joined with `paas agent` on
//! another private address. The replica goes to the other node and follows the primary through
//! its private address; backups and their verification run on the replica's node; a recreated
//! primary comes back on the same port, so the replica keeps following it.

use paas_tests::db::bridge_address;
use paas_tests::{docker, Platform};
use std::time::{Duration, Instant};

fn wait_replica_rows(p: &Platform, app: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = p.paas(&["db", "psql", "--app", app, "--replica", "--", "-tAc", "SELECT count(*) FROM t"]);
        if got.ok && got.stdout.trim() == want {
            return;
        }
        assert!(Instant::now() < deadline, "the replica never showed {want} rows: {got:?}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_replica_runs_on_another_node_and_backups_are_taken_there() {
    // The first node's private address must be reachable from the second node's containers.
    let mut p = Platform::start_with(&["--private-addr", &bridge_address()]);
    let other = p.join_agent("127.0.0.2");
    let app = p.app_name("mn");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app]).expect_ok();
    let info = p.wait_db_healthy(&app);
    assert_eq!(info["primary"]["node"], p.node.as_str(), "{info}");
    assert_eq!(info["replica"]["node"], other.as_str(), "{info}");
    let replica_addr = info["replica"]["address"].as_str().unwrap();
    assert!(replica_addr.starts_with("127.0.0.2:"), "{info}");
    let replica = format!("paas-{app}--production--db-replica");
    assert_eq!(
        docker(&["inspect", "-f", "{{index .Config.Labels \"paas.node\"}}", &replica]).trim(),
        other.as_str()
    );

    p.psql(&app, &[], "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 5)");
    wait_replica_rows(&p, &app, "5");

    // App replicas on both nodes reach the primary: on its node by the network alias, on the
    // other through its node's private address and published port.
    let src = paas_tests::tiny_app("mn", "");
    std::fs::write(src.path().join("v.txt"), "1").unwrap();
    let toml = "[processes.web]\nreplicas = 2\nhealthcheck = { type = \"command\", command = [\"true\"], interval = \"1s\" }\n[deploy]\nstability_window = \"0s\"\n";
    std::fs::write(src.path().join("paas.toml"), toml).unwrap();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let primary_port = docker(&["port", &format!("paas-{app}--production--db-primary"), "5432/tcp"]);
    let published = format!("{}:{}", bridge_address(), primary_port.trim().rsplit(':').next().unwrap());
    let url_on = |node: &str| {
        let id = docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=paas.node={node}"),
            "--filter",
            &format!("label=paas.app={app}"),
            "--filter",
            "label=paas.process=web",
        ]);
        let id =
            id.split_whitespace().next().unwrap_or_else(|| panic!("a web replica on {node}")).to_string();
        (docker(&["exec", &id, "printenv", "DATABASE_URL"]).trim().to_string(), id)
    };
    let (here, _) = url_on(&p.node);
    assert!(here.contains("@db-primary:5432/"), "{here}");
    let (there, id) = url_on(&other);
    assert!(there.contains(&format!("@{published}/")), "{there} does not name {published}");
    let (host, port) = published.split_once(':').unwrap();
    let dial = format!("exec 3<>/dev/tcp/{host}/{port}");
    let reached =
        std::process::Command::new("docker").args(["exec", &id, "bash", "-c", &dial]).status().unwrap();
    assert!(reached.success(), "the replica on {other} cannot connect to the primary at {published}");

    let b = p.paas(&["db", "backup", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(b["source"], "db-replica", "{b}");
    assert_eq!(b["node"], other.as_str(), "{b}");
    assert_eq!(b["verification"], "ok", "{b}");
    assert_eq!(b["tables"]["public.t"], 5, "{b}");

    // The primary comes back on the port the replica follows.
    let primary = format!("paas-{app}--production--db-primary");
    let port = docker(&["port", &primary, "5432/tcp"]);
    docker(&["rm", "-f", &primary]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !p.paas(&["db", "psql", "--app", &app, "--", "-c", "INSERT INTO t VALUES (6)"]).ok {
        assert!(Instant::now() < deadline, "the primary did not come back:\n{}", p.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(docker(&["port", &primary, "5432/tcp"]), port);
    wait_replica_rows(&p, &app, "6");
}

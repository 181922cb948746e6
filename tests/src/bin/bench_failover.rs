//! Benchmark: failover time and lost writes when the primary's node dies, over several trials
//! (median and worst), and the primary's write throughput with WAL archiving on (a managed
//! primary) next to the same image without it, pgbench in both, same run.
//!
//! Run: `cargo run --release -p paas-tests --bin bench-failover -- [TRIALS]` (default 5).
//!
//! - Each trial: a writer commits rows one at a time (`paas db psql`), the primary's node is
//!   killed (its agent with SIGKILL and its containers removed), and the clock runs until the
//!   replica answers as the primary; lost = acknowledged rows missing afterwards. The node then
//!   comes back, clones a new replica, and a switchover puts the primary on it again.
//! - pgbench: `-i -s 10`, then 20 s of `-c 4 -j 2` in the managed primary (archive_mode on,
//!   archive_timeout 60 s) and in a container of the same image and limits with archiving off.

use paas_tests::db::{bridge_address, stored_rows, SecondAddress, Writer};
use paas_tests::{docker, Platform};
use std::time::{Duration, Instant};

fn info(p: &Platform, app: &str) -> serde_json::Value {
    p.paas(&["db", "info", "--app", app, "-o", "json"]).expect_ok().json()
}

fn wait(p: &Platform, app: &str, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            let events = p.paas(&["events", "--app", app]).stdout;
            let log = p.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            panic!(
                "{what}: {}\n{events}\n{}",
                info(p, app),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// pgbench's tps inside `container` (as the OS user postgres, database `db`).
fn pgbench(container: &str, db: &str) -> f64 {
    let bin = "/usr/lib/postgresql/15/bin/pgbench";
    let run = |args: &str| {
        let out = std::process::Command::new("docker")
            .args(["exec", "-u", "postgres", container, "sh", "-c", &format!("{bin} {args} {db}")])
            .output()
            .expect("docker exec");
        assert!(out.status.success(), "pgbench {args}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    run("-q -i -s 10");
    let out = run("-c 4 -j 2 -T 20");
    out.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("pgbench printed its tps")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let trials: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let second = SecondAddress::new();
    let mut p = Platform::start_with(&["--private-addr", &bridge_address()]);
    let other = p.join_agent(&second.addr);
    let app = p.app_name("benchfo");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--backup-schedule", "off"]).expect_ok();
    p.wait_db_healthy(&app);
    p.psql(&app, &[], "CREATE TABLE t (n int PRIMARY KEY)");

    let (mut took, mut lost_rows) = (Vec::new(), Vec::new());
    for trial in 1..=trials {
        // The primary goes to the joined node, which can be killed.
        if info(&p, &app)["primary"]["node"] != other.as_str() {
            paas_tests::db::switch_over(&p, &app);
        }
        p.wait_db_healthy(&app);
        p.psql(&app, &[], "TRUNCATE t");
        let w = Writer::start(&p, &app);
        w.wait_acked(20, "the writer never got going");
        let killed = Instant::now();
        p.kill_node(&other);
        wait(&p, &app, "no failover within 2 minutes", Duration::from_secs(120), || {
            let i = info(&p, &app);
            i["primary"]["node"] == p.node.as_str() && i["primary"]["healthy"] == true
        });
        let secs = killed.elapsed().as_secs_f64();
        w.wait_acked(3, "no write after the failover");
        let (acked, failed) = w.stop();
        let stored = stored_rows(&p, &app);
        let lost = acked.iter().filter(|n| !stored.contains(n)).count();
        eprintln!("trial {trial}: failover {secs:.1}s after the node died, {lost} acknowledged rows lost, {failed} writes failed");
        took.push(secs);
        lost_rows.push(lost as f64);
        p.restart_agent(&other, None, &second.addr);
        wait(&p, &app, "the node never cloned a replica", Duration::from_secs(180), || {
            let i = info(&p, &app);
            i["replica"]["healthy"] == true && i["replica"]["node"] == other.as_str()
        });
    }

    // Write throughput: the managed primary (archiving on) next to the same image without it.
    let primary = format!("paas-{app}--production--db-primary");
    let db = app.replace('-', "_");
    let plain = format!("paas-bench-plain-{}", paas_tests::rand_suffix());
    let image = docker(&["inspect", "-f", "{{.Config.Image}}", &primary]).trim().to_string();
    let script = "export PATH=/usr/lib/postgresql/15/bin:$PATH; initdb -D /tmp/d -U postgres >/dev/null && \
                  createdb_wait() { until pg_isready -q; do sleep 0.2; done; createdb -U postgres bench; }; \
                  (createdb_wait &) ; exec postgres -D /tmp/d -c listen_addresses='' -c unix_socket_directories=/var/run/postgresql";
    docker(&[
        "run",
        "-d",
        "--name",
        &plain,
        "--label",
        "paas.test=bench",
        "-u",
        "postgres",
        "--memory",
        "2g",
        "--cpus",
        "2",
        "--shm-size",
        "256m",
        &image,
        "sh",
        "-c",
        script,
    ]);
    wait(&p, &app, "the plain server never started", Duration::from_secs(60), || {
        docker(&[
            "exec",
            "-u",
            "postgres",
            &plain,
            "/usr/lib/postgresql/15/bin/psql",
            "-tAc",
            "SELECT 1",
            "bench",
        ])
        .trim()
            == "1"
    });
    let archived = pgbench(&primary, &db);
    let unarchived = pgbench(&plain, "bench");
    docker(&["rm", "-f", &plain]);

    let worst = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    println!("failover after the primary's node dies ({trials} trials, node lost after 20 s):");
    println!(
        "  time to a healthy primary: median {:.1}s, worst {:.1}s",
        median(&mut took.clone()),
        worst(&took)
    );
    println!(
        "  acknowledged rows lost: median {}, worst {}",
        median(&mut lost_rows.clone()),
        worst(&lost_rows)
    );
    println!("write throughput (pgbench -s 10, -c 4 -j 2, 20 s):");
    println!("  archiving on (managed primary): {archived:.0} tps");
    println!("  archiving off (same image): {unarchived:.0} tps");
    println!("  ratio on/off: {:.2}", archived / unarchived);
}

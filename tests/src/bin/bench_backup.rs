//! Benchmark: backup and restore of a database of at least 1 GB through the platform versus
//! `pg_dump` and `pg_restore` run directly in the same containers, same run. Prints the times
//! and the ratios.
//!
//! Run: `cargo run --release -p paas-tests --bin bench-backup -- [GB]` (default 1).
//!
//! - paas backup: `paas db backup --no-wait` until stored (row counts, pg_dump -Fc from the
//!   replica streamed through the agent to the control plane, SHA-256, manifest, local store).
//! - paas verify: the verification that follows (restore into a throwaway container, recount).
//! - paas restore: `paas db restore --to-new` (pg_restore into a new database on the primary).
//! - direct: `pg_dump -Fc > file`, `pg_dump | gzip > file` in the replica container, and
//!   `pg_restore -d newdb file` in the primary container.

use paas_tests::{docker, Platform};
use std::time::{Duration, Instant};

fn exec(container: &str, script: &str) -> Duration {
    let t = Instant::now();
    let out = std::process::Command::new("docker")
        .args(["exec", "-u", "postgres", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    t.elapsed()
}

fn main() {
    let gb: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1.0);
    let mut p = Platform::start();
    let app = p.app_name("bench");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app]).expect_ok();
    p.wait_db_healthy(&app);
    let db = app.replace('-', "_");
    let (primary, replica) =
        (format!("paas-{app}--production--db-primary"), format!("paas-{app}--production--db-replica"));

    // About 250 bytes per row (a third of it compressible), indexed like a real table.
    let rows = (gb * 4_200_000.0) as u64;
    eprintln!("loading {rows} rows...");
    let sql = format!(
        "CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), kind int, \
         payload text); INSERT INTO events (kind, payload) SELECT g % 17, md5(g::text) || md5((g * 7)::text) || \
         md5((g * 13)::text) || repeat('x', 80) || md5((g * 31)::text) FROM generate_series(1, {rows}) g; \
         CREATE INDEX ON events (kind); SELECT pg_size_pretty(pg_database_size(current_database()));"
    );
    let out = p.psql(&app, &[], &sql);
    let size = out.lines().last().unwrap_or_default().to_string();
    eprintln!("database size: {size}");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let info = p.paas(&["db", "info", "--app", &app, "-o", "json"]).expect_ok().json();
        if info["replica"]["figures"]["lag_bytes"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the replica did not catch up");
        std::thread::sleep(Duration::from_millis(500));
    }

    let t = Instant::now();
    let b = p.paas(&["db", "backup", "--app", &app, "--no-wait", "-o", "json"]).expect_ok().json();
    let id = b["id"].as_str().unwrap().to_string();
    let (backup, verify, bytes) = loop {
        let b = p.paas(&["db", "backups", "--app", &app, "-o", "json"]).expect_ok().json();
        let b = b.as_array().unwrap().iter().find(|x| x["id"] == id.as_str()).unwrap().clone();
        assert_ne!(b["status"], "failed", "{b}");
        if b["status"] == "stored" {
            let backup = t.elapsed();
            let v = Instant::now();
            loop {
                let b = p.paas(&["db", "backups", "--app", &app, "-o", "json"]).expect_ok().json();
                let b = b.as_array().unwrap().iter().find(|x| x["id"] == id.as_str()).unwrap().clone();
                if b["verification"] == "ok" {
                    break;
                }
                assert_ne!(b["verification"], "failed", "{b}");
                std::thread::sleep(Duration::from_millis(200));
            }
            break (backup, v.elapsed(), b["size_bytes"].as_u64().unwrap());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("paas backup {backup:?}, verification {verify:?}, {bytes} bytes");
    let t = Instant::now();
    p.paas(&["db", "restore", &id, "--app", &app, "--to-new"]).expect_ok();
    let restore = t.elapsed();
    eprintln!("paas restore {restore:?}");

    let dump_fc = exec(&replica, &format!("/usr/lib/postgresql/15/bin/pg_dump -Fc -d {db} > /tmp/b.dump"));
    let dump_gz =
        exec(&replica, &format!("/usr/lib/postgresql/15/bin/pg_dump -d {db} | gzip > /tmp/b.sql.gz"));
    docker(&["cp", &format!("{replica}:/tmp/b.dump"), "/tmp/paas-bench-b.dump"]);
    docker(&["cp", "/tmp/paas-bench-b.dump", &format!("{primary}:/tmp/b.dump")]);
    std::fs::remove_file("/tmp/paas-bench-b.dump").ok();
    exec(&primary, "/usr/lib/postgresql/15/bin/psql -q -c 'CREATE DATABASE direct_restore'");
    let direct_restore =
        exec(&primary, "/usr/lib/postgresql/15/bin/pg_restore -d direct_restore --exit-on-error /tmp/b.dump");
    // The copied file belongs to root.
    docker(&["exec", "-u", "root", &replica, "rm", "-f", "/tmp/b.dump", "/tmp/b.sql.gz"]);
    docker(&["exec", "-u", "root", &primary, "rm", "-f", "/tmp/b.dump"]);

    let s = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("database {size}, backup {:.0} MiB", bytes as f64 / 1048576.0);
    println!("| operation | paas | direct | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| backup (paas db backup vs pg_dump -Fc > file) | {} | {} | {:.2} |",
        s(backup),
        s(dump_fc),
        r(backup, dump_fc)
    );
    println!(
        "| backup (paas db backup vs pg_dump \\| gzip > file) | {} | {} | {:.2} |",
        s(backup),
        s(dump_gz),
        r(backup, dump_gz)
    );
    println!(
        "| restore (paas db restore --to-new vs pg_restore -d) | {} | {} | {:.2} |",
        s(restore),
        s(direct_restore),
        r(restore, direct_restore)
    );
    println!("| verification (restore into a throwaway container + recount) | {} | - | - |", s(verify));
}

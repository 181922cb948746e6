//! Moving data in and keeping credentials fresh, against real PostgreSQL: `db import` loads a
//! dump made elsewhere by Debian's pg_dump (from a file and from a URL), proven by a restore
//! drill before it touches anything, and refuses files that are no dump without changing a
//! thing; `db rotate-credentials` gives the app's role a new password that a release rolls out,
//! after which the app still writes and the old password no longer logs in.

use paas_tests::pg::PgServer;
use paas_tests::{free_port, http, Platform};
use std::process::{Child, Command};

/// A database elsewhere, owned by another role than the app's, dumped with `pg_dump -Fc`.
fn foreign_dump(dir: &std::path::Path) -> (PgServer, std::path::PathBuf) {
    let pg = PgServer::start();
    pg.create_database("shop");
    pg.psql(
        "shop",
        "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL); \
         CREATE TABLE orders (id int PRIMARY KEY, customer int REFERENCES customers, item text); \
         CREATE INDEX orders_item ON orders (item); \
         INSERT INTO customers (name) SELECT 'c' || n FROM generate_series(1, 20) n; \
         INSERT INTO orders SELECT n, 1 + n % 20, 'item ' || n FROM generate_series(1, 500) n;",
    );
    let path = dir.join("shop.dump");
    let url = pg.url("shop");
    let out = Command::new("pg_dump").args(["-Fc", "-f"]).arg(&path).arg(&url).output().expect("pg_dump");
    assert!(out.status.success(), "pg_dump: {out:?}");
    (pg, path)
}

/// Serves `dir` over HTTP on a free loopback port (python3's own server), killed when dropped.
struct Files(Child, u16);

impl Files {
    fn serve(dir: &std::path::Path) -> Files {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        paas_tests::wait_for(20, "the file server", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Files(child, port)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn backups(p: &Platform, app: &str) -> Vec<serde_json::Value> {
    let listed = p.paas(&["db", "backups", "--app", app, "-o", "json"]).expect_ok().json();
    listed.as_array().unwrap().clone()
}

#[test]
fn a_dump_from_elsewhere_is_proven_then_imported_and_what_is_no_dump_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_pg, dump) = foreign_dump(dir.path());
    let dump = dump.to_str().unwrap().to_string();
    let mut p = Platform::start();
    let app = p.app_name("imp");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--replicas", "0", "--backup-schedule", "off"]).expect_ok();
    p.wait_db_healthy(&app);
    p.psql(&app, &[], "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)");

    // Refused in the user's words, nothing uploaded or changed.
    let plain = dir.path().join("plain.sql");
    std::fs::write(&plain, "CREATE TABLE x (n int);\n").unwrap();
    p.paas(&["db", "import", plain.to_str().unwrap(), "--app", &app, "--confirm"])
        .expect_err("is not a pg_dump custom-format archive");
    p.paas(&["db", "import", &dump, "--app", &app]).expect_err("pass --confirm");
    p.paas(&["db", "import", "/nonexistent.dump", "--app", &app, "--confirm"])
        .expect_err("cannot read /nonexistent.dump");
    assert!(backups(&p, &app).is_empty());

    // A file that starts like a dump but is cut short is stored, fails its drill, and restores
    // nothing.
    let bytes = std::fs::read(&dump).unwrap();
    let cut = dir.path().join("cut.dump");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    p.paas(&["db", "import", cut.to_str().unwrap(), "--app", &app, "--confirm"])
        .expect_err("did not restore into a throwaway database, so nothing was imported");
    assert_eq!(p.psql(&app, &[], "SELECT count(*) FROM pg_tables WHERE tablename = 'orders'"), "0");
    assert_eq!(p.psql(&app, &[], "SELECT n FROM kept"), "7");

    // The real dump: proven, a safety backup taken, then restored as the app's own tables.
    let out = p.paas(&["db", "import", &dump, "--app", &app, "--confirm"]).expect_ok();
    assert!(out.stderr.contains("Proven: 2 tables, 520 rows"), "{out:?}");
    assert!(out.stdout.contains("The data it replaced is in safety backup"), "{out:?}");
    assert_eq!(p.psql(&app, &[], "SELECT count(*) FROM orders"), "500");
    assert_eq!(p.psql(&app, &[], "SELECT n FROM kept"), "7", "tables the dump does not hold stay");
    let owner = p.psql(&app, &[], "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'");
    let me = p.psql(&app, &[], "SELECT current_user");
    assert_eq!(owner, me, "imported tables belong to the app's role");
    p.psql(&app, &[], "INSERT INTO customers (name) VALUES ('new')"); // its sequence came along
    let all = backups(&p, &app);
    let imported: Vec<_> = all.iter().filter(|b| b["trigger"] == "imported").collect();
    assert_eq!(imported.len(), 2, "the cut file and the dump: {all:?}");
    assert!(imported.iter().any(|b| b["verification"] == "ok"), "{imported:?}");
    assert!(imported.iter().any(|b| b["verification"] == "failed"), "{imported:?}");
    assert!(all.iter().any(|b| b["trigger"] == "safety" && b["status"] == "stored"), "{all:?}");
    let events = p.paas(&["events", "--app", &app]).expect_ok().stdout;
    assert!(events.contains("Imported a dump"), "{events}");

    // From a URL, into a new database beside the environment's.
    let files = Files::serve(dir.path());
    let url = format!("http://127.0.0.1:{}/shop.dump", files.1);
    let out = p.paas(&["db", "import", &url, "--app", &app, "--to-new"]).expect_ok();
    let new_db = out
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "database")
        .nth(1)
        .unwrap_or_else(|| panic!("no new database named: {out:?}"))
        .to_string();
    let select = ["db", "psql", "--app", &app, "--", "-d", &new_db, "-tAc", "SELECT count(*) FROM orders"];
    assert_eq!(p.paas(&select).expect_ok().stdout.trim(), "500");
    let missing = format!("http://127.0.0.1:{}/missing.dump", files.1);
    p.paas(&["db", "import", &missing, "--app", &app, "--to-new"]).expect_err("404");
}

/// Logs in with a URL from the node (psql from Debian's client on the host).
fn login(url: &str) -> std::process::Output {
    Command::new("psql").args([url, "-tAc", "SELECT 1"]).output().expect("psql")
}

#[test]
fn rotated_credentials_roll_out_as_a_release_and_the_old_password_stops_working() {
    let mut p = Platform::start();
    let app = p.app_name("rot");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--replicas", "0", "--backup-schedule", "off"]).expect_ok();
    p.wait_db_healthy(&app);
    let src = paas_tests::example_copy("notes");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let r = http::request(&p.ingress, "POST", &p.host(&app), "/notes", &[], "before");
    assert_eq!(r.status, 201, "{r:?}");
    let revealed = |p: &Platform| {
        paas_tests::wait_for(60, "the revealed node URL", || {
            let info = p.paas(&["db", "info", "--app", &app, "--reveal", "-o", "json"]).expect_ok().json();
            info["node_url"].as_str().map(str::to_string)
        })
    };
    let old = revealed(&p);
    assert!(login(&old).status.success());

    let out = p.paas(&["db", "rotate-credentials", "--app", &app]).expect_ok();
    assert!(out.stderr.contains("has a new password") && out.stderr.contains("release v"), "{out:?}");
    let new = revealed(&p);
    assert_ne!(old, new);
    let refused = login(&old);
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("password authentication failed"),
        "{refused:?}"
    );
    assert!(login(&new).status.success());
    // The app runs the release with the new DATABASE_URL and still writes.
    let r = http::request(&p.ingress, "POST", &p.host(&app), "/notes", &[], "after");
    assert_eq!(r.status, 201, "{r:?}");
    let releases = p.paas(&["releases", "--app", &app]).expect_ok().stdout;
    assert!(releases.contains("Set DATABASE_URL"), "{releases}");
    let info = p.wait_db_healthy(&app);
    assert!(info["primary"]["problem"].is_null(), "{info}");
    let events = p.paas(&["events", "--app", &app]).expect_ok().stdout;
    assert!(events.contains("Database credentials rotated"), "{events}");
}

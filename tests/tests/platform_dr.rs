//! The platform's own disaster recovery, end to end: a state backup sealed with a passphrase,
//! the data directory destroyed, and `paas up --restore-from` on a fresh one bringing back the
//! apps, their config (secrets included, sealed with the restored key) and the databases'
//! backups, which still download; a wrong passphrase restores nothing.

use paas_tests::Platform;
use std::time::Instant;

const PASSPHRASE: &str = "correct horse battery staple";

#[test]
fn a_destroyed_data_directory_comes_back_from_a_state_backup() {
    if std::env::var("PAAS_TEST_STORE").as_deref() == Ok("postgres") {
        eprintln!("state backups cover a SQLite state; a PostgreSQL state has its own tools");
        return;
    }
    // Backups live apart from the data directory, as on S3 or another disk.
    let store = tempfile::tempdir().unwrap();
    let backup_dir = store.path().to_str().unwrap().to_string();
    let env = [("PAAS_STATE_PASSPHRASE", PASSPHRASE)];
    let mut p = Platform::start_with_env(&["--backup-dir", &backup_dir], &env);
    assert!(!p.log().contains(PASSPHRASE), "the passphrase reached the log");
    let app = p.app_name("dr");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["config", "set", "--app", &app, "GREETING=hello", "--secret", "LICENSE=lic-0042"]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--replicas", "0", "--backup-schedule", "off"]).expect_ok();
    p.wait_db_healthy(&app);
    p.psql(&app, &[], "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2)");
    p.paas(&["db", "backup", "--app", &app]).expect_ok();
    let backups = p.paas(&["db", "backups", "--app", &app, "-o", "json"]).expect_ok().json();
    let dump = backups.as_array().unwrap().iter().find(|b| b["kind"] == "dump").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let taken = p.paas(&["platform", "backup", "-o", "json"]).expect_ok().json();
    let file = taken["locations"][0].as_str().unwrap().strip_prefix("local:").unwrap().to_string();
    let sealed = std::fs::read(&file).unwrap();
    assert!(!sealed.windows(7).any(|w| w == b"lic-004"), "the backup holds a secret in clear");
    let listed = p.paas(&["platform", "backups"]).expect_ok().stdout;
    assert!(listed.contains(taken["name"].as_str().unwrap()), "{listed}");

    // The host is gone: the platform stops and its data directory with it.
    drop(p);

    // A wrong passphrase restores nothing and says so.
    let fresh = tempfile::tempdir().unwrap();
    let wrong = std::process::Command::new(paas_tests::paas_bin())
        .args(["up", "--data-dir", fresh.path().to_str().unwrap(), "--restore-from", &file])
        .args(["--api-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"])
        .args(["--agent-addr", "127.0.0.1:0", "--node-name", &format!("dr-{}", paas_tests::rand_suffix())])
        .env("PAAS_STATE_PASSPHRASE", "not the passphrase at all")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success() && stderr.contains("passphrase is wrong"), "{stderr}");
    assert!(!fresh.path().join("state.db").exists(), "a wrong passphrase wrote state");

    let started = Instant::now();
    let p = Platform::start_with_env(&["--backup-dir", &backup_dir, "--restore-from", &file], &env);
    let secs = started.elapsed().as_secs_f64();
    let apps = p.paas(&["apps", "list"]).expect_ok().stdout;
    assert!(apps.contains(&app), "{apps}");
    assert_eq!(p.paas(&["config", "get", "--app", &app, "GREETING"]).expect_ok().stdout.trim(), "hello");
    assert_eq!(p.paas(&["config", "get", "--app", &app, "LICENSE"]).expect_ok().stdout.trim(), "lic-0042");
    let listed = p.paas(&["db", "backups", "--app", &app, "-o", "json"]).expect_ok().json();
    let b = listed.as_array().unwrap().iter().find(|b| b["id"] == dump.as_str()).expect("the dump is listed");
    assert_eq!(b["verification"], "ok", "{b}");
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("dump");
    p.paas(&["db", "backups", "download", &dump, "--app", &app, "-o", to.to_str().unwrap()]).expect_ok();
    assert!(std::fs::metadata(&to).unwrap().len() > 0);
    // A second restore into a data directory that holds a platform is refused.
    let again = std::process::Command::new(paas_tests::paas_bin())
        .args(["up", "--data-dir", p.data_dir().to_str().unwrap(), "--restore-from", &file])
        .env("PAAS_STATE_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && stderr.contains("empty data directory"), "{stderr}");
    eprintln!("restored the platform from its state backup in {secs:.1}s");
}

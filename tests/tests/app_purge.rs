//! `paas apps delete --purge` end to end: the confirmation says what goes; the purge removes
//! the app's database volume, network and images from Docker and keeps its backups, unless
//! `--purge-backups` deletes those from the backup store too.

use paas_tests::{docker, tiny_app, Platform};
use std::path::PathBuf;

/// An app with a running release and a database holding one verified backup; returns the
/// backup's local dump file.
fn app_with_backup(p: &Platform, app: &str) -> PathBuf {
    p.paas(&["apps", "create", app]).expect_ok();
    p.paas(&["db", "create", "--app", app, "--replicas", "0"]).expect_ok();
    let src = tiny_app(app, "");
    std::fs::write(src.path().join("v.txt"), "1\n").unwrap();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", app]).expect_ok();
    p.wait_db_healthy(app);
    p.psql(app, &[], "CREATE TABLE t (n int); INSERT INTO t VALUES (1)");
    let backup = p.paas(&["db", "backup", "--app", app, "-o", "json"]).expect_ok().json();
    let local =
        backup["locations"].as_array().unwrap().iter().find_map(|l| l.as_str()?.strip_prefix("local:"));
    let dump = PathBuf::from(local.expect("a local copy"));
    assert!(dump.exists(), "{backup}");
    dump
}

fn exists(kind: &str, name: &str) -> bool {
    let filter = format!("name=^{name}$");
    let out = match kind {
        "volume" => docker(&["volume", "ls", "-q", "--filter", &filter]),
        _ => docker(&["network", "ls", "-q", "--filter", &filter]),
    };
    !out.trim().is_empty()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn purge_removes_volumes_networks_and_images_and_backups_only_when_asked() {
    let mut p = Platform::start();
    let app = p.app_name("purged");
    let (volume, network, image) = (
        format!("paas-{app}--production--db-primary"),
        format!("paas-{app}--production"),
        format!("paas/{app}--production:v1"),
    );
    let dump = app_with_backup(&p, &app);
    assert!(exists("volume", &volume) && exists("network", &network));
    assert!(!docker(&["images", "-q", &image]).trim().is_empty(), "the release image was built");

    // The confirmation says what goes and what stays, per flag.
    let plain = p.paas(&["apps", "delete", &app]).expect_err("--confirm");
    assert!(
        plain.stderr.contains("database volumes stay") && plain.stderr.contains("--purge"),
        "{}",
        plain.stderr
    );
    let asked = p.paas(&["apps", "delete", &app, "--purge"]).expect_err("--confirm");
    assert!(
        asked.stderr.contains("database volumes (their data is gone), networks and images")
            && asked.stderr.contains("backups stay"),
        "{}",
        asked.stderr
    );
    p.paas(&["apps", "delete", &app, "--purge-backups", "--confirm", &app]).expect_err("--purge");

    let done =
        p.paas(&["apps", "delete", &app, "--confirm", &app, "--purge", "-o", "json"]).expect_ok().json();
    let node = p.node.clone();
    let on_node = |name: &str| format!("{node}: {name}");
    assert!(strings(&done["volumes"]).contains(&on_node(&volume)), "{done}");
    assert!(strings(&done["images"]).contains(&on_node(&image)), "{done}");
    assert!(strings(&done["networks"]).contains(&on_node(&network)), "{done}");
    assert_eq!(done["left"], serde_json::json!([]), "{done}");
    assert!(done["backups"].as_array().unwrap().is_empty(), "{done}");
    assert!(!exists("volume", &volume) && !exists("network", &network), "gone from Docker");
    assert!(docker(&["images", "-q", &image]).trim().is_empty(), "the image is gone");
    assert!(dump.exists(), "backups stay without --purge-backups");

    // With --purge-backups the dumps go too; the text lists what was removed.
    let other = p.app_name("purgedall");
    let other_dump = app_with_backup(&p, &other);
    let out =
        p.paas(&["apps", "delete", &other, "--confirm", &other, "--purge", "--purge-backups"]).expect_ok();
    assert!(out.stdout.contains("removed backups: 20"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "removed database volumes: {}",
            on_node(&format!("paas-{other}--production--db-primary"))
        )),
        "{}",
        out.stdout
    );
    assert!(!other_dump.exists(), "the backup's dump was deleted");
    assert!(dump.exists(), "another app's backup is untouched");
}

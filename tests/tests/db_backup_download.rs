//! `paas db backups download`: the dump streamed to a file (named after the backup unless
//! `-o FILE`), or to standard output with `-o -`, checked against the backup's SHA-256; an
//! existing file is kept without `--force`, a wrong id says so, and a corrupt copy is refused
//! with no file left behind.

use paas_tests::{paas_bin, Platform};
use sha2::{Digest, Sha256};

#[test]
fn a_backup_downloads_to_a_file_or_stdout_checked_against_its_checksum() {
    let mut p = Platform::start();
    let app = p.app_name("dumpdl");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--replicas", "0"]).expect_ok();
    p.psql(&app, &[], "CREATE TABLE t AS SELECT g AS n FROM generate_series(1, 5000) g");
    let b = p.paas(&["db", "backup", "--app", &app, "-o", "json"]).expect_ok().json();
    let (id, sha) = (b["id"].as_str().unwrap().to_string(), b["sha256"].as_str().unwrap().to_string());
    let dir = tempfile::tempdir().unwrap();
    let download = |extra: &[&str]| {
        let mut args = vec!["db", "backups", "download", id.as_str(), "--app", app.as_str()];
        args.extend_from_slice(extra);
        p.paas_in(dir.path(), &args)
    };

    // Default name in the current directory; what is on disk is the backup.
    let out = download(&[]).expect_ok();
    let file = dir.path().join(format!("{app}-production-{id}.dump"));
    let bytes = std::fs::read(&file).expect("the dump was written");
    assert_eq!(hex(&bytes), sha, "{}", out.stdout);
    assert!(bytes.starts_with(b"PGDMP"), "pg_dump's custom format");
    assert!(out.stdout.contains("checked"), "{}", out.stdout);

    // An existing file stays unless --force.
    std::fs::write(&file, b"mine").unwrap();
    download(&[]).expect_err("--force");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    download(&["--force"]).expect_ok();
    assert_eq!(hex(&std::fs::read(&file).unwrap()), sha);
    download(&["-o", "named.dump"]).expect_ok();
    assert_eq!(hex(&std::fs::read(dir.path().join("named.dump")).unwrap()), sha);

    // -o - writes the dump, and only the dump, to standard output.
    let raw = std::process::Command::new(paas_bin())
        .args(["db", "backups", "download", &id, "--app", &app, "-o", "-"])
        .env("XDG_CONFIG_HOME", p.config_home())
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
    assert_eq!(hex(&raw.stdout), sha);

    // A wrong id says so; nothing is written.
    let wrong = p.paas_in(dir.path(), &["db", "backups", "download", "20200101-000000-0000", "--app", &app]);
    wrong.expect_err("has no backup 20200101-000000-0000");
    assert!(!dir.path().join(format!("{app}-production-20200101-000000-0000.dump")).exists());

    // A copy that no longer matches its checksum is refused, and no file is left behind.
    let stored = b["locations"].as_array().unwrap().iter().find_map(|l| l.as_str()?.strip_prefix("local:"));
    let stored = std::path::PathBuf::from(stored.expect("a local copy"));
    let mut corrupt = std::fs::read(&stored).unwrap();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    std::fs::write(&stored, corrupt).unwrap();
    download(&["-o", "corrupt.dump"]).expect_err("SHA-256");
    assert!(!dir.path().join("corrupt.dump").exists() && !dir.path().join("corrupt.dump.partial").exists());
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

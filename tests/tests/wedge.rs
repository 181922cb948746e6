//! Nothing wedges, end to end: an S3 endpoint that accepts connections and never answers fails
//! the backup with the reason within two minutes; a control plane killed (SIGKILL) while it
//! stores a backup or while a deploy is in its stability window comes back with both ended
//! with a clear status, and the next backup (verified) and the next deploy succeed.

use paas_tests::s3::Moto;
use paas_tests::{http, Platform};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A TCP proxy in front of moto that can be made to hang: while hung it takes every byte sent
/// and answers nothing, like a stuck S3 endpoint. A connection that hung once stays silent.
struct Gate {
    endpoint: String,
    hung: Arc<AtomicBool>,
}

impl Gate {
    fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let hung = Arc::new(AtomicBool::new(false));
        let (flag, upstream) = (hung.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (flag, upstream) = (flag.clone(), upstream.clone());
                std::thread::spawn(move || relay(client, &upstream, &flag));
            }
        });
        Self { endpoint, hung }
    }

    fn hang(&self, on: bool) {
        self.hung.store(on, Ordering::SeqCst);
    }
}

fn relay(client: TcpStream, upstream: &str, hung: &AtomicBool) {
    let Ok(server) = TcpStream::connect(upstream) else { return };
    let (Ok(mut from_server), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) else { return };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(Shutdown::Both);
    });
    let (mut from_client, mut to_server) = (client, server);
    let mut buf = vec![0u8; 64 * 1024];
    let mut swallowing = false;
    loop {
        let n = match from_client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        swallowing |= hung.load(Ordering::SeqCst);
        if !swallowing && to_server.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to_server.shutdown(Shutdown::Both);
}

fn backup(p: &Platform, app: &str, id: &str) -> serde_json::Value {
    let list = p.paas(&["db", "backups", "--app", app, "-o", "json"]).expect_ok().json();
    list.as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no backup {id}"))
}

#[test]
fn backups_end_with_a_reason_when_s3_hangs_or_the_control_plane_dies_while_storing_them() {
    let moto = Moto::start();
    let gate = Gate::start(&moto.addr);
    let bucket = format!("paas-wedge-{}", paas_tests::rand_suffix());
    let mut p = Platform::start_with_env(
        &["--backup-s3-endpoint", &gate.endpoint, "--backup-s3-bucket", &bucket],
        &[("PAAS_BACKUP_S3_ACCESS_KEY", "test-key"), ("PAAS_BACKUP_S3_SECRET_KEY", "test-secret")],
    );
    let app = p.app_name("wedge");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["db", "create", "--app", &app, "--replicas", "0", "--backup-schedule", "off"]).expect_ok();
    p.wait_db_healthy(&app);
    p.psql(&app, &[], "CREATE TABLE items (n int); INSERT INTO items SELECT generate_series(1, 500)");

    // S3 accepts the connection and never answers: the backup fails, saying so, in time.
    gate.hang(true);
    let started = Instant::now();
    let b = p.paas(&["db", "backup", "--app", &app, "--no-wait", "-o", "json"]).expect_ok().json();
    let id = b["id"].as_str().unwrap().to_string();
    let b = loop {
        let b = backup(&p, &app, &id);
        if b["status"] != "running" {
            break b;
        }
        assert!(started.elapsed() < Duration::from_secs(150), "a hung S3 holds the backup: {b}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let took = started.elapsed();
    eprintln!("the backup failed {:.1}s after it started against a hung S3", took.as_secs_f64());
    assert_eq!(b["status"], "failed", "{b}");
    let why = b["error"].as_str().unwrap();
    assert!(why.contains("copying the backup to S3") && why.contains("did not answer in time"), "{why}");
    assert!(took < Duration::from_secs(120), "the hung S3 held the backup for {took:?}");

    // Killed while copying to S3: the agent has reported the dump, the control plane has moved
    // it in place and written its manifest, and the copy hangs. After the restart the backup has
    // failed with the reason, at once.
    let b = p.paas(&["db", "backup", "--app", &app, "--no-wait", "-o", "json"]).expect_ok().json();
    let id = b["id"].as_str().unwrap().to_string();
    let manifest =
        p.dir.path().join("data/backups").join(&app).join("production").join(format!("{id}.manifest.json"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !manifest.exists() {
        let b = backup(&p, &app, &id);
        assert_eq!(b["status"], "running", "it ended before the kill: {b}");
        assert!(Instant::now() < deadline, "storing the backup never began: {b}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(backup(&p, &app, &id)["status"], "running");
    p.kill();
    gate.hang(false);
    p.restart();
    let b = backup(&p, &app, &id);
    assert_eq!(b["status"], "failed", "{b}");
    assert!(b["error"].as_str().unwrap().contains("restarted before this backup was stored"), "{b}");
    let info = p.paas(&["db", "info", "--app", &app]).expect_ok().stdout;
    assert!(info.contains(&format!("the last backup {id} FAILED")), "{info}");

    // The next backup goes through, to S3 too, and is proven by a restore.
    let out = p.paas(&["db", "backup", "--app", &app]).expect_ok();
    assert!(out.stdout.contains("Verified") && out.stdout.contains("copy: s3:"), "{}", out.stdout);
    let events = p.paas(&["events", "-o", "json"]).expect_ok().json();
    let failed = events.as_array().unwrap().iter().filter(|e| e["kind"] == "db.backup.failed").count();
    assert_eq!(failed, 2, "{events}");
}

/// A directory holding only a paas.toml for hello with the given stability window, for
/// `paas deploy DIR --image IMG`.
fn manifest_dir(stability_window: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        "[processes.web]\nhealthcheck = {{ path = \"/healthz\", interval = \"1s\" }}\n\
         [deploy]\nstability_window = \"{stability_window}\"\n"
    );
    std::fs::write(dir.path().join("paas.toml"), manifest).unwrap();
    dir
}

fn releases(p: &Platform, app: &str) -> Vec<serde_json::Value> {
    p.paas(&["releases", "--app", app, "-o", "json"]).expect_ok().json().as_array().unwrap().clone()
}

fn release(p: &Platform, app: &str, version: u64) -> serde_json::Value {
    releases(p, app).into_iter().find(|r| r["version"] == version).expect("the release")
}

#[test]
fn a_deploy_killed_in_its_stability_window_ends_failed_and_the_next_deploy_runs() {
    let mut p = Platform::start();
    let app = p.app_name("wedge");
    let src = paas_tests::example_copy("hello");
    let quick = manifest_dir("500ms");
    std::fs::copy(quick.path().join("paas.toml"), src.path().join("paas.toml")).unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    p.wait_for_body(&p.host(&app), "Hello from paas!", Duration::from_secs(60));
    let image = format!("paas/{app}--production:v1");

    // v2 starts, turns healthy and is watched for 60 s; the control plane dies in that window.
    let long = manifest_dir("60s");
    let dir = long.path().to_str().unwrap();
    p.paas(&["deploy", dir, "--app", &app, "--image", &image, "--detach"]).expect_ok();
    let api = p.api_url.trim_start_matches("http://").to_string();
    let auth = format!("Bearer {}", p.admin_token());
    let path = format!("/api/v1/apps/{app}/envs/production/releases/2/events?after=0");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http::request(&api, "GET", "localhost", &path, &[("Authorization", &auth)], "");
        assert_eq!(r.status, 200, "{r:?}");
        if r.body.contains("watching them for 60s") {
            break;
        }
        assert!(Instant::now() < deadline, "v2 never reached its stability window: {}", r.body);
        std::thread::sleep(Duration::from_millis(200));
    }
    p.kill();
    p.restart();

    let v2 = release(&p, &app, 2);
    assert_eq!(v2["status"], "failed", "{v2}");
    assert!(v2["error"].as_str().unwrap().contains("restarted during this deploy"), "{v2}");
    assert_eq!(release(&p, &app, 1)["status"], "active");
    p.wait_for_body(&p.host(&app), "Hello from paas!", Duration::from_secs(30));

    // The environment is not left `deploying`: the next deploy runs and serves.
    let out =
        p.paas(&["deploy", quick.path().to_str().unwrap(), "--app", &app, "--image", &image, "-o", "json"]);
    assert_eq!(out.expect_ok().json()["version"], 3);
    assert_eq!(release(&p, &app, 3)["status"], "active");
    // v2's containers are gone; v3's serve.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ps = p.paas(&["ps", "--app", &app, "-o", "json"]).expect_ok().json();
        let versions: Vec<u64> =
            ps.as_array().unwrap().iter().filter_map(|c| c["release"].as_u64()).collect();
        if !versions.is_empty() && versions.iter().all(|v| *v == 3) {
            break;
        }
        assert!(Instant::now() < deadline, "old containers are still assigned: {ps}");
        std::thread::sleep(Duration::from_millis(200));
    }
    p.wait_for_body(&p.host(&app), "Hello from paas!", Duration::from_secs(30));
}

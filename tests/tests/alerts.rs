//! Alerts and notifications through the real binaries: a real SMTP server (aiosmtpd, from
//! PyPI, on loopback) and a webhook receiver get a test message, then the firing message when
//! a test lowers the node disk rule's threshold below the real value and the resolving one
//! when it is raised again, each once; webhook bodies carry a valid HMAC signature. A silenced
//! rule's alert shows in `paas alerts list` but sends nothing.

use hmac::{Hmac, Mac};
use paas_tests::{free_port, wait_for, Platform};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// aiosmtpd keeping every message in a Maildir.
struct Smtp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Smtp {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(dir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting aiosmtpd (pip install aiosmtpd)");
        wait_for(30, "aiosmtpd to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        Self { child, port, dir }
    }

    /// Every message received, whole (headers and body).
    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(self.dir.path().join("mail").join(sub)) else { continue };
            for e in entries.flatten() {
                out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        out
    }

    fn count(&self, needle: &str) -> usize {
        self.messages().iter().filter(|m| m.contains(needle)).count()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the webhook receiver got: (signature header, body) of each POST.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver answering 200 and keeping what it got.
fn webhook() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let (mut length, mut signature) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("x-paas-signature:") {
                    signature = line.split_once(':').unwrap().1.trim().to_string();
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            keep.lock().unwrap().push((signature, String::from_utf8_lossy(&body).into_owned()));
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, got)
}

/// The webhook bodies of `event` for `rule`, each checked against its signature.
fn hooks(got: &Mutex<Vec<(String, String)>>, key: &str, event: &str, rule: Option<&str>) -> Vec<Value> {
    let got = got.lock().unwrap().clone();
    got.iter()
        .filter_map(|(signature, body)| {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
            mac.update(body.as_bytes());
            let expected = format!("sha256={}", hex(&mac.finalize().into_bytes()));
            assert_eq!(signature, &expected, "the signature of {body}");
            let v: Value = serde_json::from_str(body).unwrap();
            (v["event"] == event && rule.is_none_or(|r| v["rule"] == r)).then_some(v)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn alerts_fire_and_resolve_by_email_and_signed_webhook_once_and_silences_hold() {
    let smtp = Smtp::start();
    let url = format!("smtp://127.0.0.1:{}", smtp.port);
    let p = Platform::start_with(&["--smtp-url", &url, "--smtp-from", "paas <paas@example.com>"]);
    let (port, got) = webhook();

    // Targets: the email address, and a webhook whose signing key is shown once.
    p.paas(&["notify", "add", "email", "not-an-address"]).expect_err("is not an email address");
    p.paas(&["notify", "add", "email", "ops@example.com"]).expect_ok();
    let hook = p
        .paas(&["notify", "add", "webhook", &format!("http://127.0.0.1:{port}/hook"), "-o", "json"])
        .expect_ok()
        .json();
    let key = hook["secret"].as_str().expect("the signing key, shown once").to_string();
    let list = p.paas(&["notify", "list", "-o", "json"]).expect_ok().json();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(list.as_array().unwrap().iter().all(|t| t.get("secret").is_none()), "{list}");

    // A test message reaches both.
    let test = p.paas(&["notify", "test"]).expect_ok().stdout;
    assert_eq!(test.matches(": sent").count(), 2, "{test}");
    wait_for(30, "the test mail", || (smtp.count("[paas] test notification") == 1).then_some(()));
    assert_eq!(hooks(&got, &key, "test", None).len(), 1);

    // The node disk rule with a threshold under the real value: it fires, once.
    p.paas(&["alerts", "rules", "set", "node-disk", "--threshold", "0.001", "--for", "0s"]).expect_ok();
    wait_for(90, "the firing mail", || (smtp.count("FIRING: node-disk") >= 1).then_some(()));
    let firing = wait_for(30, "the firing webhook", || {
        let h = hooks(&got, &key, "alert.firing", Some("node-disk"));
        (!h.is_empty()).then_some(h)
    });
    assert!(firing[0]["value"].as_f64().unwrap() > 0.001, "{firing:?}");
    assert!(firing[0]["subject"].as_str().unwrap().contains("node="), "{firing:?}");
    let alerts = p.paas(&["alerts", "list", "-o", "json"]).expect_ok().json();
    assert!(
        alerts.as_array().unwrap().iter().any(|a| a["rule"] == "node-disk" && a["state"] == "firing"),
        "{alerts}"
    );
    let table = p.paas(&["alerts", "list"]).expect_ok().stdout;
    assert!(table.contains("firing") && table.contains("node-disk"), "{table}");

    // Raised above any disk: it resolves, once, and firing was not sent again meanwhile.
    p.paas(&["alerts", "rules", "set", "node-disk", "--threshold", "100"]).expect_ok();
    wait_for(60, "the resolving mail", || (smtp.count("RESOLVED: node-disk") >= 1).then_some(()));
    wait_for(30, "the resolving webhook", || {
        (!hooks(&got, &key, "alert.resolved", Some("node-disk")).is_empty()).then_some(())
    });
    let disks = firing.len();
    assert_eq!(smtp.count("FIRING: node-disk"), disks, "one firing mail per disk alert");
    assert_eq!(hooks(&got, &key, "alert.firing", Some("node-disk")).len(), disks);
    assert_eq!(hooks(&got, &key, "alert.resolved", Some("node-disk")).len(), disks);

    // A silenced rule: its alert fires and shows, and nothing is sent for it.
    p.paas(&["alerts", "silence", "node-memory", "--for", "1h"]).expect_ok();
    p.paas(&["alerts", "rules", "set", "node-memory", "--threshold", "0.001", "--for", "0s"]).expect_ok();
    wait_for(60, "the silenced alert to fire", || {
        let alerts = p.paas(&["alerts", "list", "-o", "json"]).expect_ok().json();
        let fired =
            alerts.as_array().unwrap().iter().any(|a| a["rule"] == "node-memory" && a["silenced"] == true);
        fired.then_some(())
    });
    // Absence: a notification would have gone out right after the alert was recorded.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(smtp.count("node-memory"), 0);
    assert!(hooks(&got, &key, "alert.firing", Some("node-memory")).is_empty());
    let rules = p.paas(&["alerts", "rules"]).expect_ok().stdout;
    assert!(rules.contains("node-memory") && rules.contains("node_memory_percent > 0.001"), "{rules}");
    p.paas(&["alerts", "rules", "set", "no-such-rule", "--threshold", "1"]).expect_err("no alert rule");
}

/// An app of a Debian image running `cmd`, healthy while it runs.
fn app_running(cmd: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = format!("FROM debian:bookworm-slim\nCMD [\"sh\", \"-c\", \"{cmd}\"]\n");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let manifest = "[processes.web]\nhealthcheck = { type = \"command\", command = [\"true\"], interval = \"1s\" }\n[deploy]\nstability_window = \"500ms\"\nstop_grace = \"1s\"\n";
    std::fs::write(dir.path().join("paas.toml"), manifest).unwrap();
    dir
}

/// Whether `paas alerts list` shows `rule` firing about `app`.
fn firing(p: &Platform, rule: &str, app: &str) -> bool {
    let alerts = p.paas(&["alerts", "list", "-o", "json"]).expect_ok().json();
    alerts.as_array().unwrap().iter().any(|a| a["rule"] == rule && a["app"] == app && a["state"] == "firing")
}

#[test]
fn a_crash_loop_a_failed_deploy_and_a_failed_restore_drill_raise_alerts_and_deploys_are_notified() {
    let mut p = Platform::start();
    let (port, got) = webhook();
    let app = p.app_name("crashy");
    p.paas(&["apps", "create", &app]).expect_ok();
    let hook = p
        .paas(&[
            "notify",
            "add",
            "webhook",
            &format!("http://127.0.0.1:{port}/"),
            "--app",
            &app,
            "--deploys",
            "-o",
            "json",
        ])
        .expect_ok()
        .json();
    let key = hook["secret"].as_str().unwrap().to_string();

    // A process that runs 3 s and crashes, again and again: live at first, then a crash loop.
    let src = app_running("sleep 3; exit 1");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    wait_for(30, "the deploy notifications", || {
        let live = hooks(&got, &key, "deploy.live", None);
        (!hooks(&got, &key, "deploy.started", None).is_empty() && !live.is_empty()).then_some(live)
    });
    wait_for(60, "the crash-loop alert", || firing(&p, "crash-loop", &app).then_some(()));
    let alert = wait_for(30, "its webhook", || hooks(&got, &key, "alert.firing", Some("crash-loop")).pop());
    assert!(alert["subject"].as_str().unwrap().contains("process=web"), "{alert}");
    assert_eq!(alert["app"], app.as_str());

    // A rule of one's own, scoped to the app: fires for it, and goes when removed.
    let add = |extra: &[&str]| {
        let mut args = vec!["alerts", "rules", "add", "my-restarts", "--metric"];
        args.extend_from_slice(extra);
        p.paas(&args)
    };
    add(&["container_rstarts", "--threshold", "0"]).expect_err("is not a metric");
    add(&["container_restarts", "--threshold", "0", "--for", "0s", "--app", "no-such-app"])
        .expect_err("no-such-app");
    add(&["container_restarts", "--threshold", "0", "--for", "0s", "--app", &app]).expect_ok();
    wait_for(30, "the scoped rule's alert", || firing(&p, "my-restarts", &app).then_some(()));
    wait_for(30, "its webhook", || hooks(&got, &key, "alert.firing", Some("my-restarts")).pop());
    p.paas(&["alerts", "rules", "remove", "node-cpu"]).expect_err("one of the platform's rules");
    p.paas(&["alerts", "rules", "remove", "my-restarts"]).expect_ok();
    assert!(!p.paas(&["alerts", "rules"]).expect_ok().stdout.contains("my-restarts"));

    // A release that never gets healthy: the deploy fails, is notified and raises an alert.
    let broken = app_running("exit 1");
    p.paas(&["deploy", broken.path().to_str().unwrap(), "--app", &app]).expect_err("");
    wait_for(30, "the failed deploy's notification", || hooks(&got, &key, "deploy.failed", None).pop());
    wait_for(30, "the deploy-failed alert", || firing(&p, "deploy-failed", &app).then_some(()));

    // A backup whose copy is damaged fails its restore drill, which raises an alert.
    p.paas(&["db", "create", "--app", &app, "--replicas", "0"]).expect_ok();
    let b = p.paas(&["db", "backup", "--app", &app, "-o", "json"]).expect_ok().json();
    let id = b["id"].as_str().unwrap().to_string();
    let stored = b["locations"].as_array().unwrap().iter().find_map(|l| l.as_str()?.strip_prefix("local:"));
    let stored = std::path::PathBuf::from(stored.expect("a local copy"));
    let mut damaged = std::fs::read(&stored).unwrap();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    std::fs::write(&stored, damaged).unwrap();
    let verify = p.paas(&["db", "verify", &id, "--app", &app]);
    assert!(!verify.ok && verify.stderr.contains("FAILED"), "{verify:?}");
    wait_for(30, "the restore-failed alert", || firing(&p, "restore-failed", &app).then_some(()));
    wait_for(30, "its webhook", || hooks(&got, &key, "alert.firing", Some("restore-failed")).pop());
}

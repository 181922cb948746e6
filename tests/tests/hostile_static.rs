//! A hostile image's `[static]` directory end to end: symlinks to host files, to `/`, climbing
//! relative links into the platform's data directory, directory symlinks, hard links, and request
//! paths with `..` tricks. Nothing from the host or the data directory is ever served; plain
//! files next to them are, with byte ranges.

use paas_tests::{docker, http, Platform};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SERVE: Duration = Duration::from_secs(120);

/// Shell commands run in `public/` inside the image: plain files with tricky names, and links
/// of every kind aimed at `data` (the platform's data directory on the host) and at `/`.
fn hostile_steps(data: &Path) -> String {
    let data = data.display();
    // From `<data>/agent/static/<key>/files/`, four levels up is `<data>`.
    [
        "printf 0123456789 > digits.txt".to_string(),
        "printf dots > a..b.txt".into(),
        "printf 'three dots' > ...".into(),
        "ln -s /etc/passwd passwd".into(),
        "ln -s / root".into(),
        // Far enough up to reach `/` from any temporary directory.
        format!("ln -s {} up", "../".repeat(16)),
        "ln -s ../../../../secret.key key-rel".into(),
        "ln -s ../../../../admin-token token-rel".into(),
        "ln -s ../../../../state.db db-rel".into(),
        "ln -s ../../../../host-marker.txt marker-rel".into(),
        format!("ln -s {data}/secret.key key-abs"),
        format!("ln -s {data}/admin-token token-abs"),
        format!("ln -s {data}/host-marker.txt marker-abs"),
        format!("ln -s {data} datadir"),
        "ln -s /etc etcdir".into(),
        "mkdir sub && ln -s ../../../../.. sub/up2".into(),
        // Hard links: Docker's archive holds the first as a plain copy of the image's own
        // /etc/passwd, the second as a link to the first.
        "ln /etc/passwd hard && ln /etc/passwd hard2".into(),
    ]
    .join(" && ")
}

/// Every file and directory under `dir`; panics on anything else (a link, a device).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        assert!(kind.is_file() || kind.is_dir(), "extraction wrote {:?}, which is neither", entry.path());
        if kind.is_dir() {
            walk(&entry.path(), out);
        }
        out.push(entry.path());
    }
}

#[test]
fn hostile_static_directory_serves_nothing_from_the_host() {
    let mut p = Platform::start();
    let data = p.dir.path().join("data");
    let marker = format!("host-marker-{}", paas_tests::rand_suffix());
    std::fs::write(data.join("host-marker.txt"), &marker).unwrap();
    let app = p.app_name("hostile");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    let dockerfile = std::fs::read_to_string(src.path().join("Dockerfile")).unwrap();
    let step = format!("RUN cd /app/public && {}\nUSER nobody", hostile_steps(&data));
    std::fs::write(src.path().join("Dockerfile"), dockerfile.replace("USER nobody", &step)).unwrap();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    p.wait_for_body(&p.host(&app), "Hello from paas!", SERVE);
    let host = p.host(&app);

    // The extracted copy holds plain files and directories only, and the relative links would
    // have reached the data directory had they been kept.
    let statics = data.join("agent/static");
    let extracted: Vec<PathBuf> = std::fs::read_dir(&statics)
        .unwrap()
        .map(|e| e.unwrap().path().join("files"))
        .filter(|f| f.is_dir())
        .collect();
    assert_eq!(extracted.len(), 1, "{extracted:?}");
    let files = &extracted[0];
    assert_eq!(
        files.join("../../../../secret.key").canonicalize().unwrap(),
        data.join("secret.key").canonicalize().unwrap()
    );
    let mut entries = Vec::new();
    walk(files, &mut entries);
    let names: Vec<String> =
        entries.iter().map(|e| e.strip_prefix(files).unwrap().display().to_string()).collect();
    for kept in ["digits.txt", "a..b.txt", "...", "style.css", "hard", "hard2", "sub"] {
        assert!(names.contains(&kept.to_string()), "{kept} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("passwd") || n.starts_with("root")), "{names:?}");
    assert!(p.log().contains("were left out"), "the skipped links are logged:\n{}", p.log());

    let mut answers = Vec::new();
    // Plain files, also with names full of dots, are served by the ingress.
    for (path, body) in
        [("/static/digits.txt", "0123456789"), ("/static/a..b.txt", "dots"), ("/static/...", "three dots")]
    {
        let r = p.get(&host, path);
        assert_eq!((r.status, r.body.as_str()), (200, body), "{path}: {r:?}");
        answers.push(r);
    }
    let r = http::request(&p.ingress, "GET", &host, "/static/digits.txt", &[("Range", "bytes=2-5")], "");
    assert_eq!((r.status, r.body.as_str()), (206, "2345"), "{r:?}");
    assert!(r.headers.to_ascii_lowercase().contains("content-range: bytes 2-5/10"), "{r:?}");
    let r = http::request(&p.ingress, "GET", &host, "/static/digits.txt", &[("Range", "bytes=-3")], "");
    assert_eq!((r.status, r.body.as_str()), (206, "789"), "{r:?}");
    let r = http::request(&p.ingress, "GET", &host, "/static/digits.txt", &[("Range", "bytes=20-")], "");
    assert_eq!(r.status, 416, "{r:?}");

    // The hard links hold the image's own /etc/passwd: image content, not the host's.
    // The image the web container runs (the app's label also marks other images, such as a
    // build's, which the platform may be removing meanwhile).
    let web = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=paas.app={app}"),
        "--filter",
        "label=paas.process=web",
    ]);
    let web = web.split_whitespace().next().expect("the app's web container").to_string();
    let image = docker(&["inspect", "-f", "{{.Image}}", &web]).trim().to_string();
    // The image's labels name this platform's node; the container gets another node's, so the
    // agent does not take it for one of its own to retire before `cat` has run.
    let run = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--label",
            "paas.node=test-reader",
            &image,
            "cat",
            "/etc/passwd",
        ])
        .output()
        .expect("running docker");
    let image_passwd = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(image_passwd.starts_with("root:"), "{image_passwd} {}", String::from_utf8_lossy(&run.stderr));
    for path in ["/static/hard", "/static/hard2"] {
        let r = p.get(&host, path);
        assert_eq!((r.status, r.body.as_str()), (200, image_passwd.as_str()), "{path}: {r:?}");
        answers.push(r);
    }

    // Links of every kind and `..` tricks are never served by the ingress: the app answers them.
    for path in [
        "/static/passwd",
        "/static/root/etc/passwd",
        "/static/root/",
        "/static/up/etc/passwd",
        "/static/key-rel",
        "/static/token-rel",
        "/static/db-rel",
        "/static/marker-rel",
        "/static/key-abs",
        "/static/token-abs",
        "/static/marker-abs",
        "/static/datadir/secret.key",
        "/static/datadir/admin-token",
        "/static/etcdir/passwd",
        "/static/sub/up2/secret.key",
        "/static/../../../../secret.key",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/admin-token",
        "/static/..%2f..%2f..%2f..%2fadmin-token",
        "/static/sub/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/state.db",
        "/static/..%5c..%5c..%5c..%5csecret.key",
        "/static/./digits.txt",
        "/static//etc/passwd",
        "/static/digits.txt%00",
    ] {
        let r = p.get(&host, path);
        assert_eq!((r.status, r.body.as_str()), (404, "not found\n"), "{path}: {r:?}");
        answers.push(r);
    }

    // Nothing any answer carried came from the host or the data directory.
    let secret_key = std::fs::read(data.join("secret.key")).unwrap();
    let mut secrets: Vec<Vec<u8>> = vec![secret_key, marker.into_bytes(), b"SQLite format 3".to_vec()];
    for token in ["admin-token", "ca.key"] {
        secrets.push(std::fs::read_to_string(data.join(token)).unwrap().trim().as_bytes().to_vec());
    }
    let host_passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    secrets.extend(
        host_passwd.lines().filter(|l| !image_passwd.lines().any(|i| i == *l)).map(|l| l.as_bytes().to_vec()),
    );
    for r in &answers {
        for secret in &secrets {
            assert!(
                !r.body_bytes.windows(secret.len()).any(|w| w == secret.as_slice()),
                "an answer carries host data {:?}: {r:?}",
                String::from_utf8_lossy(secret)
            );
        }
    }
}

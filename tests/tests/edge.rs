//! The edge over HTTPS, end to end with `paas up` and curl: each app hostname is served with a
//! certificate of the local CA chosen by SNI, over HTTP/2 and HTTP/1.1; custom domains with
//! the local CA's certificate or an uploaded one (checked for its name, dates and key); a
//! name the platform does not serve gets no certificate; HTTPS keeps working across a restart.

use paas_tests::Platform;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Reply {
    /// curl's exit code: 0, or why the request failed (35: the TLS handshake, 60: the
    /// certificate was not trusted).
    code: i32,
    status: String,
    version: String,
    body: String,
}

/// GET `https://host:port/path` through the platform's HTTPS ingress, trusting `ca`.
fn curl(p: &Platform, ca: &Path, host: &str, path: &str, extra: &[&str]) -> Reply {
    let port = p.https.rsplit_once(':').unwrap().1;
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (status, version) = tail.split_once(' ').unwrap_or((tail, ""));
    Reply {
        code: out.status.code().unwrap_or(-1),
        status: status.to_string(),
        version: version.to_string(),
        body: format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// Waits until `check` answers `Ok`; on timeout, fails with what it last saw.
fn wait_for(secs: u64, what: &str, mut check: impl FnMut() -> Result<String, String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last saw: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// `Ok` with its body when `r` is a 200, else what it was.
fn ok(r: Reply) -> Result<String, String> {
    if r.status == "200" {
        Ok(r.body)
    } else {
        Err(format!("curl exit {} status {} {}", r.code, r.status, r.body))
    }
}

/// A CA of the test's own and a certificate it signs for `names`, valid `from`..`until` days
/// from now (negative: in the past).
fn own_cert(dir: &Path, tag: &str, names: &[&str], from: i64, until: i64) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Names of their own: rcgen gives every certificate the same one by default, which makes
    // the leaf look self-signed.
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("test CA {tag}"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from);
    params.not_after = now + time::Duration::days(until);
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let path = |what: &str| dir.join(format!("{tag}-{what}.pem")).to_str().unwrap().to_string();
    std::fs::write(path("cert"), cert.pem()).unwrap();
    std::fs::write(path("key"), key.serialize_pem()).unwrap();
    std::fs::write(path("ca"), ca_cert.pem()).unwrap();
    (path("cert"), path("key"), path("ca"))
}

#[test]
fn apps_and_domains_are_served_over_https_with_the_right_certificate() {
    let mut p = Platform::start();
    let ca = p.ca_file.clone();
    assert!(std::fs::read_to_string(&ca).unwrap().contains("BEGIN CERTIFICATE"));
    let app = p.app_name("edge");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let host = p.host(&app);

    // The app's hostname, over HTTP/2 and HTTP/1.1, with its own certificate of the local CA.
    let r = curl(&p, &ca, &host, "/", &["--http2"]);
    assert_eq!((r.code, r.status.as_str(), r.version.as_str()), (0, "200", "2"), "{}", r.body);
    assert!(r.body.contains("Hello"), "{}", r.body);
    let r = curl(&p, &ca, &host, "/", &["--http1.1"]);
    assert_eq!((r.code, r.status.as_str(), r.version.as_str()), (0, "200", "1.1"), "{}", r.body);
    // The app hears that the client came over HTTPS, and for which host (HTTP/2 has no Host
    // header of its own: the ingress gives the backend one).
    let r = curl(&p, &ca, &host, "/headers", &["--http2", "-H", "X-Forwarded-Proto: http"]);
    assert!(r.body.contains("x-forwarded-proto: https\n"), "{}", r.body);
    assert!(r.body.contains(&format!("host: {host}:")), "{}", r.body);
    let cert = Command::new("openssl")
        .args(["s_client", "-connect", &p.https, "-servername", &host])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let cert = String::from_utf8_lossy(&cert.stdout).into_owned();
    assert!(cert.contains(&format!("CN = {host}")), "{cert}");

    // A name the platform does not serve gets no certificate: the handshake fails.
    let r = curl(&p, &ca, &format!("nope-{app}.localhost"), "/", &[]);
    assert_eq!(r.code, 35, "{}", r.body);

    // A custom domain with the local CA's certificate.
    let dir = tempfile::tempdir().unwrap();
    let local = format!("www.{app}.test");
    let out = p.paas(&["domains", "add", "--app", &app, &local]).expect_ok().stdout;
    assert!(out.contains("local CA") && out.contains(&format!("point {local} at the ingress")), "{out}");
    let body = wait_for(30, "the custom domain over HTTPS", || ok(curl(&p, &ca, &local, "/", &[])));
    assert!(body.contains("Hello"), "{body}");

    // An uploaded certificate: refused when it is not for the domain, has expired, or comes
    // with another key; served when it is right.
    let shop = format!("shop.{app}.example");
    let (other, other_key, _) = own_cert(dir.path(), "other", &["other.example"], -1, 30);
    p.paas(&["domains", "add", "--app", &app, &shop, "--cert", &other, "--key", &other_key])
        .expect_err("not valid for");
    let (old, old_key, _) = own_cert(dir.path(), "old", &[&shop], -30, -1);
    p.paas(&["domains", "add", "--app", &app, &shop, "--cert", &old, "--key", &old_key])
        .expect_err("expired");
    let (cert, key, own_ca) = own_cert(dir.path(), "shop", &[&shop], -1, 30);
    p.paas(&["domains", "add", "--app", &app, &shop, "--cert", &cert, "--key", &other_key])
        .expect_err("does not belong");
    p.paas(&["domains", "add", "--app", &app, &shop, "--cert", &cert]).expect_err("--key");
    p.paas(&["domains", "add", "--app", &app, "bad_domain!", "--cert", &cert, "--key", &key])
        .expect_err("is not a domain name");
    p.paas(&["domains", "add", "--app", &app, &format!("x.{host}")]).expect_err("base domain");
    let out =
        p.paas(&["domains", "add", "--app", &app, &shop, "--cert", &cert, "--key", &key]).expect_ok().stdout;
    assert!(out.contains("your certificate"), "{out}");
    p.paas(&["domains", "add", "--app", &app, &shop]).expect_err("already a domain");
    wait_for(30, "the uploaded certificate to be served", || {
        ok(curl(&p, Path::new(&own_ca), &shop, "/", &[]))
    });
    // It is not the local CA's.
    assert_eq!(curl(&p, &ca, &shop, "/", &[]).code, 60);

    // Replaced (the same domain again with a new certificate) while clients keep making new
    // connections: none fails, and the new one is served.
    let (cert2, key2, own_ca2) = own_cert(dir.path(), "shop2", &[&shop], -1, 60);
    let both = dir.path().join("both-cas.pem");
    let pem = |f: &str| std::fs::read_to_string(f).unwrap();
    std::fs::write(&both, pem(&own_ca) + &pem(&own_ca2)).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, both, shop, https) = (stop.clone(), both.clone(), shop.clone(), p.https.clone());
            let count = count.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let port = https.rsplit_once(':').unwrap().1;
                    let out = Command::new("curl")
                        .args([
                            "-sS",
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{http_code}",
                            "--max-time",
                            "10",
                            "--cacert",
                        ])
                        .arg(&both)
                        .args([
                            "--resolve",
                            &format!("{shop}:{port}:127.0.0.1"),
                            &format!("https://{shop}:{port}/"),
                        ])
                        .output()
                        .unwrap();
                    seen.push(String::from_utf8_lossy(&out.stdout).into_owned());
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();
    // Requests before, during and after the replacement.
    let made = |n: usize| {
        let count = count.clone();
        move || {
            let c = count.load(std::sync::atomic::Ordering::Relaxed);
            if c >= n {
                Ok(String::new())
            } else {
                Err(format!("{c} requests"))
            }
        }
    };
    wait_for(60, "requests before the replacement", made(5));
    let out = p
        .paas(&["domains", "add", "--app", &app, &shop, "--cert", &cert2, "--key", &key2])
        .expect_ok()
        .stdout;
    assert!(out.contains("Replaced the certificate"), "{out}");
    wait_for(30, "the replacement certificate to be served", || {
        ok(curl(&p, Path::new(&own_ca2), &shop, "/", &[]))
    });
    let after = count.load(std::sync::atomic::Ordering::Relaxed) + 5;
    wait_for(60, "requests after the replacement", made(after));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let failed = seen.iter().filter(|s| *s != "200").count();
    assert!(seen.len() >= 10 && failed == 0, "{failed} of {} requests failed: {seen:?}", seen.len());

    let listed = p.paas(&["domains", "list", "--app", &app]).expect_ok().stdout;
    assert!(listed.contains(&local) && listed.contains(&shop) && listed.contains("uploaded"), "{listed}");
    let listed = p.paas(&["domains", "list", "--app", &app, "--output", "json"]).expect_ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // After a restart, everything is served again, certificates unchanged.
    p.restart();
    wait_for(60, "HTTPS after a restart", || {
        ok(curl(&p, &ca, &host, "/", &[]))?;
        ok(curl(&p, Path::new(&own_ca2), &shop, "/", &[]))
    });

    // Removed, a domain is neither routed nor has a certificate.
    p.paas(&["domains", "remove", "--app", &app, &shop]).expect_ok();
    p.paas(&["domains", "remove", "--app", &app, &shop]).expect_err("has no domain");
    wait_for(30, "the removed domain to be gone", || match curl(&p, Path::new(&own_ca2), &shop, "/", &[]) {
        r if r.code == 35 => Ok(String::new()),
        r => Err(format!("curl exit {} status {}", r.code, r.status)),
    });
    let listed = p.paas(&["domains", "list", "--app", &app]).expect_ok().stdout;
    assert!(!listed.contains(&shop) && listed.contains(&local), "{listed}");
}

#[test]
fn a_domain_gets_its_certificate_from_an_acme_server_through_the_ingress() {
    // Pebble checks the HTTP-01 challenge on the platform's plain-HTTP port: fix it first.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pebble = paas_tests::pebble::Pebble::start(port);
    let ingress = format!("127.0.0.1:{port}");
    let ca = pebble.ca_file();
    let mut p = Platform::start_with(&[
        "--http-addr",
        &ingress,
        "--acme-directory",
        &pebble.directory(),
        "--acme-email",
        "ops@example.com",
        "--acme-ca-file",
        ca.to_str().unwrap(),
    ]);
    let app = p.app_name("acme");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();

    let domain = format!("www.{app}.test");
    let out = p.paas(&["domains", "add", "--app", &app, &domain]).expect_ok().stdout;
    assert!(out.contains("ACME"), "{out}");
    // Until it comes, the local CA's certificate serves; then pebble's, which chains to
    // pebble's root.
    let root = pebble.issuing_root_file();
    wait_for(90, "the ACME certificate to be served", || {
        ok(curl(&p, &root, &domain, "/", &[])).map_err(|e| format!("{e}\n{}", pebble.log()))
    });
    let listed = p.paas(&["domains", "list", "--app", &app, "--output", "json"]).expect_ok().json();
    assert_eq!(listed[0]["tls"], "acme", "{listed}");
    assert_eq!(listed[0]["cert_source"], "acme", "{listed}");
    assert!(listed[0]["cert_error"].is_null(), "{listed}");
    // The challenge was answered by the ingress, and is no longer.
    assert!(
        pebble.log().contains(&format!("http://{domain}:{port}/.well-known/acme-challenge/")),
        "{}",
        pebble.log()
    );

    // A domain pebble cannot validate (its name resolves to an address where nothing
    // listens) keeps the local CA's certificate and says why.
    let stray = format!("stray.{app}.test");
    let dns = format!("http://127.0.0.1:{}/add-a", pebble.dns_management_port);
    let set = Command::new("curl")
        .args([
            "-sS",
            "-X",
            "POST",
            "-d",
            &format!("{{\"host\":\"{stray}\",\"addresses\":[\"127.0.0.2\"]}}"),
            &dns,
        ])
        .output()
        .unwrap();
    assert!(set.status.success());
    p.paas(&["domains", "add", "--app", &app, &stray]).expect_ok();
    let error = wait_for(90, "the failed ACME attempt to be recorded", || {
        let listed = p.paas(&["domains", "list", "--app", &app, "--output", "json"]).expect_ok().json();
        let d = listed.as_array().unwrap().iter().find(|d| d["domain"] == stray.as_str()).cloned().unwrap();
        d["cert_error"].as_str().map(str::to_string).ok_or_else(|| d.to_string())
    });
    assert!(!error.is_empty());
    let r = curl(&p, &p.ca_file.clone(), &stray, "/", &[]);
    assert_eq!(r.status, "200", "{}", r.body);
}

#[test]
fn envs_swap_moves_hostnames_and_domains_under_load_without_a_failed_request() {
    use paas_tests::load::Load;
    let mut p = Platform::start();
    let app = p.app_name("swap");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["envs", "create", "--app", &app, "staging"]).expect_ok();
    p.paas(&["config", "set", "--app", &app, "GREETING=blue"]).expect_ok();
    p.paas(&["config", "set", "--app", &app, "--env", "staging", "GREETING=green"]).expect_ok();
    let src = paas_tests::example_copy("hello");
    let dir = src.path().to_str().unwrap();
    p.paas(&["deploy", dir, "--app", &app]).expect_ok();
    p.paas(&["deploy", dir, "--app", &app, "--env", "staging"]).expect_ok();
    let domain = format!("www.{app}.test");
    p.paas(&["domains", "add", "--app", &app, &domain]).expect_ok();
    let (prod, staging) = (p.host(&app), format!("{app}-staging.localhost"));
    let greeting = |host: &str| {
        let body = p.get(host, "/").body;
        body.lines().next().unwrap_or("").to_string()
    };
    assert_eq!(
        (greeting(&prod), greeting(&staging), greeting(&domain)),
        ("blue".into(), "green".into(), "blue".into())
    );

    let loads = [Load::start(&p.ingress, &prod, 2), Load::start(&p.ingress, &staging, 2)];
    let out = p.paas(&["envs", "swap", "--app", &app, "production", "staging"]).expect_ok().stdout;
    assert!(out.contains(&format!("production now serves http://{staging}:")), "{out}");
    wait_for(30, "the hostnames to swap", || {
        let now = (greeting(&prod), greeting(&staging), greeting(&domain));
        if now == ("green".into(), "blue".into(), "green".into()) {
            Ok(String::new())
        } else {
            Err(format!("{now:?}"))
        }
    });
    let envs = p.paas(&["envs", "list", "--app", &app, "--output", "json"]).expect_ok().json();
    let url =
        |name: &str| envs.as_array().unwrap().iter().find(|e| e["name"] == name).unwrap()["url"].clone();
    assert!(url("production").as_str().unwrap().contains(&staging), "{envs}");
    let domains = p.paas(&["domains", "list", "--app", &app, "--output", "json"]).expect_ok().json();
    assert_eq!(domains[0]["env"], "staging", "{domains}");

    // And back.
    p.paas(&["envs", "swap", "--app", &app, "staging", "production"]).expect_ok();
    wait_for(30, "the hostnames to swap back", || {
        let now = (greeting(&prod), greeting(&staging), greeting(&domain));
        if now == ("blue".into(), "green".into(), "blue".into()) {
            Ok(String::new())
        } else {
            Err(format!("{now:?}"))
        }
    });
    for load in loads {
        let samples = load.finish();
        let failed: Vec<_> = samples.iter().filter(|s| s.status != 200).collect();
        assert!(
            samples.len() > 20 && failed.is_empty(),
            "{} of {} failed: {:?}",
            failed.len(),
            samples.len(),
            failed.first()
        );
    }
    p.paas(&["envs", "swap", "--app", &app, "staging", "staging"]).expect_err("two different environments");
    p.paas(&["envs", "swap", "--app", &app, "staging", "nope"]).expect_err("nope");

    // Deleting a swapped environment ends the swap: production serves its own name again.
    p.paas(&["envs", "swap", "--app", &app, "production", "staging"]).expect_ok();
    p.paas(&["envs", "delete", "--app", &app, "staging", "--confirm", "staging"]).expect_ok();
    wait_for(30, "production back on its own hostname", || {
        let g = greeting(&prod);
        if g == "blue" {
            Ok(g)
        } else {
            Err(g)
        }
    });
}

#[test]
fn the_api_is_served_over_https_with_api_tls_and_never_in_clear_off_loopback() {
    // Off loopback, plain HTTP is refused unless asked for.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(paas_tests::paas_bin())
        .args(["server", "--api-addr", "0.0.0.0:0", "--agent-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--api-tls") && err.contains("--insecure-http"), "{err}");

    let p = Platform::start_with(&["--api-tls", "--api-name", "paas.example.test"]);
    assert!(p.api_url.starts_with("https://"), "{}", p.api_url);
    // The CLI config `paas up` wrote trusts the local CA: the CLI just works.
    let listed = p.paas(&["apps", "list", "--output", "json"]).expect_ok().json();
    assert!(listed.is_array(), "{listed}");
    let port = p.api_url.rsplit_once(':').unwrap().1;
    let curl = |url: &str, extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert"])
            .arg(&p.ca_file)
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // The certificate names localhost, the address and --api-name.
    assert_eq!(curl(&format!("https://127.0.0.1:{port}/api/v1/apps"), &[]).1, "401");
    assert_eq!(curl(&format!("https://localhost:{port}/api/v1/apps"), &[]).1, "401");
    let named = format!("paas.example.test:{port}:127.0.0.1");
    assert_eq!(
        curl(&format!("https://paas.example.test:{port}/api/v1/apps"), &["--resolve", &named]).1,
        "401"
    );
    // Plain HTTP gets nothing.
    assert_ne!(curl(&format!("http://127.0.0.1:{port}/api/v1/apps"), &[]).1, "401");

    // `git push` over HTTPS, trusting the local CA; the server's hook reaches the API the same way.
    let mut p = p;
    let app = p.app_name("tlsgit");
    p.paas(&["apps", "create", &app]).expect_ok();
    let remote = p.paas(&["git-remote", "--app", &app]).expect_ok().stdout.trim().to_string();
    assert!(remote.starts_with("https://"), "{remote}");
    let authed = remote.replacen("https://", &format!("https://anyone:{}@", p.token()), 1);
    let repo = paas_tests::example_copy("hello");
    let dir = repo.path();
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first"],
    ] {
        paas_tests::git(dir, args).expect_ok();
    }
    let push = Command::new("git")
        .args(["push", &authed, "HEAD:main"])
        .current_dir(dir)
        .env("GIT_SSL_CAINFO", &p.ca_file)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&push.stderr);
    assert!(push.status.success() && stderr.contains("is live at"), "{stderr}");
}

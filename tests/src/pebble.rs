//! Let's Encrypt's ACME test server for end-to-end tests: Debian's `pebble`, resolving every name
//! through `pebble-challtestsrv` to 127.0.0.1, on free loopback ports with an HTTPS certificate
//! made here, both killed when dropped. Validation is real: pebble fetches HTTP-01 challenges from
//! the port the test gives it (see /work/notes/acme.md for how this pebble behaves).

use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::s3::listening;

/// How long each start attempt may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running pebble and its fake DNS server.
pub struct Pebble {
    pebble: Child,
    challtestsrv: Child,
    dir: tempfile::TempDir,
    /// Pebble's ACME port (HTTPS) on 127.0.0.1.
    pub port: u16,
    /// Pebble's management port (HTTPS): `/roots/0`, `/intermediates/0`.
    pub management_port: u16,
    /// challtestsrv's DNS port (TCP and UDP) on 127.0.0.1.
    pub dns_port: u16,
    /// challtestsrv's management port (plain HTTP), e.g. `POST /set-default-ipv4 {"ip":"…"}`.
    pub dns_management_port: u16,
    /// The port pebble dials for HTTP-01: `http://<domain>:<http_port>/.well-known/acme-challenge/…`.
    pub http_port: u16,
}

/// The ports of one start attempt.
struct Ports {
    acme: u16,
    management: u16,
    dns: u16,
    dns_management: u16,
    /// Pebble dials it only for TLS-ALPN-01, which the tests do not use; it must merely not be
    /// anybody's port.
    tls: u16,
}

impl Pebble {
    /// Starts pebble-challtestsrv (fake DNS answering every name with 127.0.0.1 and no AAAA; its
    /// other listeners off) and pebble, validating HTTP-01 challenges at
    /// `http://<domain>:<http_port>/` (so a test passes the platform's plain-HTTP ingress port).
    pub fn start(http_port: u16) -> Pebble {
        let dir = tempfile::tempdir().expect("temp dir");
        write_https_cert(dir.path());
        // Another process can take a port between our probe and the server's bind: retry with
        // new ports. A timeout is not retried: that is a broken setup, not bad luck.
        let mut failures = String::new();
        for attempt in 1..=3 {
            let ports = free_ports(http_port);
            match try_start(dir.path(), &ports, http_port) {
                Ok((pebble, challtestsrv)) => {
                    return Pebble {
                        pebble,
                        challtestsrv,
                        dir,
                        port: ports.acme,
                        management_port: ports.management,
                        dns_port: ports.dns,
                        dns_management_port: ports.dns_management,
                        http_port,
                    }
                }
                Err(e) => failures.push_str(&format!("attempt {attempt}: {e}\n")),
            }
        }
        panic!("pebble did not start:\n{failures}");
    }

    /// The ACME directory URL, `https://127.0.0.1:<port>/dir`.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// PEM file of the CA that signed pebble's own HTTPS certificate (what an ACME client must
    /// trust to talk to pebble).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// PEM of pebble's issuing root (from the management endpoint `/roots/0`), to verify
    /// certificates pebble issued. Pebble makes a new root at every start, so this is only valid
    /// for this instance.
    #[track_caller]
    pub fn issuing_root_pem(&self) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management_port);
        curl(&self.ca_file(), &url, &[])
            .unwrap_or_else(|e| panic!("fetching pebble's issuing root: {e}\n{}", self.log()))
    }

    /// Writes [`Self::issuing_root_pem`] to a file in the temp dir and returns its path (for
    /// `curl --cacert`).
    #[track_caller]
    pub fn issuing_root_file(&self) -> PathBuf {
        let path = self.dir.path().join("issuing-root.pem");
        std::fs::write(&path, self.issuing_root_pem()).expect("writing pebble's issuing root");
        path
    }

    /// The tails of pebble's and challtestsrv's logs, for failure messages (pebble logs every
    /// validation attempt with the URL it fetched and what went wrong).
    pub fn log(&self) -> String {
        logs(self.dir.path())
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.pebble.kill();
        let _ = self.pebble.wait();
        let _ = self.challtestsrv.kill();
        let _ = self.challtestsrv.wait();
    }
}

/// A CA and a leaf for `localhost` and 127.0.0.1 signed by it (`ca.pem`, `cert.pem`, `key.pem`).
/// Clients need a real CA: rustls/webpki does not accept a self-signed leaf as a root.
fn write_https_cert(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::default();
    // rcgen's default DN is the same for every certificate; a leaf with its CA's DN as subject
    // looks self-signed to verifiers.
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(rcgen::DnType::CommonName, "paas pebble test CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");

    let key = rcgen::KeyPair::generate().expect("leaf key");
    let mut leaf = rcgen::CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    leaf.subject_alt_names = vec![
        rcgen::SanType::DnsName("localhost".try_into().expect("a DNS name")),
        rcgen::SanType::IpAddress([127, 0, 0, 1].into()),
    ];
    leaf.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).expect("leaf certificate");

    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("writing ca.pem");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("writing cert.pem");
    // PKCS#8 (`BEGIN PRIVATE KEY`), which Go reads.
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("writing key.pem");
}

/// Five distinct free loopback ports, none of them `http_port`. Each probe is held until all are
/// chosen so the kernel cannot hand out the same port twice. The DNS port must be free for both
/// TCP and UDP: challtestsrv serves DNS on both.
fn free_ports(http_port: u16) -> Ports {
    let mut held = Vec::new();
    let mut tcp = || loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let port = l.local_addr().expect("local addr").port();
        held.push(l);
        if port != http_port {
            return port;
        }
    };
    let (acme, management, dns_management, tls) = (tcp(), tcp(), tcp(), tcp());
    let dns = loop {
        let port = tcp();
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
            drop(udp);
            break port;
        }
    };
    drop(held);
    Ports { acme, management, dns, dns_management, tls }
}

/// Starts challtestsrv, then pebble, and waits until both answer. `Err` when either one exits or
/// fails to bind, which calls for new ports; panics on a timeout or a missing binary.
fn try_start(dir: &Path, ports: &Ports, http_port: u16) -> Result<(Child, Child), String> {
    // An earlier attempt's pebble log would pass for this one's in failure messages.
    let _ = std::fs::remove_file(dir.join("pebble.log"));
    let dns = format!("127.0.0.1:{}", ports.dns);
    let dns_management = format!("127.0.0.1:{}", ports.dns_management);
    // The default AAAA answer is ::1, and pebble dials only the first address it resolves (AAAA
    // before A), so the v4-only ingress would never be reached: no AAAA at all. Every listener of
    // challtestsrv defaults to a fixed port on all interfaces (its HTTP-01 one to pebble's
    // default httpPort), so each is pinned to loopback or turned off.
    let (out, err) = log_file(dir, "challtestsrv.log");
    let mut challtestsrv = Command::new("pebble-challtestsrv")
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .args(["-dns01", &dns, "-management", &dns_management])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting pebble-challtestsrv ({e}): install it with `apt-get install -y pebble`")
        });
    let deadline = Instant::now() + START_TIMEOUT;
    // challtestsrv does not exit when a port is taken, it only logs it; and the port then
    // answers, but as somebody else. Its management API answering our request and a clean log
    // mean it is ours.
    let set_ipv6 = format!("http://{dns_management}/set-default-ipv6");
    loop {
        if let Err(e) = check_challtestsrv(dir, &mut challtestsrv) {
            return Err(stop(&mut [&mut challtestsrv], e, dir));
        }
        if listening(&dns)
            && listening(&dns_management)
            && curl(&dir.join("ca.pem"), &set_ipv6, &["-X", "POST", "-d", r#"{"ip":""}"#]).is_ok()
        {
            break;
        }
        if Instant::now() > deadline {
            stop(&mut [&mut challtestsrv], String::new(), dir);
            panic!("pebble-challtestsrv did not answer within {START_TIMEOUT:?}:\n{}", logs(dir));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{}", ports.acme),
        "managementListenAddress": format!("127.0.0.1:{}", ports.management),
        "certificate": dir.join("cert.pem"),
        "privateKey": dir.join("key.pem"),
        "httpPort": http_port,
        "tlsPort": ports.tls,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    let config_file = dir.join("pebble-config.json");
    std::fs::write(&config_file, config.to_string()).expect("writing pebble's config");
    let (out, err) = log_file(dir, "pebble.log");
    let mut pebble = Command::new("pebble")
        .arg("-config")
        .arg(&config_file)
        // Strict mode (also off by default) tests breaking changes real CAs have not made.
        .args(["-dnsserver", &dns, "-strict=false"])
        // No random 0-5 s sleep before each validation.
        .env("PEBBLE_VA_NOSLEEP", "1")
        // The default rejects 5% of good nonces, more than ACME clients' few retries absorb.
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        // The default reuses a valid authorization half the time: every order validates anew.
        .env("PEBBLE_AUTHZREUSE", "0")
        // Validation must really happen, with the default chain, whatever the caller's shell set.
        .env_remove("PEBBLE_VA_ALWAYS_VALID")
        .env_remove("PEBBLE_VA_SLEEPTIME")
        .env_remove("PEBBLE_CHAIN_LENGTH")
        .env_remove("PEBBLE_ALTERNATE_ROOTS")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting pebble ({e}): install it with `apt-get install -y pebble`"));
    // Pebble exits when a port is taken. Answering over TLS with our CA's certificate means the
    // port is really pebble's.
    let acme = format!("127.0.0.1:{}", ports.acme);
    let management = format!("127.0.0.1:{}", ports.management);
    let ca = dir.join("ca.pem");
    loop {
        let exited = match pebble.try_wait() {
            Ok(Some(status)) => Err(format!("pebble exited ({status})")),
            _ => check_challtestsrv(dir, &mut challtestsrv),
        };
        if let Err(e) = exited {
            return Err(stop(&mut [&mut pebble, &mut challtestsrv], e, dir));
        }
        if listening(&acme)
            && listening(&management)
            && curl(&ca, &format!("https://{acme}/dir"), &[]).is_ok()
            && curl(&ca, &format!("https://{management}/roots/0"), &[]).is_ok()
        {
            return Ok((pebble, challtestsrv));
        }
        if Instant::now() > deadline {
            stop(&mut [&mut pebble, &mut challtestsrv], String::new(), dir);
            panic!("pebble did not answer within {START_TIMEOUT:?}:\n{}", logs(dir));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `Err` when challtestsrv exited or logged that one of its ports was taken.
fn check_challtestsrv(dir: &Path, child: &mut Child) -> Result<(), String> {
    if let Ok(Some(status)) = child.try_wait() {
        return Err(format!("pebble-challtestsrv exited ({status})"));
    }
    let log = std::fs::read_to_string(dir.join("challtestsrv.log")).unwrap_or_default();
    if log.contains("address already in use") {
        return Err("a port of pebble-challtestsrv was taken".into());
    }
    Ok(())
}

/// Kills and reaps the children; returns `why` with the logs, for the retry's failure message.
fn stop(children: &mut [&mut Child], why: String, dir: &Path) -> String {
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    format!("{why}\n{}", logs(dir))
}

/// A fresh log file (each attempt starts it anew: earlier attempts' logs are in their failure
/// messages) as stdout and stderr of a process. Both share one open file, and with it one offset,
/// so neither stream overwrites the other's lines.
fn log_file(dir: &Path, name: &str) -> (File, File) {
    let file = File::create(dir.join(name)).expect("a log file");
    (file.try_clone().expect("a log file"), file)
}

fn logs(dir: &Path) -> String {
    format!(
        "--- pebble-challtestsrv ---\n{}\n--- pebble ---\n{}",
        tail(&dir.join("challtestsrv.log")),
        tail(&dir.join("pebble.log"))
    )
}

/// The last 40 lines of a file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A request with curl (which CI has), trusting `ca`: the body on a 2xx answer. This keeps the
/// harness blocking, like the rest of it, without a blocking HTTPS client.
fn curl(ca: &Path, url: &str, extra: &[&str]) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .expect("running curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("curl {url}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

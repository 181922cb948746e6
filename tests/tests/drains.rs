//! Log drains through the real binaries: a real rsyslog on loopback receives an app's lines
//! through a `syslog+tcp` drain (RFC 5424 header fields, each line once, in order), and an
//! HTTPS receiver with a certificate from a private CA (trusted with `--drain-ca-file`) gets
//! them as JSON-line batches; when the receiver is down and comes back it gets the backlog, and
//! when the backlog passes the bound the drain skips to its newest lines and counts the rest as
//! dropped in `paas drains list`.

use paas_tests::Platform;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The backlog bound the platform runs with: small, so an outage passes it.
const MAX_BACKLOG: u64 = 100;

use paas_tests::{free_port, wait_for};

/// rsyslogd in the foreground with its own config, work directory and pid file, writing what
/// it receives over TCP to a file, one line per message: `HOSTNAME APP-NAME PROCID SEVERITY MSG`.
struct Rsyslog {
    child: Child,
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let out = dir.path().join("received.log");
        let conf = dir.path().join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}")
module(load="imtcp")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="paas" type="string" string="%HOSTNAME% %APP-NAME% %PROCID% %syslogseverity% %msg%\n")
action(type="omfile" file="{out}" template="paas")
"#,
                work = work.display(),
                out = out.display()
            ),
        )
        .unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("rsyslogd.log")).unwrap()))
            .spawn()
            .expect("starting rsyslogd (apt-get install rsyslog)");
        wait_for(20, "rsyslogd to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        Self { child, port, out, _dir: dir }
    }

    /// What it received for `host`, split into header fields and message.
    fn received(&self, host: &str) -> Vec<[String; 5]> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut parts = l.splitn(5, ' ');
                let fields: [String; 5] = std::array::from_fn(|_| parts.next().unwrap_or("").to_string());
                (fields[0] == host).then_some(fields)
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request the HTTPS receiver got.
#[derive(Debug, Clone)]
struct Request {
    head: String,
    body: String,
}

/// A small HTTPS server answering 200 to every request and keeping them; stopped and started
/// again on the same port to play a drain's outage.
struct Receiver {
    rt: tokio::runtime::Runtime,
    port: u16,
    tls: tokio_rustls::TlsAcceptor,
    got: Arc<Mutex<Vec<Request>>>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Receiver {
    /// A receiver with a certificate for localhost from a fresh CA, whose certificate is written
    /// to `ca_file`.
    fn new(ca_file: &Path) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.distinguished_name.push(rcgen::DnType::CommonName, "paas drains test CA");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(ca_file, ca_cert.pem()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        Self {
            rt: tokio::runtime::Runtime::new().unwrap(),
            port: free_port(),
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            got: Arc::default(),
            tasks: Arc::default(),
        }
    }

    fn start(&self) {
        let listener = self.rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", self.port))).unwrap();
        let (tls, got, tasks) = (self.tls.clone(), self.got.clone(), self.tasks.clone());
        let accept = self.rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (tls, got) = (tls.clone(), got.clone());
                let conn = tokio::spawn(async move {
                    if let Ok(stream) = tls.accept(tcp).await {
                        let _ = serve(stream, got).await;
                    }
                });
                tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Closes the listener and every connection.
    fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        // The listener goes with its task: wait until the port refuses connections.
        wait_for(10, "the receiver to stop", || std::net::TcpStream::connect(("127.0.0.1", self.port)).err());
    }

    fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }

    /// Every JSON line received, in order.
    fn lines(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .flat_map(|r| r.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<Value>>())
            .collect()
    }
}

/// HTTP/1.1 keep-alive: requests with a Content-Length body, each answered 200.
async fn serve(
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    got: Arc<Mutex<Vec<Request>>>,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0usize);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await?;
        got.lock().unwrap().push(Request { head, body: String::from_utf8(body).unwrap() });
        stream.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await?;
        stream.get_mut().flush().await?;
    }
}

fn drains(p: &Platform, app: &str) -> Vec<Value> {
    p.paas(&["drains", "list", "--app", app, "-o", "json"]).expect_ok().json().as_array().unwrap().clone()
}

fn https_drain(p: &Platform, app: &str) -> Value {
    drains(p, app).into_iter().find(|d| d["url"].as_str().unwrap().starts_with("https://")).unwrap()
}

/// The numbers the app's `run` lines carry, in the order received.
fn numbers<'a>(texts: impl Iterator<Item = &'a str>) -> Vec<u64> {
    texts.filter_map(|t| t.trim().parse().ok()).collect()
}

#[test]
fn syslog_and_https_drains_get_each_line_once_in_order_and_a_backlog_after_an_outage() {
    let rsyslog = Rsyslog::start();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("drain-ca.pem");
    let receiver = Receiver::new(&ca_file);
    receiver.start();
    let bound = MAX_BACKLOG.to_string();
    let mut p = Platform::start_with(&[
        "--drain-ca-file",
        ca_file.to_str().unwrap(),
        "--drain-max-backlog",
        &bound,
        "--drain-allow-net",
        "127.0.0.0/8",
    ]);
    let app = p.app_name("drains");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();

    // Bad URLs are refused with a sentence, before anything is stored.
    p.paas(&["drains", "add", "--app", &app, "http://logs.example.com/x"]).expect_err("use https://");
    p.paas(&["drains", "add", "--app", &app, "syslog+tcp://127.0.0.1"]).expect_err("needs a port");
    p.paas(&["drains", "add", "--app", &app, "--env", "nope", "syslog+tcp://127.0.0.1:1"]).expect_err("nope");

    let syslog_url = format!("syslog+tcp://127.0.0.1:{}", rsyslog.port);
    p.paas(&["drains", "add", "--app", &app, &syslog_url]).expect_ok();
    p.paas(&["drains", "add", "--app", &app, &syslog_url]).expect_err("already has this drain");
    let https_url = format!("https://drain:hunter2@localhost:{}/ingest?token=s3cret", receiver.port);
    p.paas(&["drains", "add", "--app", &app, "--env", "production", &https_url]).expect_ok();
    // Credentials never show.
    let listed = p.paas(&["drains", "list", "--app", &app]).expect_ok().stdout;
    assert!(!listed.contains("hunter2") && !listed.contains("s3cret"), "{listed}");
    assert!(
        listed.contains(&format!("https://****@localhost:{}/ingest?token=****", receiver.port)),
        "{listed}"
    );

    // Lines written now reach both, each once and in order.
    p.paas(&["run", "--app", &app, "--", "seq", "1", "60"]).expect_ok();
    let host = format!("production.{app}");
    let run_lines = |got: &[[String; 5]]| -> Vec<[String; 5]> {
        got.iter().filter(|f| f[2].starts_with("run.")).cloned().collect()
    };
    let got = wait_for(60, "rsyslog to receive 60 lines", || {
        let got = run_lines(&rsyslog.received(&host));
        (got.len() >= 60).then_some(got)
    });
    assert_eq!(numbers(got.iter().map(|f| f[4].as_str())), (1..=60).collect::<Vec<_>>());
    // HOSTNAME env.app, APP-NAME the source, PROCID process.replica, stdout at severity 6.
    assert!(got.iter().all(|f| f[1] == "app" && f[3] == "6"), "{:?}", &got[..3]);
    let https_run =
        |r: &Receiver| -> Vec<Value> { r.lines().into_iter().filter(|l| l["process"] == "run").collect() };
    let lines = wait_for(60, "the HTTPS receiver to get 60 lines", || {
        let lines = https_run(&receiver);
        (lines.len() >= 60).then_some(lines)
    });
    assert_eq!(numbers(lines.iter().map(|l| l["text"].as_str().unwrap())), (1..=60).collect::<Vec<_>>());
    let first = &lines[0];
    assert_eq!((first["app"].as_str(), first["env"].as_str()), (Some(app.as_str()), Some("production")));
    assert_eq!((first["source"].as_str(), first["stream"].as_str()), (Some("app"), Some("stdout")));
    assert!(
        first["at"].is_string() && first["node"] == p.node.as_str() && first["release"].as_u64() == Some(1)
    );
    let request = &receiver.requests()[0];
    let head = request.head.to_ascii_lowercase();
    assert!(head.starts_with("post /ingest?token=s3cret "), "{}", request.head);
    assert!(head.contains("content-type: application/x-ndjson"), "{}", request.head);
    // drain:hunter2, as basic authentication.
    assert!(request.head.contains("ZHJhaW46aHVudGVyMg=="), "{}", request.head);
    let d = https_drain(&p, &app);
    assert_eq!((d["state"].as_str(), d["delivered"].as_u64().unwrap() >= 60), (Some("ok"), true), "{d}");

    // The receiver goes down: lines wait, the drain says it is failing, and they arrive once
    // it is back.
    receiver.stop();
    p.paas(&["run", "--app", &app, "--", "seq", "61", "90"]).expect_ok();
    let d = wait_for(60, "the HTTPS drain to fail", || {
        let d = https_drain(&p, &app);
        (d["state"] == "failing").then_some(d)
    });
    assert!(d["last_error"].as_str().unwrap().contains("connecting to localhost"), "{d}");
    assert!(!d["last_error"].as_str().unwrap().contains("hunter2"), "{d}");
    receiver.start();
    let lines = wait_for(90, "the backlog to arrive", || {
        let lines = https_run(&receiver);
        (numbers(lines.iter().map(|l| l["text"].as_str().unwrap())).last() == Some(&90)).then_some(lines)
    });
    assert_eq!(numbers(lines.iter().map(|l| l["text"].as_str().unwrap())), (1..=90).collect::<Vec<_>>());
    wait_for(30, "the HTTPS drain to be ok again", || (https_drain(&p, &app)["state"] == "ok").then_some(()));

    // Down again, with more lines than the bound: the drain skips to its newest ones and counts
    // the others as dropped.
    receiver.stop();
    p.paas(&["run", "--app", &app, "--", "seq", "1001", "1300"]).expect_ok();
    // The bound is applied at each retry, so a line that lands between two retries can stand
    // over it until the next one.
    wait_for(90, "the HTTPS drain to drop lines and keep its backlog within the bound", || {
        let d = https_drain(&p, &app);
        let dropped = d["dropped"].as_u64().unwrap() >= 300 - MAX_BACKLOG;
        (dropped && d["backlog"].as_u64().unwrap() <= MAX_BACKLOG).then_some(())
    });
    wait_for(30, "drains list to show the dropped count", || {
        let d = https_drain(&p, &app);
        let text = p.paas(&["drains", "list", "--app", &app]).expect_ok().stdout;
        (text.contains("DROPPED") && text.contains(&d["dropped"].to_string())).then_some(())
    });
    receiver.start();
    let lines = wait_for(90, "the newest lines to arrive", || {
        let lines = https_run(&receiver);
        (numbers(lines.iter().map(|l| l["text"].as_str().unwrap())).last() == Some(&1300)).then_some(lines)
    });
    let after: Vec<u64> =
        numbers(lines.iter().map(|l| l["text"].as_str().unwrap())).into_iter().skip(90).collect();
    assert!(!after.is_empty() && after.len() as u64 <= MAX_BACKLOG, "{after:?}");
    let from = *after.first().unwrap();
    assert_eq!(after, (from..=1300).collect::<Vec<_>>(), "the newest lines, in order, once");

    // The syslog drain was never down: it has every line, once, in order.
    // Generous: under a loaded CI run the forwarder shares two cores with six other tests.
    let got = wait_for(150, "rsyslog to receive every line", || {
        let got = run_lines(&rsyslog.received(&host));
        (got.len() >= 390).then_some(got)
    });
    let expected: Vec<u64> = (1..=90).chain(1001..=1300).collect();
    assert_eq!(numbers(got.iter().map(|f| f[4].as_str())), expected);
    assert_eq!(drains(&p, &app).iter().find(|d| d["url"] == syslog_url.as_str()).unwrap()["dropped"], 0);

    // Removing by id and by URL.
    let id = drains(&p, &app).iter().find(|d| d["url"] == syslog_url.as_str()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    p.paas(&["drains", "remove", "--app", &app, &id]).expect_ok();
    p.paas(&["drains", "remove", "--app", &app, &https_url]).expect_ok();
    p.paas(&["drains", "remove", "--app", &app, &id]).expect_err("no drain");
    assert!(drains(&p, &app).is_empty());
    let log = p.log();
    assert!(
        !log.contains("hunter2") && !log.contains("s3cret"),
        "the platform's log holds a drain's credentials"
    );
}

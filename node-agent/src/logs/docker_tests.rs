//! Central logs against the real Docker engine and a stand-in control plane: numbered lines of
//! a container arrive once each, in order, across a control plane that is down for a while and
//! a collector that is stopped and started again mid-stream; a job container's lines arrive
//! although it is removed right after it exits.

use super::*;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use protocol::logs::{LogAck, LogBatch, LogStream, ShippedLine};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::process::Command;
use std::time::Instant;

/// What the stand-in control plane stored: each `seq` once, `through` as the real one works it
/// out, and any `seq` that came twice with different contents (a number given twice).
#[derive(Default)]
struct Store {
    lines: BTreeMap<u64, ShippedLine>,
    through: u64,
    reused: Vec<u64>,
    dropped: u64,
    down: bool,
}

impl Store {
    fn take(&mut self, batch: LogBatch) -> u64 {
        for line in batch.lines {
            match self.lines.get(&line.seq) {
                Some(had) if *had != line => self.reused.push(line.seq),
                Some(_) => {}
                None => {
                    self.lines.insert(line.seq, line);
                }
            }
        }
        self.dropped += batch.dropped.iter().map(|d| d.lines).sum::<u64>();
        self.through = self.through.max(batch.forgotten_through);
        while self.lines.contains_key(&(self.through + 1)) {
            self.through += 1;
        }
        self.through
    }

    fn texts(&self, process: &str, stream: LogStream) -> Vec<String> {
        let mine = self.lines.values().filter(|l| l.process == process && l.stream == stream);
        mine.map(|l| l.text.clone()).collect()
    }
}

async fn control_plane(store: Arc<Mutex<Store>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let store = store.clone();
                    async move {
                        assert!(req.uri().path().ends_with("/logs"), "{}", req.uri());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let batch: LogBatch = serde_json::from_slice(&body).unwrap();
                        let mut store = store.lock().unwrap();
                        let (status, answer) = if store.down {
                            (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"down"}"#.to_string())
                        } else {
                            let through = store.take(batch);
                            (StatusCode::OK, serde_json::to_string(&LogAck { through }).unwrap())
                        };
                        let mut resp = Response::new(Full::new(Bytes::from(answer)));
                        *resp.status_mut() = status;
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    format!("http://{addr}")
}

/// Containers of this test, removed however it ends.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("running docker");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn run_container(node: &str, name: &str, labels: &[(&str, &str)], script: &str) {
    let mut args = vec!["run", "-d", "--name", name, "--log-driver", "json-file"];
    let mut all = vec![
        format!("{}=true", protocol::labels::MANAGED),
        format!("{}={node}", protocol::labels::NODE),
        format!("{}=logapp", protocol::labels::APP),
        format!("{}=production", protocol::labels::ENV),
        format!("{}=3", protocol::labels::RELEASE),
    ];
    all.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
    for label in &all {
        args.extend(["--label", label]);
    }
    args.extend(["debian:bookworm-slim", "sh", "-c", script]);
    docker(&args);
}

async fn start(dir: &Path, node: &str, server: &str) -> (LogHandle, tokio::task::JoinHandle<()>) {
    let docker = DockerClient::connect(node, "127.0.0.1").await.unwrap();
    let client = Client::new(server, "");
    let settings = Settings { spool_bytes: 8 << 20 };
    let (collector, handle) = Collector::new(&settings, dir, node, docker, client).unwrap();
    (handle, tokio::spawn(collector.run(CancellationToken::new())))
}

async fn wait_for(store: &Mutex<Store>, what: &str, done: impl Fn(&Store) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&store.lock().unwrap()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_and_job_lines_arrive_once_each_across_an_outage_and_a_restart() {
    let suffix = format!("{}-{}", std::process::id(), rand_suffix());
    let node = format!("logtest-{suffix}");
    let (web, job) = (format!("paas-logtest-web-{suffix}"), format!("paas-logtest-job-{suffix}"));
    let _cleanup = Containers(vec![web.clone(), job.clone()]);
    let store = Arc::new(Mutex::new(Store { down: true, ..Default::default() }));
    let server = control_plane(store.clone()).await;
    let dir = tempfile::tempdir().unwrap();

    const LINES: usize = 1500;
    // A 40 KiB line first (Docker splits it into 16 KiB entries), then numbered lines over a few
    // seconds, every tenth with one on stderr.
    let script = format!(
        "head -c 40000 /dev/zero | tr '\\0' y; echo; i=0; while [ $i -lt {LINES} ]; do i=$((i+1)); echo \"out $i\"; \
         [ $((i % 10)) = 0 ] && echo \"err $i\" >&2; sleep 0.002; done; sleep 600"
    );
    let web_labels = [(protocol::labels::PROCESS, "web"), (protocol::labels::REPLICA, "2")];
    run_container(&node, &web, &web_labels, &script);

    // The control plane is down at first; the collector is stopped mid-stream and started again.
    // Lines are masked of the container's config values, and read once its config is known.
    let config = std::collections::BTreeMap::from([("SECRET".to_string(), "s3cr3t-value".to_string())]);
    let (first_handle, first) = start(dir.path(), &node, &server).await;
    first_handle.config(&web, &config);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store.lock().unwrap().down = false;
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.abort();
    let _ = first.await;
    let taken_before_restart = store.lock().unwrap().lines.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (handle, _second) = start(dir.path(), &node, &server).await;
    handle.config(&web, &config);

    let last = format!("out {LINES}");
    wait_for(&store, "the web container's lines", |s| s.texts("web", LogStream::Stdout).contains(&last))
        .await;
    check_web(&store.lock().unwrap(), taken_before_restart, LINES);

    // A job: started, exited and removed within moments; its output is read before it goes.
    let job_labels = [(protocol::labels::PROCESS, "run"), (crate::docker::LABEL_JOB, "logtest-job")];
    handle.config(&job, &config);
    run_container(
        &node,
        &job,
        &job_labels,
        "echo key s3cr3t-value; for i in $(seq 1 50); do echo \"job $i\"; done",
    );
    handle.started();
    docker(&["wait", &job]);
    handle.drained(&job).await;
    docker(&["rm", "-f", &job]);
    wait_for(&store, "the job's lines", |s| s.texts("run", LogStream::Stdout).len() >= 51).await;
    let s = store.lock().unwrap();
    let run = s.texts("run", LogStream::Stdout);
    assert_eq!(run.first().map(String::as_str), Some("key ****"), "config values are masked: {run:?}");
    assert!(!run.iter().any(|t| t.contains("s3cr3t")));
    let expected: Vec<String> = (1..=50).map(|i| format!("job {i}")).collect();
    assert_eq!(run[1..], expected[..]);
    assert!(s.reused.is_empty(), "seqs given twice: {:?}", s.reused);
}

/// The web container's lines: the cut long line, then every numbered line once, in order.
fn check_web(s: &Store, taken_before_restart: usize, lines: usize) {
    assert!(s.reused.is_empty(), "seqs given twice: {:?}", s.reused);
    assert!(
        taken_before_restart > 0 && taken_before_restart < lines,
        "{taken_before_restart} lines before restart"
    );
    let out = s.texts("web", LogStream::Stdout);
    let expected: Vec<String> =
        std::iter::once(format!("{}{}", "y".repeat(tail::MAX_LINE_BYTES), crate::lines::CUT_MARKER))
            .chain((1..=lines).map(|i| format!("out {i}")))
            .collect();
    assert_eq!(out.len(), expected.len());
    assert!(out == expected, "stdout lines are missing, repeated or out of order");
    let err: Vec<String> = (1..=lines / 10).map(|i| format!("err {}", i * 10)).collect();
    assert_eq!(s.texts("web", LogStream::Stderr), err);
    let first_line = s.lines.values().next().unwrap();
    assert_eq!((first_line.app.as_str(), first_line.env.as_str()), ("logapp", "production"));
    assert_eq!((first_line.release, first_line.replica), (3, 2));
    assert!(first_line.at.ends_with('Z') && first_line.at.len() == 30, "{}", first_line.at);
    // Numbered from 1 without gaps; nothing was dropped.
    let seqs: Vec<u64> = s.lines.keys().copied().collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(s.through, seqs.len() as u64);
    assert_eq!(s.dropped, 0);
}

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{nanos:08x}")
}

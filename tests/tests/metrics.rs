//! Metrics through the real binaries: an app under load shows a non-zero request rate and CPU
//! in `paas metrics`, the nodes show their CPU, memory and disks, and a real Prometheus (from
//! Debian) scrapes `/metrics` with the scrape token and counts exactly the requests sent.

use paas_tests::Platform;
use serde_json::Value;
use std::process::{Child, Command, Stdio};

use paas_tests::{free_port, wait_for};

/// The newest value of the first series named `metric` in a `paas metrics -o json` view.
fn current(view: &Value, metric: &str) -> Option<f64> {
    view["series"].as_array()?.iter().find(|s| s["metric"] == metric)?["points"].as_array()?.last()?[1]
        .as_f64()
}

/// The largest value any point of series `metric` had.
fn peak(view: &Value, metric: &str) -> f64 {
    let series = view["series"].as_array().cloned().unwrap_or_default();
    series
        .iter()
        .filter(|s| s["metric"] == metric)
        .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p[1].as_f64())
        .fold(0.0, f64::max)
}

/// Prometheus from Debian with one scrape job: the platform's `/metrics` every second.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str, token: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: paas\n    metrics_path: /metrics\n    authorization:\n      credentials: {token}\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("prometheus.log")).unwrap()))
            .spawn()
            .expect("starting prometheus (apt-get install prometheus)");
        wait_for(60, "prometheus to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        Self { child, port, _dir: dir }
    }

    /// The value of an instant PromQL query with one result.
    fn query(&self, promql: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let out = Command::new("curl")
            .args(["-sf", "-G", &url, "--data-urlencode", &format!("query={promql}")])
            .output()
            .ok()?;
        let body: Value = serde_json::from_slice(&out.stdout).ok()?;
        body["data"]["result"].as_array()?.first()?["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_loaded_app_shows_requests_and_cpu_and_prometheus_counts_its_requests() {
    let mut p = Platform::start();
    let app = p.app_name("metrics");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let host = p.host(&app);

    // A known number of requests through the ingress, spread over a few seconds.
    let sent = 240;
    paas_tests::parallel(sent, 4, |_| assert_eq!(p.get(&host, "/").status, 200));

    let view = wait_for(60, "a request rate and container CPU in paas metrics", || {
        let view = p.paas(&["metrics", "--app", &app, "--since", "10m", "-o", "json"]).expect_ok().json();
        (peak(&view, "http_requests_per_second") > 0.0 && peak(&view, "container_cpu_percent") > 0.0)
            .then_some(view)
    });
    assert!(current(&view, "container_memory_bytes").is_some_and(|m| m > 1e6), "{view:#}");
    let web =
        view["series"].as_array().unwrap().iter().find(|s| s["metric"] == "container_cpu_percent").unwrap();
    assert_eq!((&web["labels"]["process"], &web["labels"]["replica"]), (&"web".into(), &"1".into()), "{web}");
    // At a terminal or in a pipe, the same as a table with sparklines.
    let text = p.paas(&["metrics", "--app", &app]).expect_ok().stdout;
    assert!(
        text.contains("http_requests_per_second") && text.contains("container_cpu_percent web.1"),
        "{text}"
    );
    assert!(text.contains('▁') || text.contains('█'), "{text}");

    // The nodes: CPU, memory and the disks holding Docker's data and the agent's state.
    let nodes = wait_for(30, "node CPU", || {
        let v = p.paas(&["metrics", "--nodes", "-o", "json"]).expect_ok().json();
        current(&v, "node_cpu_percent").map(|_| v)
    });
    assert!(current(&nodes, "node_memory_percent").is_some_and(|m| m > 0.0 && m < 100.0), "{nodes:#}");
    assert!(current(&nodes, "node_disk_percent").is_some_and(|d| d > 0.0), "{nodes:#}");

    // /metrics: refused without a token and for someone who is not a platform admin.
    let api = p.api_addr().to_string();
    let anonymous = paas_tests::http::get(&api, "localhost", "/metrics");
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    let wrong = paas_tests::http::request(
        &api,
        "GET",
        "localhost",
        "/metrics",
        &[("Authorization", "Bearer nope")],
        "",
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let token = p.paas(&["metrics", "--scrape-token"]).expect_ok().stdout.trim().to_string();
    let auth = format!("Bearer {token}");
    let text =
        paas_tests::http::request(&api, "GET", "localhost", "/metrics", &[("Authorization", &auth)], "");
    assert_eq!(text.status, 200, "{}", text.body);
    assert!(text.body.contains("# TYPE paas_http_requests_total counter"), "{}", text.body);

    // A real Prometheus scrapes it and counts every request sent, no more.
    let prometheus = Prometheus::start(&api, &token);
    let query = format!("sum(paas_http_requests_total{{app=\"{app}\"}})");
    let counted = wait_for(90, "Prometheus to count the requests", || {
        prometheus.query(&query).filter(|n| *n >= sent as f64)
    });
    assert_eq!(counted, sent as f64);
    let ok = format!("sum(paas_http_requests_total{{app=\"{app}\",code=\"2xx\"}})");
    assert_eq!(prometheus.query(&ok), Some(sent as f64));
}

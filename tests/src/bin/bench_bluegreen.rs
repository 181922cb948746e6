//! Benchmark: the blue/green deploy timeline of an already-built image, stage by stage (created,
//! image ready, containers started, first healthy, switched, old release drained), next to a
//! plain `docker run` + first response of the same image; then failed requests during many
//! consecutive deploys under a fixed request rate.
//!
//! Run: `cargo run -p paas-tests --bin bench-bluegreen -- [TIMELINE_RUNS] [DEPLOYS] [RATE]`
//! (defaults 5, 100, 200).

use paas_tests::load::Load;
use paas_tests::{docker, http, Platform};
use std::time::{Duration, Instant};

const MANIFEST: &str = r#"
[processes.web]
healthcheck = { path = "/healthz", interval = "1s" }
[deploy]
stability_window = "0s"
drain_timeout = "10s"
"#;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn parse_time(s: &str) -> f64 {
    // RFC 3339 UTC with fractional seconds: seconds since midnight are enough for differences.
    let t = s.split('T').nth(1).unwrap_or("0:0:0").trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next().unwrap_or("0").parse().unwrap_or(0.0);
    let m: f64 = parts.next().unwrap_or("0").parse().unwrap_or(0.0);
    let sec: f64 = parts.next().unwrap_or("0").parse().unwrap_or(0.0);
    h * 3600.0 + m * 60.0 + sec
}

fn token(p: &Platform) -> String {
    let cfg = std::fs::read_to_string(p.dir.path().join("config/paas/config.toml")).unwrap();
    cfg.lines().find_map(|l| l.strip_prefix("token = ")).unwrap().trim_matches('"').to_string()
}

/// Seconds from the release's creation to each stage event whose text starts with a prefix.
fn stages(p: &Platform, app: &str, version: u64, prefixes: &[&str]) -> Vec<f64> {
    let api = p.api_url.trim_start_matches("http://");
    let auth = format!("Bearer {}", token(p));
    let path = format!("/api/v1/apps/{app}/envs/production/releases/{version}/events?after=0");
    let r = http::request(api, "GET", "localhost", &path, &[("Authorization", &auth)], "");
    let page: serde_json::Value = serde_json::from_str(&r.body).expect("events JSON");
    let events = page["events"].as_array().unwrap();
    let t0 = parse_time(events[0]["at"].as_str().unwrap());
    prefixes
        .iter()
        .map(|pre| {
            let e = events.iter().find(|e| e["text"].as_str().unwrap().starts_with(pre)).expect(pre);
            parse_time(e["at"].as_str().unwrap()) - t0
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<f64>().ok());
    let runs = args.next().flatten().unwrap_or(5.0) as usize;
    let deploys = args.next().flatten().unwrap_or(100.0) as usize;
    let rate = args.next().flatten().unwrap_or(200.0);

    let mut p = Platform::start();
    let app = p.app_name("bench");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), MANIFEST).unwrap();
    let dir = src.path().to_str().unwrap().to_string();
    p.paas(&["deploy", &dir, "--app", &app]).expect_ok();
    let image = format!("paas/{app}--production:v1");

    let names = ["image ready", "replicas placed", "all healthy", "switched", "CLI returned", "old drained"];
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut docker_runs = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = p.paas(&["deploy", &dir, "--app", &app, "--image", &image, "-o", "json"]).expect_ok();
        let total = t.elapsed().as_secs_f64();
        let v = out.json()["version"].as_u64().unwrap();
        let s = stages(&p, &app, v, &["Image", "Starting", "Switching", "v"]);
        let old = format!("paas-{app}--production--web-{}-1", v - 1);
        while !docker(&["ps", "-aq", "--filter", &format!("name=^{old}$")]).trim().is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let drained = t.elapsed().as_secs_f64();
        for (i, x) in [s[0], s[1], s[2], s[3], total, drained].into_iter().enumerate() {
            cols[i].push(x);
        }

        let name = format!("paas-bench-{}", paas_tests::rand_suffix());
        let t = Instant::now();
        docker(&["run", "-d", "--name", &name, "-e", "PORT=8080", "-p", "127.0.0.1::8080", &image]);
        let addr = docker(&["port", &name, "8080/tcp"]).lines().next().unwrap_or_default().trim().to_string();
        while http::get(&addr, "localhost", "/").status != 200 {
            std::thread::sleep(Duration::from_millis(5));
        }
        docker_runs.push(t.elapsed().as_secs_f64());
        docker(&["rm", "-f", &name]);
    }
    println!("Deploy timeline of a built image, median of {runs} (seconds since the release was created):");
    for (name, col) in names.iter().zip(cols) {
        println!("  {name:<20} {:.3}", median(col));
    }
    let d = median(docker_runs);
    println!("  docker run to first 200: {d:.3}");

    let load = Load::start_paced(&p.ingress, &p.host(&app), 4, Some(rate));
    let began = Instant::now();
    for _ in 0..deploys {
        p.paas(&["deploy", &dir, "--app", &app, "--image", &image]).expect_ok();
    }
    let samples = load.finish();
    let failed = samples.iter().filter(|s| s.status != 200).count();
    println!(
        "{deploys} consecutive deploys in {:.0}s under {rate:.0} req/s: {} requests, {failed} failed",
        began.elapsed().as_secs_f64(),
        samples.len()
    );
}

//! Benchmark: the cost of metrics with N containers on a node (default 50), next to `docker
//! stats --no-stream` sampling the same containers in the same run. Paas samples every 10 s
//! (node, every container's cgroup, the ingress, the report) and stores each sample's series;
//! its figure is the whole `paas up` process's CPU per 10 s (control plane, agent and ingress
//! together, so it includes everything else the platform does while idle), against the CPU
//! one `docker stats --no-stream` takes (the client's and dockerd's). Also: the metrics store's
//! size per series, and per series per day.
//!
//! Run: `cargo run --release -p paas-tests --bin bench-metrics -- [N]`.

use paas_tests::{cpu_secs, Platform};
use std::process::Command;
use std::time::{Duration, Instant};

fn pid_of(name: &str) -> u32 {
    let out = Command::new("pidof").arg(name).output().expect("pidof");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("dockerd runs")
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(50);
    let mut p = Platform::start();
    let app = p.app_name("bmet");
    p.paas(&["apps", "create", &app]).expect_ok();
    // The hello example: its health check is a TCP connect, so the platform's own idle work
    // stays small next to what is measured.
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), "[deploy]\nstability_window = \"0s\"\n").unwrap();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    p.paas(&["scale", "--app", &app, &format!("web={n}")]).expect_ok();
    let ids = loop {
        let ids = p.containers(&app);
        if ids.len() >= n {
            break ids;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    // Let a few samples in first (the first has no CPU rates).
    std::thread::sleep(Duration::from_secs(25));

    let (pid, dockerd) = (p.pid(), pid_of("dockerd"));
    let window = Duration::from_secs(60);
    let (c0, t0) = (cpu_secs(pid), Instant::now());
    std::thread::sleep(window);
    let paas_per_sample = (cpu_secs(pid) - c0) / (t0.elapsed().as_secs_f64() / 10.0);

    let rounds = 5;
    let (mut client, mut daemon, mut wall) = (0.0, 0.0, 0.0);
    for _ in 0..rounds {
        let d0 = cpu_secs(dockerd);
        let t = Instant::now();
        let out = Command::new("bash")
            .args([
                "-c",
                &format!("TIMEFORMAT='%U %S'; time docker stats --no-stream {} >/dev/null", ids.join(" ")),
            ])
            .output()
            .unwrap();
        wall += t.elapsed().as_secs_f64();
        daemon += cpu_secs(dockerd) - d0;
        let times = String::from_utf8_lossy(&out.stderr);
        client += times.split_whitespace().filter_map(|f| f.parse::<f64>().ok()).sum::<f64>();
    }
    let docker_per_sample = (client + daemon) / f64::from(rounds);

    let metrics = p.data_dir().join("metrics");
    let series: serde_json::Value =
        serde_json::from_slice(&std::fs::read(metrics.join("series.json")).unwrap()).unwrap();
    let count = series["series"].as_array().map_or(0, Vec::len);
    let bytes = dir_bytes(&metrics);
    println!("{n} containers on one node:");
    println!("  paas up, whole process, per 10 s sample: {:.1} ms CPU", paas_per_sample * 1000.0);
    println!(
        "  docker stats --no-stream, per sample:    {:.1} ms CPU (client {:.1}, dockerd {:.1}), {:.2} s wall",
        docker_per_sample * 1000.0,
        client / f64::from(rounds) * 1000.0,
        daemon / f64::from(rounds) * 1000.0,
        wall / f64::from(rounds)
    );
    println!("  ratio paas/docker stats: {:.2}", paas_per_sample / docker_per_sample);
    println!("  paas up RSS: {} MiB", rss_mib(pid));
    println!(
        "  metrics store: {count} series, {:.1} MiB, {:.1} KB a series (a day of 10 s points is {:.1} KB)",
        bytes as f64 / 1048576.0,
        bytes as f64 / count.max(1) as f64 / 1000.0,
        86400.0 / 10.0 * 4.0 / 1000.0
    );
    p.paas(&["apps", "delete", &app, "--confirm", &app]).expect_ok();
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    kib / 1024
}

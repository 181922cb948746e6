//! Benchmark: time from `paas deploy --image` of an already-built image to the first successful
//! response through the ingress, next to a plain `docker run` of the same image to its first
//! successful response, measured alternately in the same run. Prints medians and the ratio.
//!
//! Run: `cargo run --release -p paas-tests --bin bench-deploy -- [RUNS]` (default 5).

use paas_tests::{docker, http, Platform};
use std::time::{Duration, Instant};

fn wait_200(mut get: impl FnMut() -> http::Response) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while get().status != 200 {
        assert!(Instant::now() < deadline, "no 200 within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let mut p = Platform::start();
    let base = p.app_name("bench");
    p.paas(&["apps", "create", &base]).expect_ok();
    let src = paas_tests::example_copy("hello");
    // The mechanics only: no stability window (the default 3 s would dominate the figure).
    std::fs::write(src.path().join("paas.toml"), "[deploy]\nstability_window = \"0s\"\n").unwrap();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &base]).expect_ok();
    let image = format!("paas/{base}--production:v1");

    let (mut via_paas, mut via_docker) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let app = p.app_name("b");
        p.paas(&["apps", "create", &app]).expect_ok();
        let t = Instant::now();
        p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app, "--image", &image]).expect_ok();
        wait_200(|| p.get(&p.host(&app), "/"));
        via_paas.push(t.elapsed());
        p.paas(&["apps", "delete", &app, "--confirm", &app]).expect_ok();

        let name = format!("paas-bench-{}-{i}", paas_tests::rand_suffix());
        let t = Instant::now();
        docker(&["run", "-d", "--name", &name, "-e", "PORT=8080", "-p", "127.0.0.1::8080", &image]);
        let addr = docker(&["port", &name, "8080/tcp"]).lines().next().unwrap_or_default().trim().to_string();
        wait_200(|| http::get(&addr, "localhost", "/"));
        via_docker.push(t.elapsed());
        docker(&["rm", "-f", &name]);
        eprintln!("run {}: paas {:?}, docker run {:?}", i + 1, via_paas[i], via_docker[i]);
    }
    let (mp, md) = (median(via_paas), median(via_docker));
    println!("deploy of a built image to first 200, median of {runs}:");
    println!("  paas deploy --image (through the ingress): {:.0} ms", mp.as_secs_f64() * 1000.0);
    println!("  docker run (direct port):                 {:.0} ms", md.as_secs_f64() * 1000.0);
    println!("  ratio paas/docker: {:.2}", mp.as_secs_f64() / md.as_secs_f64());
}

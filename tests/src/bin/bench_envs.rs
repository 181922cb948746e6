//! Benchmark: many environments on one node. Creates N environments (one replica each of the
//! built hello image, `paas deploy --image`), waits until each serves through the ingress, then
//! measures the platform's idle cost: CPU of the `paas up` process (control plane, agent and
//! ingress in one) over 30 s from /proc, and its resident memory. Deletes everything after.
//!
//! Run: `cargo run --release -p paas-tests --bin bench-envs -- [N]` (default 300).

use paas_tests::{docker, Platform};
use std::time::{Duration, Instant};

const IDLE: Duration = Duration::from_secs(30);

/// User + system CPU time of `pid`, in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/PID/stat");
    // The command name may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    rest.split_whitespace().skip(11).take(2).map(|f| f.parse::<u64>().expect("a tick count")).sum()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a VmRSS figure")
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    // The default pool, as a real installation has it.
    let mut p = Platform::start_with(&["--network-pool", "10.123.0.0/16"]);
    let app = p.app_name("benv");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), "[deploy]\nstability_window = \"0s\"\n").unwrap();
    let dir = src.path().to_str().unwrap();
    p.paas(&["deploy", dir, "--app", &app]).expect_ok();
    let image = format!("paas/{app}--production:v1");

    let t = Instant::now();
    let env = |i: usize| format!("e{i:03}");
    paas_tests::parallel(n, 4, |i| {
        p.paas(&["envs", "create", "--app", &app, &env(i)]).expect_ok();
        p.paas(&["deploy", dir, "--app", &app, "--env", &env(i), "--image", &image]).expect_ok();
        if i % 25 == 0 {
            eprintln!("{i} environments deployed after {:.0} s", t.elapsed().as_secs_f64());
        }
    });
    for i in 1..=n {
        p.wait_for_body(&format!("{app}-{}.localhost", env(i)), "Hello from paas!", Duration::from_secs(120));
    }
    let deployed = t.elapsed();
    let networks =
        docker(&["network", "ls", "-q", "--filter", &format!("label=paas.app={app}")]).lines().count();

    // Let the last reports and probes settle, then measure.
    std::thread::sleep(Duration::from_secs(10));
    let pid = p.pid();
    let ticks_per_s: u64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100);
    let (before, at) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(IDLE);
    let cpu = (cpu_ticks(pid) - before) as f64 / ticks_per_s as f64 / at.elapsed().as_secs_f64();
    let rss = rss_kib(pid);

    println!("{n} environments (+ production), one replica each, {networks} networks");
    println!("  created and deployed (4 at a time) in {:.0} s", deployed.as_secs_f64());
    println!("  idle CPU of paas up over {} s: {:.1}% of a core", IDLE.as_secs(), cpu * 100.0);
    println!("  resident memory of paas up: {:.0} MB", rss as f64 / 1024.0);

    let t = Instant::now();
    p.paas(&["apps", "delete", &app, "--confirm", &app]).expect_ok();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !docker(&["network", "ls", "-q", "--filter", &format!("label=paas.app={app}")]).trim().is_empty() {
        assert!(Instant::now() < deadline, "networks left 5 minutes after the app was deleted");
        std::thread::sleep(Duration::from_secs(1));
    }
    println!("  deleted, every container and network gone, in {:.0} s", t.elapsed().as_secs_f64());
}

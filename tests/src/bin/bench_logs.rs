//! Benchmark: central logs' throughput and search. Per round, a container writes LINES numbered
//! lines as fast as it can; the time from its first line to its last one being searchable with
//! `paas logs --grep` is set next to the time `docker logs -f` of the same container, started
//! before, takes to write the same last line into a file (ratio: docker's time / paas's, so at
//! least 1.0 means paas keeps up). The platform's CPU time and peak memory are read from /proc.
//! After the rounds (a million lines or more stored) it times searches through the API.
//!
//! Run: `cargo run -p paas-tests --bin bench-logs -- [ROUNDS] [LINES]` (default 4 × 300000).

use paas_tests::{cpu_secs, docker, Platform};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Peak resident memory of the process, in MiB.
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn wait(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what} did not happen within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn store_time(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).expect("a time")
}

fn percentile(mut v: Vec<f64>, p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let lines: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(300_000);
    let mut p = Platform::start_with(&["--log-max-mib", "4096"]);
    let app = p.app_name("blogs");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    // Waits for a go from the benchmark, then writes as fast as `seq` and `sed` can.
    let script = format!(
        "while [ ! -e /tmp/go ]; do sleep 0.05; done; seq 1 {lines} | sed \"s/^/bench line $ROUND /\"; echo \"needle-$ROUND done\""
    );
    let command = serde_json::to_string(&format!("( {script} ) & exec python3 /app/app.py")).unwrap();
    let manifest = format!("[processes.web]\ncommand = [\"sh\", \"-c\", {command}]\nport = 8080\n\n[deploy]\nstability_window = \"0s\"\n");
    std::fs::write(src.path().join("paas.toml"), manifest).unwrap();
    p.paas(&["config", "set", "--app", &app, "ROUND=0"]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let pid = p.pid();

    let (mut paas_rates, mut docker_rates) = (Vec::new(), Vec::new());
    let (cpu0, t0) = (cpu_secs(pid), Instant::now());
    for round in 1..=rounds {
        if round > 1 {
            p.paas(&["config", "set", "--app", &app, &format!("ROUND={}", round - 1)]).expect_ok();
        }
        let env_round = round - 1;
        let of_round = |p: &Platform| {
            let round = env_round.to_string();
            p.containers(&app)
                .into_iter()
                .find(|id| docker(&["exec", id, "printenv", "ROUND"]).trim() == round)
        };
        wait("the round's container", Duration::from_secs(60), || of_round(&p).is_some());
        let id = of_round(&p).expect("found above");
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut follower = Command::new("docker")
            .args(["logs", "-f", &id])
            .stdout(file.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let needle = format!("needle-{env_round} done");
        // The search looks at the round's lines only (`--since` its start), as a user searching
        // recent output would: a search of the whole history for text not there yet reads every
        // stored line each time (about 30 ms a poll at 1.5 million), which the benchmark's own
        // polling would then charge to the platform.
        let since = store_time(time::OffsetDateTime::now_utc() - time::Duration::seconds(1));
        let started = Instant::now();
        docker(&["exec", &id, "touch", "/tmp/go"]);
        // Wall-clock time, to line up with what else is watched (the agent's spool, say).
        eprintln!("round {round}: go at {}", time::OffsetDateTime::now_utc());
        let mut docker_done = None;
        let paas_done = wait("the last line searchable in paas logs", Duration::from_secs(900), || {
            if docker_done.is_none() {
                let text = std::fs::read(file.path()).unwrap_or_default();
                if text.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    docker_done = Some(Instant::now());
                }
            }
            let out = p.paas(&["logs", "--app", &app, "--since", &since, "--grep", &needle, "-n", "1"]);
            out.stdout.contains(&needle)
        });
        let docker_done = docker_done.unwrap_or_else(|| {
            wait("docker logs -f", Duration::from_secs(300), || {
                let text = std::fs::read(file.path()).unwrap_or_default();
                text.windows(needle.len()).any(|w| w == needle.as_bytes())
            })
        });
        let _ = follower.kill();
        let _ = follower.wait();
        let (tp, td) = ((paas_done - started).as_secs_f64(), (docker_done - started).as_secs_f64());
        paas_rates.push(f64::from(lines) / tp);
        docker_rates.push(f64::from(lines) / td);
        eprintln!("round {round}: paas {tp:.2}s, docker logs -f {td:.2}s");
    }
    let (cpu, wall) = (cpu_secs(pid) - cpu0, t0.elapsed().as_secs_f64());
    let (rp, rd) = (percentile(paas_rates, 50), percentile(docker_rates, 50));
    println!("{rounds} rounds of {lines} lines, median:");
    println!("  paas (stdout to searchable): {rp:.0} lines/s");
    println!("  docker logs -f to a file:    {rd:.0} lines/s");
    println!("  ratio paas/docker: {:.2}", rp / rd);
    println!(
        "  paas up CPU: {:.0}% of a core over {wall:.0}s; peak RSS {:.0} MiB",
        100.0 * cpu / wall,
        peak_mib(pid)
    );

    // Searches over everything stored, through the API (no CLI start-up in the figure).
    let stored = u64::from(rounds) * u64::from(lines);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = protocol::Client::new(format!("http://{}", p.api_addr()), p.token());
    let queries: Vec<(&str, protocol::logs::LogQuery)> = vec![
        ("rare phrase (1 match)", q(Some("needle-1 done"), None)),
        ("common phrase (every round)", q(Some("bench line 2 123456"), None)),
        ("frequent word, newest 200", q(Some("bench"), None)),
        ("no search, newest 200", q(None, None)),
        ("process filter, newest 200", q(None, Some("web"))),
    ];
    println!("search over {stored} stored lines (median / p95 of 20, ms):");
    for (name, query) in queries {
        let times: Vec<f64> = (0..20)
            .map(|_| {
                let t = Instant::now();
                rt.block_on(client.logs(&app, "production", &query)).expect("search");
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        println!("  {name:32} {:7.1} {:7.1}", percentile(times.clone(), 50), percentile(times, 95));
    }
    p.stop();
}

fn q(grep: Option<&str>, process: Option<&str>) -> protocol::logs::LogQuery {
    protocol::logs::LogQuery {
        grep: grep.map(str::to_string),
        process: process.map(str::to_string),
        ..Default::default()
    }
}

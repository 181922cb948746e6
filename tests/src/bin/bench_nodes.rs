//! Benchmark: the control plane with many nodes, no Docker. A real `paas server` and simulated
//! agents in this process, each with its own key and certificate over mutual TLS, speaking the
//! agent protocol as `paas agent` does: join with a one-time token, register, long-poll the
//! assignment, answer image resolutions with a made-up id, report every assigned container
//! running and healthy at once and again every second (the real agent's heartbeat).
//!
//! For each node count: how fast nodes join; at rest, the requests per second the control
//! plane serves the agents and the CPU it takes; API latency (`GET /api/v1/nodes`, `GET
//! /api/v1/apps`) at rest; then apps of 100 replicas deployed at once, ten replicas per node in
//! all: the replicas placed and in their nodes' assignments per second (the scheduler and the
//! watch), and placed, started and healthy per second (end to end: every replica's
//! placement, assignment to its node, the node's report and the deploy's wait).
//!
//! Run: `cargo run --release -p paas-tests --bin bench-nodes -- [NODES...]` (default 10 100 1000).

use paas_tests::{cpu_secs, Platform};
use protocol::agent::{BuildResult, Capacity, ContainerStatus, NodeReport, RegisterNode};
use protocol::tls::{agent_http, fetch_ca, JoinToken, NodeKey};
use protocol::Client;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPLICAS_PER_NODE: usize = 10;
const REPLICAS_PER_APP: usize = 100;

/// Requests the simulated agents made, by kind.
#[derive(Default)]
struct Counters {
    watches: AtomicU64,
    reports: AtomicU64,
    errors: AtomicU64,
    /// Containers in the agents' latest assignments, summed over the agents: the replicas
    /// placed and delivered to their nodes.
    assigned: AtomicU64,
}

impl Counters {
    fn total(&self) -> u64 {
        self.watches.load(Ordering::Relaxed) + self.reports.load(Ordering::Relaxed)
    }
}

/// Joins node `i` and returns its name and a client with its certificate.
async fn join(admin: &Client, agent_url: &str, ca: &Mutex<Option<String>>, i: usize) -> (String, Client) {
    let name = format!("sim-{i:05}");
    let t = Instant::now();
    let created = admin.create_join_token(3600).await.expect("a join token");
    let t_token = t.elapsed();
    let token = JoinToken::parse(&created.token).expect("a join token that parses");
    let known = ca.lock().unwrap().clone();
    let ca_pem = match known {
        Some(pem) => pem,
        None => {
            let pem = fetch_ca(agent_url, &token.ca_sha256).await.expect("the CA");
            *ca.lock().unwrap() = Some(pem.clone());
            pem
        }
    };
    let key = NodeKey::generate().expect("a key");
    let addr = format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256);
    let mut registration = RegisterNode::new(&name, &addr, false);
    registration.capacity = Capacity { millicpus: 64_000, memory_bytes: 256 << 30 };
    let joining = Client::with_http(agent_url, "", agent_http(&ca_pem, None).unwrap());
    let t = Instant::now();
    let cert = joining.join(&token, &registration, &key).await.expect("joining");
    let t_join = t.elapsed();
    let http =
        agent_http(&ca_pem, Some((&key, &cert.certificate))).expect("a client with the node's certificate");
    let client = Client::with_http(agent_url, "", http);
    let t = Instant::now();
    client.register(&registration).await.expect("registering");
    if i.is_multiple_of(250) {
        eprintln!("join {i}: token {t_token:?}, join {t_join:?}, register {:?}", t.elapsed());
    }
    (name, client)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// One simulated agent: watch, answer, report; and a heartbeat report every second.
async fn agent(name: String, client: Client, counters: Arc<Counters>) {
    let report = Arc::new(Mutex::new(NodeReport::default()));
    let (beat_client, beat_name, beat_report, beat_counters) =
        (client.clone(), name.clone(), report.clone(), counters.clone());
    // A metrics sample every 10 s, as the agent's sampler sends (a node without them is
    // "silent" to the alerts).
    let (sample_client, sample_name) = (client.clone(), name.clone());
    tokio::spawn(async move {
        let sample = protocol::metrics::NodeSample { interval_secs: 10.0, ..Default::default() };
        loop {
            let _ = sample_client.send_metrics(&sample_name, &sample).await;
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut r = beat_report.lock().unwrap().clone();
            r.observed_at_ms = now_ms();
            let counter = match beat_client.report(&beat_name, &r).await {
                Ok(_) => &beat_counters.reports,
                Err(_) => &beat_counters.errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let (mut index, mut assigned) = (0, 0);
    loop {
        let watched = client.watch(&name, index, Duration::from_secs(20)).await;
        let Ok(w) = watched else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        counters.watches.fetch_add(1, Ordering::Relaxed);
        index = w.index;
        let a = w.assignment;
        let now_assigned = a.containers.len() as u64;
        if now_assigned > assigned {
            counters.assigned.fetch_add(now_assigned - assigned, Ordering::Relaxed);
        } else {
            counters.assigned.fetch_sub(assigned - now_assigned, Ordering::Relaxed);
        }
        assigned = now_assigned;
        for build in &a.builds {
            let digest = Sha256::digest(build.tag.as_bytes());
            let id = format!("sha256:{}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
            let result = BuildResult { image_id: Some(id), error: None };
            let _ = client.build_result(build, &result).await;
        }
        let containers = a
            .containers
            .iter()
            .enumerate()
            .map(|(n, c)| ContainerStatus {
                name: c.name.clone(),
                state: "running".into(),
                healthy: true,
                host_port: Some(20_000 + n as u16),
                restarts: 0,
                log_tail: Vec::new(),
                db: None,
                exit_code: None,
            })
            .collect();
        let next = NodeReport {
            containers,
            observed_at_ms: now_ms(),
            assignment_index: index,
            generation: a.generation,
            ..Default::default()
        };
        *report.lock().unwrap() = next.clone();
        let counter = match client.report(&name, &next).await {
            Ok(_) => &counters.reports,
            Err(_) => &counters.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Median and 99th percentile of `n` timed calls of `call`, in milliseconds.
async fn latency<F, Fut>(n: usize, mut call: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        assert!(call().await, "an API call failed");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (times[n / 2], times[(n * 99 / 100).min(n - 1)])
}

async fn run(nodes: usize) {
    // A pool with room for every app's network (the tests' slots hold 64).
    let p = Platform::start_server_only(&["--network-pool", "10.96.0.0/14"]);
    let admin = Client::new(&p.api_url, p.admin_token());
    let counters = Arc::new(Counters::default());
    let ca = Mutex::new(None);
    let started = Instant::now();
    for i in 0..nodes {
        let (name, client) = join(&admin, &p.agent_url, &ca, i).await;
        tokio::spawn(agent(name, client, counters.clone()));
    }
    let join_secs = started.elapsed().as_secs_f64();

    // At rest: every agent long-polls and reports every second.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu0, req0, t0) = (cpu_secs(p.pid()), counters.total(), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let secs = t0.elapsed().as_secs_f64();
    let rest_rps = (counters.total() - req0) as f64 / secs;
    let rest_cpu = (cpu_secs(p.pid()) - cpu0) / secs * 100.0;
    let nodes_api = latency(50, || async { admin.nodes().await.is_ok() }).await;
    let apps_api = latency(50, || async { admin.list_apps().await.is_ok() }).await;

    println!(
        "{nodes:>5} nodes: joined in {join_secs:.1}s ({:.0}/s); at rest {rest_rps:.0} agent requests/s at {rest_cpu:.0}% CPU; \
         GET /api/v1/nodes p50 {:.1} ms p99 {:.1} ms, /api/v1/apps p50 {:.1} ms p99 {:.1} ms",
        nodes as f64 / join_secs,
        nodes_api.0,
        nodes_api.1,
        apps_api.0,
        apps_api.1,
    );

    // Placement: apps of 100 replicas, deployed at once, ten replicas per node in all.
    let apps = (nodes * REPLICAS_PER_NODE).div_ceil(REPLICAS_PER_APP);
    let toml =
        format!("[processes.web]\nreplicas = {REPLICAS_PER_APP}\n[deploy]\nstability_window = \"0s\"\n");
    for a in 0..apps {
        admin.create_app(&format!("bench-{a:04}")).await.expect("creating an app");
    }
    let replicas = apps * REPLICAS_PER_APP;
    let (cpu1, started) = (cpu_secs(p.pid()), Instant::now());
    // Placement proper: until every replica is placed and in its node's assignment.
    let counted = counters.clone();
    let placed = tokio::spawn(async move {
        while (counted.assigned.load(Ordering::Relaxed) as usize) < replicas {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        started.elapsed().as_secs_f64()
    });
    let mut deploys = tokio::task::JoinSet::new();
    for a in 0..apps {
        let (admin, toml) = (admin.clone(), toml.clone());
        deploys.spawn(async move {
            let app = format!("bench-{a:04}");
            let r =
                admin.deploy_image(&app, "production", "bench/web:1", Some(toml)).await.expect("deploying");
            // Followed as `paas deploy` follows: from the last event seen, so each call waits
            // for news instead of answering at once with the whole history.
            let mut after = 0;
            loop {
                let page =
                    admin.deploy_events(&app, "production", r.version, after, Duration::from_secs(30)).await;
                let page = page.expect("following the deploy");
                after = page.next;
                let release = page.release;
                if release.status.is_finished() {
                    assert!(release.error.is_none(), "{app}: {:?}", release.error);
                    break;
                }
            }
        });
    }
    while let Some(done) = deploys.join_next().await {
        done.expect("a deploy");
    }
    let deploy_secs = started.elapsed().as_secs_f64();
    let deploy_cpu = cpu_secs(p.pid()) - cpu1;
    let placed_secs = placed.await.expect("counting placements");
    println!(
        "{nodes:>5} nodes: {replicas} replicas in {apps} deploys placed and assigned in {placed_secs:.1}s ({:.0}/s), \
         live in {deploy_secs:.1}s: {:.0} replicas/s ({deploy_cpu:.1} CPU s); agent errors {}",
        replicas as f64 / placed_secs,
        replicas as f64 / deploy_secs,
        counters.errors.load(Ordering::Relaxed)
    );
}

fn main() {
    let counts: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() { vec![10, 100, 1000] } else { counts };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for nodes in counts {
        rt.block_on(run(nodes));
    }
}

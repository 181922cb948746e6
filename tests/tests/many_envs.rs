//! Room for many environments on one node: each gets a small subnet from the platform's pool
//! instead of one of Docker's ~30 default address pools, environments on those subnets stay
//! apart, and deleting them removes their networks.

use paas_tests::{docker, Platform};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Beyond Docker's default pools (31 networks counting its own bridge).
const ENVS: usize = 40;
/// Deploys and deletes at once.
const CONCURRENCY: usize = 4;
const SERVE: Duration = Duration::from_secs(60);
const FAST: &str =
    "[processes.web]\nhealthcheck = { path = \"/healthz\" }\n[deploy]\nstability_window = \"0s\"\n";

fn inspect(what: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, what]).trim().to_string()
}

/// Exit status of a TCP connect from inside `container` to `addr:8080`.
fn connects(container: &str, addr: &str) -> bool {
    let probe = format!("import socket; socket.create_connection(('{addr}', 8080), timeout=3)");
    std::process::Command::new("docker")
        .args(["exec", container, "python3", "-c", &probe])
        .output()
        .expect("running docker exec")
        .status
        .success()
}

#[test]
fn forty_environments_serve_at_once_stay_apart_and_leave_no_network_when_deleted() {
    let started = Instant::now();
    let mut p = Platform::start();
    let app = p.app_name("many");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), FAST).unwrap();
    let dir = src.path().to_str().unwrap();
    p.paas(&["deploy", dir, "--app", &app]).expect_ok();
    let image = format!("paas/{app}--production:v1");

    let env = |i: usize| format!("e{i:02}");
    paas_tests::parallel(ENVS, CONCURRENCY, |i| {
        p.paas(&["envs", "create", "--app", &app, &env(i)]).expect_ok();
        p.paas(&["deploy", dir, "--app", &app, "--env", &env(i), "--image", &image]).expect_ok();
    });
    eprintln!("{ENVS} environments created and deployed after {:?}", started.elapsed());
    for i in 1..=ENVS {
        p.wait_for_body(&format!("{app}-{}.localhost", env(i)), "Hello from paas!", SERVE);
    }

    // Every environment network is the platform's, on its own /26 of the pool.
    let networks: Vec<String> = std::iter::once("production".to_string())
        .chain((1..=ENVS).map(env))
        .map(|e| format!("paas-{app}--{e}"))
        .collect();
    let subnets: HashSet<String> =
        networks.iter().map(|n| inspect(n, "{{range .IPAM.Config}}{{.Subnet}}{{end}}")).collect();
    assert_eq!(subnets.len(), ENVS + 1, "one subnet per environment: {subnets:?}");
    assert!(subnets.iter().all(|s| s.starts_with("10.12") && s.ends_with("/26")), "{subnets:?}");
    for n in &networks {
        assert!(
            inspect(n, "{{json .Labels}}").contains(&p.node),
            "network {n} carries the platform's labels"
        );
    }

    // Environments stay apart: a replica reaches itself but not another environment's.
    let container = |e: &str| format!("paas-{app}--{e}--web-1-1");
    let address =
        |e: &str| inspect(&container(e), "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    let (a, b) = (env(1), env(2));
    assert!(connects(&container(&a), &address(&a)), "a replica reaches its own address");
    assert!(!connects(&container(&a), &address(&b)), "a replica must not reach another environment's");

    eprintln!("all served, on their subnets and apart after {:?}", started.elapsed());
    paas_tests::parallel(ENVS, CONCURRENCY, |i| {
        p.paas(&["envs", "delete", "--app", &app, &env(i), "--confirm", &env(i)]).expect_ok();
    });
    p.paas(&["apps", "delete", &app, "--confirm", &app]).expect_ok();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left =
            docker(&["network", "ls", "--format", "{{.Name}}", "--filter", &format!("label=paas.app={app}")]);
        if left.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "networks left 90 s after their environments were deleted:\n{left}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("{ENVS} environments created, served, deleted and cleaned up in {:?}", started.elapsed());
}

#[test]
fn a_network_of_an_environments_name_that_paas_did_not_make_is_refused_not_taken_over() {
    let mut p = Platform::start();
    let app = p.app_name("netown");
    p.paas(&["apps", "create", &app]).expect_ok();
    // Someone else's network under the environment's name (node-labelled only so the harness
    // removes it afterwards).
    let net = format!("paas-{app}--production");
    docker(&["network", "create", "--label", &format!("paas.node={}", p.node), &net]);
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), format!("{FAST}timeout = \"15s\"\n")).unwrap();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app])
        .expect_err(&format!("a Docker network named {net} exists that paas did not make"));
    let labels = inspect(&net, "{{json .Labels}}");
    assert!(!labels.contains("paas.managed"), "the network was left as it was: {labels}");
}

//! Tenants on one node stay apart: Docker names never collide between (app, env) pairs, the
//! agent never takes over a container of another app that happens to carry an assigned name,
//! and every container runs with limits and without capabilities, so a memory hog or a fork
//! bomb in one app leaves the platform and the other apps serving.

use paas_tests::{docker, Platform};
use std::time::{Duration, Instant};

const SERVE: Duration = Duration::from_secs(60);
const FAST: &str =
    "[processes.web]\nhealthcheck = { path = \"/healthz\" }\n[deploy]\nstability_window = \"0s\"\n";

fn names_with_label(label: &str) -> Vec<String> {
    let out = docker(&["ps", "-a", "--format", "{{.Names}}", "--filter", &format!("label={label}")]);
    let mut names: Vec<String> = out.lines().map(str::to_string).collect();
    names.sort();
    names
}

#[test]
fn app_x_env_eu_production_and_app_x_eu_each_serve_their_own_release() {
    let mut p = Platform::start();
    let x = p.app_name("nm");
    let x_eu = p.app_named(&format!("{x}-eu"));
    p.paas(&["apps", "create", &x]).expect_ok();
    p.paas(&["envs", "create", "--app", &x, "eu-production"]).expect_ok();
    p.paas(&["apps", "create", &x_eu]).expect_ok();

    // Each has a release command: before, both shared one job id and the second was skipped.
    let deploy = |app: &str, env: &str| {
        let src = paas_tests::example_copy("hello");
        let release =
            format!("[release]\ncommand = [\"python3\", \"-c\", \"print('release of {app}/{env}')\"]\n");
        std::fs::write(src.path().join("paas.toml"), format!("{FAST}{release}")).unwrap();
        std::fs::write(src.path().join("message.txt"), format!("I am {app}/{env}\n")).unwrap();
        let out = p.paas(&["deploy", src.path().to_str().unwrap(), "--app", app, "--env", env]).expect_ok();
        let line = format!("release of {app}/{env}");
        assert_eq!(out.stderr.lines().filter(|l| l.trim() == line).count(), 1, "{}", out.stderr);
    };
    deploy(&x, "eu-production");
    deploy(&x_eu, "production");

    let first = format!("{x}-eu-production.localhost");
    p.wait_for_body(&first, &format!("I am {x}/eu-production"), SERVE);
    p.wait_for_body(&p.host(&x_eu), &format!("I am {x_eu}/production"), SERVE);
    // Deploying the second did not take over the first: both keep their own containers.
    let a = names_with_label(&format!("paas.app={x}"));
    let b = names_with_label(&format!("paas.app={x_eu}"));
    assert_eq!(a, vec![format!("paas-{x}--eu-production--web-1-1")]);
    assert_eq!(b, vec![format!("paas-{x_eu}--production--web-1-1")]);
    for net in [format!("paas-{x}--eu-production"), format!("paas-{x_eu}--production")] {
        let labels = docker(&["network", "inspect", "-f", "{{json .Labels}}", &net]);
        assert!(labels.contains(&p.node), "network {net} is the platform's: {labels}");
    }
    assert!(p.get(&first, "/").body.contains(&format!("I am {x}/eu-production")));
}

#[test]
fn a_container_with_an_assigned_name_but_another_apps_labels_is_never_adopted() {
    let mut p = Platform::start();
    let app = p.app_name("adopt");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), FAST).unwrap();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    p.wait_for_body(&p.host(&app), "Hello from paas!", SERVE);

    // While the platform is down, someone else's container takes the name of the running
    // replica, labelled for this node.
    p.stop();
    let name = format!("paas-{app}--production--web-1-1");
    docker(&["rm", "-f", &name]);
    let image = format!("paas/{app}--production:v1");
    let node_label = format!("paas.node={}", p.node);
    let created = docker(&[
        "create",
        "--name",
        &name,
        "--label",
        "paas.managed=true",
        "--label",
        &node_label,
        "--label",
        "paas.app=someone-else",
        "--label",
        "paas.env=production",
        "--label",
        "paas.process=web",
        "--label",
        "paas.release=1",
        "--label",
        "paas.replica=1",
        &image,
    ]);
    assert!(!created.trim().is_empty(), "creating the squatter failed");
    p.restart();

    // The agent neither starts, probes, removes nor routes to it, and says why.
    let deadline = Instant::now() + SERVE;
    loop {
        let ps = p.paas(&["ps", "--app", &app, "-o", "json"]).expect_ok().json();
        if ps[0]["state"] == "name conflict" {
            assert_eq!(ps[0]["healthy"], false);
            break;
        }
        assert!(Instant::now() < deadline, "never reported the conflict: {ps}\n{}", p.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let state = docker(&["inspect", "-f", "{{.State.Status}} {{index .Config.Labels \"paas.app\"}}", &name]);
    assert_eq!(state.trim(), "created someone-else", "the squatter was left as it was");
    assert_ne!(p.get(&p.host(&app), "/").status, 200, "nothing routes to the squatter");

    // Once it is gone, the agent recreates its own replica.
    docker(&["rm", "-f", &name]);
    p.wait_for_body(&p.host(&app), "Hello from paas!", SERVE);
}

/// A web server on $PORT that answers `name`, after starting `mischief` in a thread.
fn server(name: &str, mischief: &str) -> String {
    let code = format!(
        "import http.server, os, threading, time\n\
         def mischief():\n    time.sleep(5)\n{mischief}\n\
         threading.Thread(target=mischief, daemon=True).start()\n\
         class H(http.server.BaseHTTPRequestHandler):\n    \
             def do_GET(self):\n        \
                 self.send_response(200); self.end_headers(); self.wfile.write(b'{name}')\n    \
             def log_message(self, *a):\n        pass\n\
         http.server.ThreadingHTTPServer(('', int(os.environ['PORT'])), H).serve_forever()\n"
    );
    let quoted = serde_json::to_string(&code).unwrap();
    format!("command = [\"python3\", \"-c\", {quoted}]\n")
}

#[test]
fn limits_and_dropped_capabilities_hold_a_memory_hog_and_a_fork_bomb_in_their_own_app() {
    let mut p = Platform::start();
    let calm = p.app_name("calm");
    let hog = p.app_name("hog");
    let bomb = p.app_name("bomb");
    for app in [&calm, &hog, &bomb] {
        p.paas(&["apps", "create", app]).expect_ok();
    }
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), FAST).unwrap();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &calm]).expect_ok();
    let image = format!("paas/{calm}--production:v1");

    let deploy_image = |app: &str, manifest: String| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("paas.toml"), manifest).unwrap();
        p.paas(&["deploy", dir.path().to_str().unwrap(), "--app", app, "--image", &image]).expect_ok();
    };
    // Touches 8 MiB more every 50 ms past its 64 MiB limit.
    let eat = "    b = []\n    while True:\n        b.append(b'x' * (8 << 20)); time.sleep(0.05)";
    let hog_web = server("hog", eat);
    deploy_image(
        &hog,
        format!("[processes.web]\nmemory = \"64M\"\n{hog_web}[deploy]\nstability_window = \"0s\"\n"),
    );
    // Every process forks forever; failures (the PID limit) are shrugged off.
    let fork = "    while True:\n        try:\n            os.fork()\n        except OSError:\n            time.sleep(0.01)";
    let bomb_web = server("bomb", fork);
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    deploy_image(
        &bomb,
        format!("[processes.web]\npids = 32\ncpus = 0.25\n{bomb_web}[deploy]\nstability_window = \"0s\"\n"),
    );

    // What Docker was told.
    let inspect = |name: &str, fmt: &str| docker(&["inspect", "-f", fmt, name]).trim().to_string();
    let hog_c = format!("paas-{hog}--production--web-1-1");
    let bomb_c = format!("paas-{bomb}--production--web-1-1");
    let calm_c = format!("paas-{calm}--production--web-1-1");
    assert_eq!(inspect(&hog_c, "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}"), "67108864 67108864");
    assert_eq!(inspect(&bomb_c, "{{.HostConfig.PidsLimit}} {{.HostConfig.NanoCpus}}"), "32 250000000");
    assert_eq!(
        inspect(&calm_c, "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}"),
        "536870912 1000000000 256",
        "the defaults"
    );
    assert_eq!(inspect(&calm_c, "{{.HostConfig.CapDrop}}"), "[ALL]");
    let added = inspect(&calm_c, "{{.HostConfig.CapAdd}}");
    for cap in ["NET_RAW", "MKNOD", "SYS_ADMIN", "SYS_CHROOT", "SETFCAP"] {
        assert!(!added.contains(cap), "{cap} is not given back: {added}");
    }
    assert!(inspect(&calm_c, "{{.HostConfig.SecurityOpt}}").contains("no-new-privileges"));
    // Processes in the container really run without them: the bounding set is the allow-list
    // (CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID NET_BIND_SERVICE = 0x4fb).
    let status = docker(&["exec", &calm_c, "cat", "/proc/self/status"]);
    let bounding = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap_or_default();
    assert_eq!(bounding.split_whitespace().nth(1), Some("00000000000004fb"), "{status}");
    let ps = p.paas(&["ps", "--app", &hog]).expect_ok();
    assert!(ps.stdout.contains("LIMITS") && ps.stdout.contains("64M, 1 CPU, 256 pids"), "{}", ps.stdout);

    // While the hog is OOM-killed and restarted and the bomb hits its PID limit, the calm app
    // answers every request and the platform every command.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut requests, mut restarted, mut bomb_pids) = (0, false, 0u64);
    while !(restarted && bomb_pids >= 16 && requests >= 50) {
        assert!(Instant::now() < deadline, "restarted {restarted}, bomb pids {bomb_pids}\n{}", p.log());
        let r = p.get(&p.host(&calm), "/");
        assert!(r.status == 200 && r.body.contains("Hello from paas!"), "calm stopped answering: {r:?}");
        requests += 1;
        if requests % 20 == 0 {
            let ps = p.paas(&["ps", "--app", &hog, "-o", "json"]).expect_ok().json();
            restarted = ps[0]["restarts"].as_u64().unwrap() >= 1;
            let pids = docker(&["stats", "--no-stream", "--format", "{{.PIDs}}", &bomb_c]);
            bomb_pids = pids.trim().parse().unwrap_or(0);
            assert!(bomb_pids <= 32, "the bomb has {bomb_pids} processes, above its limit");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let until = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 1)
        .to_string();
    let ooms = docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until,
        "--filter",
        "event=oom",
        "--filter",
        &format!("container={hog_c}"),
        "--format",
        "{{.Status}}",
    ]);
    assert!(ooms.contains("oom"), "the kernel OOM-killed the hog inside its limit: {ooms:?}");
    p.paas(&["apps", "list"]).expect_ok();
}

//! Images travel between nodes without a registry. `paas up` and agents joined with the hidden
//! `--node-scoped-images`: on the one Docker engine the tests share, a node-scoped agent counts
//! only images under its own tag (`paas-node-<node>:<hex>`) as its own and runs containers from
//! that tag, so it must load each release image from the control plane, as a separate machine
//! would. The build runs on a joined node (the `paas up` node is drained); once that builder is
//! lost, a node that joined later still gets the image: the control plane kept it.

use paas_tests::load::Load;
use paas_tests::{docker, Platform};
use std::time::{Duration, Instant};

/// The image a node-scoped node's container runs from.
fn container_image(node: &str, app: &str) -> String {
    let filters =
        ["--filter", &format!("label=paas.node={node}"), "--filter", &format!("label=paas.app={app}")];
    let mut args = vec!["ps", "-q"];
    args.extend(filters);
    let id = docker(&args);
    let id = id.split_whitespace().next().unwrap_or_else(|| panic!("no container of {app} on {node}"));
    docker(&["inspect", "-f", "{{.Config.Image}}", id]).trim().to_string()
}

/// The seconds an agent's log says its image load took.
fn load_secs(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("image loaded from the control plane"))?;
    // Without the terminal colours tracing writes around field names.
    let (mut plain, mut escape) = (String::new(), false);
    for ch in line.chars() {
        match (escape, ch) {
            (false, '\x1b') => escape = true,
            (true, 'm') => escape = false,
            (false, ch) => plain.push(ch),
            _ => {}
        }
    }
    plain.split("secs=").nth(1)?.split_whitespace().next()?.parse().ok()
}

#[test]
fn an_image_built_on_one_node_runs_on_others_through_the_control_plane_after_its_builder_is_lost() {
    let mut p = Platform::start_with(&["--node-lost-after", "6s"]);
    let b = p.join_agent_with("127.0.0.2", &["--node-scoped-images"]);
    let c = p.join_agent_with("127.0.0.3", &["--node-scoped-images"]);
    // The build goes to the first ready node: b, once the `paas up` node takes nothing new.
    p.paas(&["nodes", "drain", &p.node.clone()]).expect_ok();

    let app = p.app_name("travel");
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), paas_tests::replicas_manifest(2, "5s")).unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    let started = Instant::now();
    let out = p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let deploy_secs = started.elapsed().as_secs_f64();
    let progress = format!("{}{}", out.stdout, out.stderr);
    assert!(
        progress.contains(&format!("Node {c} fetches image")),
        "the deploy shows the transfer:\n{progress}"
    );
    let mut want = vec![b.clone(), c.clone()];
    want.sort();
    assert_eq!(p.placement(&app), want);

    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    let id = releases[0]["image_id"].as_str().expect("the release has its image").to_string();
    let hex = id.strip_prefix("sha256:").unwrap();
    assert_eq!(container_image(&c, &app), format!("paas-node-{c}:{hex}"), "c runs the image it loaded");
    let kept = p.data_dir().join("images").join(format!("{hex}.tar"));
    assert!(kept.is_file(), "the control plane keeps the image at {}", kept.display());
    let bytes = std::fs::metadata(&kept).unwrap().len();

    // A node joins; the builder is lost (agent killed, containers gone). Its replica goes to
    // the new node, which has never seen the image and gets it from the control plane.
    let d = p.join_agent_with("127.0.0.4", &["--node-scoped-images"]);
    let host = p.host(&app);
    let load = Load::start(&p.ingress, &host, 2);
    load.wait_for_answers(20, Duration::from_secs(30));
    let killed = Instant::now();
    p.kill_node(&b);
    let deadline = Instant::now() + Duration::from_secs(90);
    let back = loop {
        let placed = p.placement(&app);
        if placed.len() == 2 && placed.contains(&d) {
            break killed.elapsed();
        }
        if Instant::now() > deadline {
            let ps = p.paas(&["ps", "--app", &app]).stdout;
            let nodes = p.paas(&["nodes", "list"]).stdout;
            panic!("no replica on the new node {d}:\n{ps}\n{nodes}\n{}\n{}", p.agent_log(&d), p.log());
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    load.wait_for_answers(20, Duration::from_secs(30));
    let samples = load.finish();
    assert_eq!(container_image(&d, &app), format!("paas-node-{d}:{hex}"), "d runs the image it loaded");
    let served = samples.iter().filter(|s| s.status == 200).count();
    println!(
        "image {} ({bytes} bytes): deploy over two nodes {deploy_secs:.1}s, loaded on c in {:.2}s; builder lost, \
         back at 2 replicas {:.1}s after the kill, loaded on d in {:.2}s; {served} of {} requests answered 200",
        &hex[..12],
        load_secs(&p.agent_log(&c)).unwrap_or(f64::NAN),
        back.as_secs_f64(),
        load_secs(&p.agent_log(&d)).unwrap_or(f64::NAN),
        samples.len()
    );
    assert!(served > 0);

    let store = std::fs::read_dir(p.data_dir().join("images")).unwrap().count();
    assert_eq!(store, 1, "one tarball, no partial uploads left");
}

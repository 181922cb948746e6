//! Central logs through the real binaries: the output of two web replicas and of a one-off run
//! is collected by the node agent, shipped to the control plane and read back with `paas logs`
//! in time order, exactly once, filtered by text and process; `paas logs -f` shows a new line
//! as it is written.

use paas_tests::Platform;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn texts(lines: &[Value]) -> Vec<String> {
    lines.iter().map(|l| l["text"].as_str().unwrap().to_string()).collect()
}

#[test]
fn replicas_and_runs_land_in_one_stream_in_order_once_and_follow_shows_new_lines() {
    let mut p = Platform::start();
    let app = p.app_name("logs");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    p.paas(&["scale", "--app", &app, "web=2"]).expect_ok();
    p.paas(&["run", "--app", &app, "--", "seq", "1", "300"]).expect_ok();

    // Both replicas' start-up line and the run's 300 numbers arrive.
    let deadline = Instant::now() + Duration::from_secs(60);
    let lines = loop {
        let lines = p.logs(&["--app", &app, "-n", "2000"]);
        let replicas: std::collections::BTreeSet<u64> = lines
            .iter()
            .filter(|l| l["process"] == "web" && l["text"].as_str().unwrap().contains("listening"))
            .map(|l| l["replica"].as_u64().unwrap())
            .collect();
        let numbers = lines.iter().filter(|l| l["process"] == "run").count();
        if replicas.len() >= 2 && numbers >= 300 {
            break lines;
        }
        assert!(Instant::now() < deadline, "lines did not all arrive: {replicas:?} {numbers}\n{lines:#?}");
        std::thread::sleep(Duration::from_millis(250));
    };
    // In time order across replicas, and the run's lines exactly once and in order.
    let times: Vec<&str> = lines.iter().map(|l| l["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order: {times:?}");
    let run: Vec<String> = lines
        .iter()
        .filter(|l| l["process"] == "run")
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (1..=300).map(|i| i.to_string()).collect();
    assert_eq!(run, expected, "each number once, in order");

    // Filters: text, process, source.
    let found = texts(&p.logs(&["--app", &app, "--grep", "listening"]));
    assert!(found.len() >= 2 && found.iter().all(|t| t.contains("listening")), "{found:?}");
    let web = p.logs(&["--app", &app, "--process", "web"]);
    assert!(!web.is_empty() && web.iter().all(|l| l["process"] == "web"));
    assert!(p.logs(&["--app", &app, "--source", "router"]).iter().all(|l| l["source"] == "router"));
    let last = texts(&p.logs(&["--app", &app, "--process", "run", "-n", "3"]));
    assert_eq!(last, ["298", "299", "300"]);
    p.paas(&["logs", "--app", &app, "--since", "soon"]).expect_err("since");

    // Text lines look like Heroku's.
    let text = p.paas(&["logs", "--app", &app, "--process", "run", "-n", "1"]).expect_ok().stdout;
    assert!(text.contains(" app[run") && text.trim_end().ends_with("]: 300"), "{text}");

    // Follow: a line written now shows up while `paas logs -f` runs.
    let mut follow = Command::new(paas_tests::paas_bin())
        .args(["logs", "--app", &app, "-f", "-n", "1"])
        .env("XDG_CONFIG_HOME", p.dir.path().join("config"))
        .env_remove("PAAS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let marker = format!("follow-marker-{}", paas_tests::rand_suffix());
    p.paas(&["run", "--app", &app, "--", "echo", &marker]).expect_ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) if line.contains(&marker) => break true,
            _ if Instant::now() > deadline => break false,
            _ => {}
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen, "paas logs -f did not show {marker}");
}

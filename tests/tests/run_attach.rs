//! `paas run` joined to the caller: piped stdin reaches the command and stdout and stderr stay
//! apart; at a terminal the command gets a TTY sized like it and resized with it; the exit code
//! passes through; a caller that goes away stops the command and removes its container, and so
//! does a restart of the platform that cut a session short.

use paas_tests::{docker, http, paas_bin, tiny_app, Platform};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deployed(p: &mut Platform) -> String {
    let app = p.app_name("attach");
    let src = tiny_app(&app, "");
    std::fs::write(src.path().join("v.txt"), "1").unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    app
}

fn paas_cmd(p: &Platform) -> Command {
    let mut cmd = Command::new(paas_bin());
    cmd.env("XDG_CONFIG_HOME", p.dir.path().join("config")).env_remove("PAAS_TOKEN");
    cmd
}

/// The ids of the run containers of `app` that exist, running or not.
fn run_containers(app: &str) -> Vec<String> {
    let filter = format!("label=paas.app={app}");
    let out = docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Label \"paas.job\"}}"]);
    out.lines().map(str::trim).filter(|l| l.starts_with("run-")).map(str::to_string).collect()
}

/// `paas run -- sh -c 'echo started; exec sleep 600'` once it is joined (it printed
/// `started`), with its stdin held open; the child and the run's job id.
fn sleeping_run(p: &Platform, app: &str) -> (std::process::Child, String) {
    let earlier = run_containers(app);
    let mut child = paas_cmd(p)
        .args(["run", "--app", app, "--", "sh", "-c", "echo started; exec sleep 600"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert_eq!(first, "started\n");
    let id = run_containers(app).into_iter().find(|id| !earlier.contains(id)).expect("the run's container");
    (child, id)
}

#[test]
fn piped_stdin_a_terminal_and_a_caller_that_leaves() {
    let mut p = Platform::start();
    let app = deployed(&mut p);

    // Piped stdin, no TTY: input in, stdout and stderr apart, the exit code out.
    let mut child = paas_cmd(&p)
        .args([
            "run",
            "--app",
            &app,
            "--",
            "sh",
            "-c",
            "read first; echo \"got $first\"; echo oops >&2; cat; exit 7",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\nthe rest\nof the input\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(7), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout, "got hello\nthe rest\nof the input\n");
    assert_eq!(stderr.trim(), "oops");
    // Output larger than a frame, byte for byte.
    let big = p
        .paas(&["run", "--app", &app, "--", "sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"])
        .expect_ok();
    assert_eq!(big.stdout.len(), 3_000_000);
    assert!(big.stdout.bytes().all(|b| b == b'x'));

    // At a terminal: a TTY of the terminal's size, resized with it, keys typed reach it.
    let script = "until [ \"$(stty size)\" = '31 97' ] || [ ${i:=0} -gt 100 ]; do i=$((i+1)); sleep 0.1; done; \
        echo \"size=$(stty size)\"; [ -t 0 ] && echo stdin-is-a-tty; read line; echo \"line=$line\"; read again; \
        until [ \"$(stty size)\" != '31 97' ] || [ ${j:=0} -gt 100 ]; do j=$((j+1)); sleep 0.1; done; \
        echo \"size=$(stty size)\"; exit 5";
    let steps = serde_json::json!([
        ["wait", "size=31 97"],
        ["send", "hello tty\r"],
        ["wait", "line=hello tty"],
        ["resize", 50, 120],
        ["send", "\r"],
        ["wait", "size=50 120"],
    ]);
    let out = p.paas_at_terminal(steps, &["run", "--app", &app, "--", "sh", "-c", script]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{shown}\n{}", String::from_utf8_lossy(&out.stderr));
    for needle in ["size=31 97", "stdin-is-a-tty", "line=hello tty", "size=50 120"] {
        assert!(shown.contains(needle), "{needle:?} missing from what the terminal showed: {shown}");
    }
    // The terminal's own line discipline is back as it was (python's pty would have shown raw
    // mode's missing newline translation as a staircase; here the ends of lines are CR LF
    // from the run's TTY).
    assert!(shown.contains("line=hello tty\r\n"), "{shown:?}");

    // The caller goes away mid-run: the command is stopped, its container removed, the run
    // recorded as ended by that.
    let (mut child, id) = sleeping_run(&p, &app);
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run_containers(&app).is_empty() {
        assert!(Instant::now() < deadline, "the run's container outlived its caller\n{}", p.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let auth = format!("Bearer {}", p.token());
    let path = format!("/api/v1/apps/{app}/envs/production/runs/{id}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let r = http::request(p.api_addr(), "GET", "paas", &path, &[("Authorization", &auth)], "");
        let page: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        if page["finished"] == true {
            break page;
        }
        assert!(Instant::now() < deadline, "the run never ended: {page}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(page["error"].as_str().unwrap_or("").contains("connection ended"), "{page}");

    // The platform is killed mid-session (kill -9, no goodbye to anyone): the caller is told,
    // and after the restart nothing of the run is left running.
    let (child, cut) = sleeping_run(&p, &app);
    p.kill();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("broke off"), "{out:?}");
    p.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    while run_containers(&app).contains(&cut) {
        assert!(Instant::now() < deadline, "a run cut short by a restart was left behind\n{}", p.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    let path = format!("/api/v1/apps/{app}/envs/production/runs/{cut}");
    let r = http::request(p.api_addr(), "GET", "paas", &path, &[("Authorization", &auth)], "");
    assert!(r.body.contains("the platform restarted during the session"), "{r:?}");

    // Joining takes the upgrade; anything else is told how.
    let attach = format!("{path}/attach");
    let plain = http::request(p.api_addr(), "GET", "paas", &attach, &[("Authorization", &auth)], "");
    assert_eq!(plain.status, 422, "{plain:?}");
    assert!(plain.body.contains("Upgrade: paas-attach/1"), "{}", plain.body);
    let upgrade = [("Authorization", auth.as_str()), ("Connection", "upgrade"), ("Upgrade", "paas-attach/1")];
    let ended = http::request(p.api_addr(), "GET", "paas", &attach, &upgrade, "");
    assert_eq!(ended.status, 409, "an ended run cannot be joined: {ended:?}");
}

//! The walking skeleton end to end: `paas up`, `paas apps create`, `paas deploy` of
//! examples/hello, HTTP through the ingress, restarts of crashed containers and of the
//! platform itself, and clear errors for bad input.

use paas_tests::{docker, http, Platform};
use std::time::Duration;

const SERVE: Duration = Duration::from_secs(60);

#[test]
fn deploy_serves_through_ingress_and_redeploy_bumps_the_release() {
    let mut p = Platform::start();
    let app = p.app_name("hello");
    let src = paas_tests::example_copy("hello");
    let dir = src.path().to_str().unwrap();
    // Created inside the app's directory, the app is linked to it: no --app needed there.
    let created = p.paas_in(src.path(), &["apps", "create", &app]).expect_ok();
    assert!(created.stdout.contains("Linked this directory"), "{}", created.stdout);
    let manifest = std::fs::read_to_string(src.path().join("paas.toml")).unwrap();
    assert!(manifest.starts_with(&format!("app = \"{app}\"\n")), "{manifest}");
    p.paas(&["releases"]).expect_err("--app");

    let out = p.paas_in(src.path(), &["deploy"]).expect_ok();
    assert!(
        out.stdout.contains(&format!("http://{app}.localhost:")),
        "deploy ends with the URL: {}",
        out.stdout
    );
    assert!(out.stderr.contains("Step 1/"), "build output reaches the user: {}", out.stderr);
    let r = p.wait_for_body(&p.host(&app), "Hello from paas!", SERVE);
    assert_eq!(r.status, 200);
    // The manifest's [static] directory is served by the ingress itself (the app 404s there)
    // from the moment the release is live.
    let css = p.get(&p.host(&app), "/static/style.css");
    assert_eq!(css.status, 200, "{css:?}");
    assert!(css.headers.to_ascii_lowercase().contains("cache-control: public, max-age=3600"), "{css:?}");
    assert!(css.body.contains("font-family"), "{css:?}");

    std::fs::write(src.path().join("message.txt"), "Second release\n").unwrap();
    let out = p.paas(&["deploy", dir, "--app", &app, "--output", "json"]).expect_ok();
    assert_eq!(out.json()["version"], 2);
    assert_eq!(out.json()["status"], "active");
    // The switch happened before deploy returned: the very next request sees v2.
    let r = p.get(&p.host(&app), "/");
    assert!(r.body.contains("Second release"), "{r:?}\n{}", p.log());

    let releases = p.paas_in(src.path(), &["releases", "-o", "json"]).expect_ok().json();
    let statuses: Vec<(u64, &str)> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["version"].as_u64().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, vec![(2, "active"), (1, "superseded")]);
    // One release whole: what it runs, and its build and deploy output kept with it.
    p.paas(&["config", "set", "--app", &app, "GREETING=hi"]).expect_ok();
    let one = p.paas_in(src.path(), &["releases", "info", "v1"]).expect_ok().stdout;
    assert!(one.starts_with(&format!("Release v1 of {app}/production: superseded\n")), "{one}");
    for needle in ["Image:        sha256:", "[processes.web]", "Output (build and deploy):", "Step 1/"] {
        assert!(one.contains(needle), "{needle:?} missing from releases info:\n{one}");
    }
    let three = p.paas(&["releases", "info", "3", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(three["release"]["config_keys"], serde_json::json!(["GREETING"]), "{three}");
    assert!(!three["output"].as_array().unwrap().is_empty(), "{three}");
    p.paas(&["releases", "info", "9", "--app", &app]).expect_err("has no release v9");
    p.paas(&["releases", "info", "latest", "--app", &app]).expect_err("like 3 or v3");
    let info = p.paas(&["apps", "info", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(info["envs"][0]["current_release"], 3, "{info}");
    assert_eq!(info["envs"][0]["last_deploy"]["version"], 3, "{info}");
    assert!(info["envs"][0]["database"].is_null(), "{info}");
    let text = p.paas(&["apps", "info", &app]).expect_ok().stdout;
    assert!(text.contains(&format!("=== {app}")) && text.contains("last deploy: v3 active"), "{text}");

    // Only v2's container is left once the old one has drained.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let names =
            docker(&["ps", "-a", "--format", "{{.Names}}", "--filter", &format!("label=paas.app={app}")]);
        let names: Vec<&str> = names.lines().collect();
        if names == vec![format!("paas-{app}--production--web-3-1").as_str()] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "old containers linger: {names:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let apps = p.paas(&["apps", "list", "-o", "json"]).expect_ok().json();
    assert_eq!(apps[0]["envs"][0]["current_release"], 3);
    assert_eq!(apps[0]["envs"][0]["status"], "running");
}

#[test]
fn a_killed_container_is_restarted_and_a_restarted_platform_adopts_running_containers() {
    let mut p = Platform::start();
    let app = p.app_name("hello");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    p.wait_for_body(&p.host(&app), "Hello from paas!", SERVE);
    let container = format!("paas-{app}--production--web-1-1");

    docker(&["kill", &container]);
    p.wait_for_body(&p.host(&app), "Hello from paas!", SERVE);
    let ps = p.paas(&["ps", "--app", &app, "-o", "json"]).expect_ok().json();
    assert!(ps[0]["restarts"].as_u64().unwrap() >= 1, "the agent counted the restart: {ps}");

    let id = docker(&["inspect", "-f", "{{.Id}}", &container]);
    p.stop();
    // With the platform down the app's container keeps running.
    assert_eq!(docker(&["inspect", "-f", "{{.State.Running}}", &container]).trim(), "true");
    p.restart();
    p.wait_for_body(&p.host(&app), "Hello from paas!", SERVE);
    assert_eq!(
        docker(&["inspect", "-f", "{{.Id}}", &container]),
        id,
        "the container was adopted, not recreated"
    );
    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(releases[0]["status"], "active", "state survived the restart: {releases}");

    // A host reboot, as the platform sees one: it is killed, Docker comes back with every
    // container stopped (no restart policy), and the platform starts again (systemd's part).
    p.kill();
    docker(&["stop", "-t", "1", &container]);
    assert_eq!(docker(&["inspect", "-f", "{{.State.Running}}", &container]).trim(), "false");
    p.restart();
    p.wait_for_body(&p.host(&app), "Hello from paas!", SERVE);
    assert_eq!(docker(&["inspect", "-f", "{{.State.Running}}", &container]).trim(), "true");
}

#[test]
fn bad_input_gets_clear_errors_and_disturbs_nothing() {
    let mut p = Platform::start();
    let app = p.app_name("hello");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    let dir = src.path().to_str().unwrap();
    p.paas(&["deploy", dir, "--app", &app]).expect_ok();
    p.wait_for_body(&p.host(&app), "Hello from paas!", SERVE);

    // Output into a pipe whose reader is gone (`paas releases | head -0`): a quiet, successful end.
    let mut closed = std::process::Command::new(paas_tests::paas_bin())
        .args(["releases", "--app", &app])
        .env("XDG_CONFIG_HOME", p.dir.path().join("config"))
        .env_remove("PAAS_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(closed.stdout.take());
    let out = closed.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "{:?}: {stderr}", out.status);

    p.paas(&["apps", "create", "Bad_Name"]).expect_err("invalid app name");
    p.paas(&["apps", "create", &app]).expect_err("already exists");
    // A wrong token is refused before anything is packed or uploaded.
    let out =
        p.paas_env(&["deploy", dir, "--app", &app], &[("PAAS_TOKEN", "paas_wrong")]).expect_err("token");
    assert!(!out.stderr.contains("Uploading"), "{}", out.stderr);
    p.paas(&["deploy", dir, "--app", "no-such-app"]).expect_err("no app named");
    p.paas(&["deploy", dir, "--app", &app, "--env", "nope"]).expect_err("no environment named");
    let refused = p.paas(&["apps", "delete", &app]).expect_err("--confirm");
    assert!(refused.stderr.contains("database volumes stay"), "what is kept is named: {}", refused.stderr);

    let empty = tempfile::tempdir().unwrap();
    p.paas(&["deploy", empty.path().to_str().unwrap(), "--app", &app]).expect_err("no Dockerfile");

    let broken = tempfile::tempdir().unwrap();
    std::fs::write(
        broken.path().join("Dockerfile"),
        "FROM debian:bookworm-slim\nRUN echo about to fail && false\n",
    )
    .unwrap();
    let out = p.paas(&["deploy", broken.path().to_str().unwrap(), "--app", &app]).expect_err("build failed");
    assert!(out.stderr.contains("about to fail"), "the build output reaches the user: {}", out.stderr);
    assert!(out.stderr.contains("non-zero code"), "the build error reaches the user: {}", out.stderr);

    // An image whose process exits at once: the deploy fails and says why, v1 keeps serving.
    let image = docker(&["inspect", "-f", "{{.Id}}", &format!("paas/{app}--production:v1")]);
    let crash = tempfile::tempdir().unwrap();
    std::fs::write(
        crash.path().join("Dockerfile"),
        format!(
            "FROM {}\nCMD [\"python3\", \"-c\", \"print('cannot start: no config'); raise SystemExit(3)\"]\n",
            image.trim()
        ),
    )
    .unwrap();
    let out = p.paas(&["deploy", crash.path().to_str().unwrap(), "--app", &app]).expect_err("crash-looping");
    assert!(
        out.stderr.contains("cannot start: no config"),
        "the app's last log lines are shown: {}",
        out.stderr
    );

    let unknown_token = p.paas_env(&["apps", "list"], &[("PAAS_TOKEN", "paas_wrong")]);
    unknown_token.expect_err("not valid");
    // `paas login` checks the token before saving it, then the CLI works from its config alone.
    let elsewhere = tempfile::tempdir().unwrap();
    let cfg = elsewhere.path().to_str().unwrap();
    let token = std::fs::read_to_string(p.dir.path().join("data/admin-token")).unwrap();
    let login = ["login", "--server", p.api_url.as_str(), "--token"];
    p.paas_env(&[&login[..], &["paas_wrong"]].concat(), &[("XDG_CONFIG_HOME", cfg)]).expect_err("not valid");
    p.paas_env(&[&login[..], &[token.trim()]].concat(), &[("XDG_CONFIG_HOME", cfg)]).expect_ok();
    let listed = p.paas_env(&["apps", "list", "-o", "json"], &[("XDG_CONFIG_HOME", cfg)]).expect_ok();
    assert_eq!(listed.json()[0]["name"], app.as_str());
    p.paas_env(&["apps", "list"], &[("XDG_CONFIG_HOME", elsewhere.path().join("none").to_str().unwrap())])
        .expect_err("no paas server configured");
    let api = p.api_url.trim_start_matches("http://").to_string();
    let raw = http::get(&api, "localhost", "/api/v1/apps");
    assert_eq!(raw.status, 401, "{raw:?}");
    assert!(raw.body.contains("needs an API token"), "{raw:?}");

    // Nothing above disturbed the running release.
    let r = p.get(&p.host(&app), "/");
    assert!(r.status == 200 && r.body.contains("Hello from paas!"), "{r:?}");
    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    let statuses: Vec<&str> =
        releases.as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, vec!["failed", "failed", "active"], "{releases}");
}

#[test]
fn image_deploys_unknown_hosts_and_app_deletion() {
    let mut p = Platform::start();
    let app = p.app_name("hello");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let image = format!("paas/{app}--production:v1");

    let other = p.app_name("img");
    p.paas(&["apps", "create", &other]).expect_ok();
    p.paas(&["deploy", "--app", &other, "--image", &image]).expect_ok();
    p.wait_for_body(&p.host(&other), "Hello from paas!", SERVE);
    p.paas(&["deploy", "--app", &other, "--image", "paas-test/does-not-exist:1"])
        .expect_err("the node has no image paas-test/does-not-exist:1 and");

    let r = p.get("nothing-here.localhost", "/");
    assert_eq!(r.status, 404);
    assert!(r.body.contains("nothing-here.localhost"), "{r:?}");

    p.paas(&["apps", "delete", &other, "--confirm", &other]).expect_ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !docker(&["ps", "-aq", "--filter", &format!("label=paas.app={other}")]).trim().is_empty() {
        assert!(std::time::Instant::now() < deadline, "deleting the app did not remove its containers");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(p.get(&p.host(&other), "/").status, 404);
    assert!(p.get(&p.host(&app), "/").body.contains("Hello from paas!"), "the other app is untouched");
}

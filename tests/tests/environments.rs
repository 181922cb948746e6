//! Environments, config vars and promotion end to end: staging and production side by side,
//! config changes rolled out as releases, secrets that never show, rollback with config, and
//! build-once-promote-everywhere.

use paas_tests::load::served_by;
use paas_tests::{docker, Platform};
use std::time::Duration;

const SERVE: Duration = Duration::from_secs(60);
const FAST: &str =
    "[processes.web]\nhealthcheck = { path = \"/healthz\" }\n[deploy]\nstability_window = \"0s\"\n";

fn image_of(p: &Platform, app: &str, env: &str) -> String {
    let ps = p.paas(&["ps", "--app", app, "--env", env, "-o", "json"]).expect_ok().json();
    let name = ps[0]["name"].as_str().unwrap().to_string();
    docker(&["inspect", "-f", "{{.Image}}", &name]).trim().to_string()
}

#[test]
fn staging_and_production_run_side_by_side_and_promotion_keeps_config() {
    let mut p = Platform::start();
    let app = p.app_name("envs");
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), FAST).unwrap();
    let dir = src.path().to_str().unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    let out = p.paas(&["envs", "create", "--app", &app, "staging"]).expect_ok();
    assert!(out.stdout.contains(&format!("{app}-staging.localhost")), "{}", out.stdout);

    // Config set before the first deploy applies from that deploy on.
    p.paas(&["config", "set", "--app", &app, "GREETING=Hello production"]).expect_ok();
    p.paas(&["config", "set", "--app", &app, "--env", "staging", "GREETING=Hello staging"]).expect_ok();
    p.paas(&["deploy", dir, "--app", &app]).expect_ok();
    std::fs::write(src.path().join("message.txt"), "new code\n").unwrap();
    p.paas(&["deploy", dir, "--app", &app, "--env", "staging"]).expect_ok();
    let prod_host = p.host(&app);
    let staging_host = format!("{app}-staging.localhost");
    p.wait_for_body(&prod_host, "Hello production", SERVE);
    p.wait_for_body(&staging_host, "Hello staging", SERVE);

    // A config change on staging is a new staging release; production is untouched.
    let prod_before = served_by(&p.get(&prod_host, "/").body);
    let out =
        p.paas(&["config", "set", "--app", &app, "--env", "staging", "GREETING=Staging two"]).expect_ok();
    assert!(out.stdout.contains("v2"), "the change rolled out as release v2: {}", out.stdout);
    assert!(p.get(&staging_host, "/").body.contains("Staging two"));
    let r = p.get(&prod_host, "/");
    assert!(r.body.contains("Hello production") && served_by(&r.body) == prod_before, "{r:?}");
    let prod_releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(prod_releases.as_array().unwrap().len(), 1);

    // Promotion: production runs exactly staging's image, with production's config.
    assert_ne!(image_of(&p, &app, "production"), image_of(&p, &app, "staging"));
    let out = p
        .paas(&["promote", "--app", &app, "--from", "staging", "--to", "production", "-o", "json"])
        .expect_ok();
    assert_eq!(out.json()["description"], "Promotion of staging v2");
    assert_eq!(image_of(&p, &app, "production"), image_of(&p, &app, "staging"));
    let r = p.get(&prod_host, "/");
    assert!(r.body.contains("Hello production"), "production keeps its own config: {r:?}");
    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(releases[0]["source"], "build", "no rebuild, the same build's image");

    p.paas(&["envs", "create", "--app", &app, "Bad_Env"]).expect_err("invalid environment name");
    p.paas(&["envs", "create", "--app", &app, "staging"]).expect_err("already has an environment");
    p.paas(&["deploy", dir, "--app", &app, "--env", "qa"]).expect_err("no environment named");
    p.paas(&["config", "set", "--app", &app, "GREETING"]).expect_err("KEY=VALUE");
    p.paas(&["config", "unset", "--app", &app, "NOT_THERE"]).expect_err("is not set");
    p.paas(&["promote", "--app", &app, "--from", "qa", "--to", "production"])
        .expect_err("no environment named");
    // app `<app>-staging` would take staging's hostname.
    p.paas(&["apps", "create", &format!("{app}-staging")]).expect_err("share its hostname");
    std::fs::write(src.path().join("paas.toml"), "[processes.web]\nport = \"eighty\"\n").unwrap();
    p.paas(&["deploy", dir, "--app", &app]).expect_err("paas.toml line 2");
    let envs = p.paas(&["envs", "list", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(envs.as_array().unwrap().len(), 2);
    p.paas(&["envs", "delete", "--app", &app, "staging", "--confirm", "staging"]).expect_ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while p.get(&staging_host, "/").status != 404 {
        assert!(std::time::Instant::now() < deadline, "the deleted environment is still served");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(p.get(&prod_host, "/").body.contains("Hello production"));
}

#[test]
fn secrets_never_show_and_rollback_restores_config() {
    let mut p = Platform::start();
    let app = p.app_name("sec");
    let src = paas_tests::example_copy("hello");
    std::fs::write(src.path().join("paas.toml"), FAST).unwrap();
    let dir = src.path().to_str().unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    let secret = format!("s3cr3t-{}", paas_tests::rand_suffix());
    p.paas(&["config", "set", "--app", &app, &format!("API_KEY={secret}"), "GREETING=one", "OWNER=admin"])
        .expect_ok();
    // A key named like nothing secret, marked secret by the user.
    let license = format!("lic-{}", paas_tests::rand_suffix());
    p.paas(&["config", "set", "--app", &app, "--secret", &format!("LICENSE={license}")]).expect_ok();
    let deploy = p.paas(&["deploy", dir, "--app", &app]).expect_ok();
    p.wait_for_body(&p.host(&app), "one", SERVE);
    let change = p.paas(&["config", "set", "--app", &app, "GREETING=two"]).expect_ok();
    assert!(p.get(&p.host(&app), "/").body.contains("two"));

    // Rollback brings back v1's config values, not only its image.
    let out = p.paas(&["rollback", "--app", &app, "-o", "json"]).expect_ok();
    assert_eq!(out.json()["description"], "Rollback to v1");
    assert!(p.get(&p.host(&app), "/").body.contains("one"), "rollback restored GREETING=one");

    let listed = p.paas(&["config", "list", "--app", &app]).expect_ok();
    assert!(listed.stdout.contains("API_KEY=****"), "{}", listed.stdout);
    assert!(listed.stdout.contains("LICENSE=****") && !listed.stdout.contains("PAAS_"), "{}", listed.stdout);
    // Values that are not secrets show, and are never masked in output.
    assert!(listed.stdout.contains("OWNER=admin"), "{}", listed.stdout);
    assert_eq!(p.paas(&["config", "get", "--app", &app, "OWNER"]).expect_ok().stdout, "admin\n");
    assert_eq!(
        p.paas(&["config", "get", "--app", &app, "API_KEY"]).expect_ok().stdout,
        format!("{secret}\n")
    );
    p.paas(&["config", "get", "--app", &app, "NOPE"]).expect_err("no config var \"NOPE\"");
    let revealed = p.paas(&["config", "list", "--app", &app, "--reveal", "-o", "json"]).expect_ok().json();
    assert_eq!(revealed["vars"]["API_KEY"], secret.as_str());
    let releases = p.paas(&["releases", "--app", &app, "-o", "json"]).expect_ok();

    // An app that prints its secret and dies: the deploy error shows it masked.
    let leaky = tempfile::tempdir().unwrap();
    std::fs::write(
        leaky.path().join("paas.toml"),
        "[processes.web]\ncommand = [\"python3\", \"-c\", \"import os; print('key is', os.environ['API_KEY'], 'for', os.environ['OWNER'] + '.0001', 'licensed', os.environ['LICENSE'], sorted(k for k in os.environ if k.startswith('PAAS_')), flush=True); raise SystemExit(1)\"]\n",
    )
    .unwrap();
    let image = format!("paas/{app}--production:v1");
    let failed = p
        .paas(&["deploy", leaky.path().to_str().unwrap(), "--app", &app, "--image", &image])
        .expect_err("crash-looping");
    assert!(
        failed.stderr.contains("key is **** for admin.0001 licensed **** []"),
        "the printed secret is masked: {}",
        failed.stderr
    );

    for (what, text) in [
        ("deploy output", format!("{}{}", deploy.stdout, deploy.stderr)),
        ("config change output", format!("{}{}", change.stdout, change.stderr)),
        ("failed deploy output", failed.stderr.clone()),
        ("config listing", listed.stdout.clone()),
        ("releases listing", releases.stdout.clone()),
        ("platform log", p.log()),
    ] {
        assert!(!text.contains(&secret), "the secret leaked into the {what}");
    }
    // Not in the data directory either, in any file (database, WAL, sources, tokens).
    let mut stack = vec![p.dir.path().join("data")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                    "{} holds the secret in plain text",
                    path.display()
                );
            }
        }
    }
}

fn unix_now() -> String {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string()
}

/// How many containers Docker created with all of `labels` since `since` (unix seconds).
fn created(since: &str, labels: &[String]) -> usize {
    let until = (unix_now().parse::<u64>().unwrap() + 1).to_string();
    let mut args = vec![
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--filter",
        "event=create",
        "--format",
        "{{.ID}}",
    ];
    let filters: Vec<String> = labels.iter().map(|l| format!("label={l}")).collect();
    for f in &filters {
        args.push("--filter");
        args.push(f);
    }
    docker(&args).lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn release_command_runs_once_per_release_and_one_off_runs_return_their_exit_code() {
    let mut p = Platform::start();
    let app = p.app_name("rel");
    let src = paas_tests::example_copy("hello");
    let manifest = format!(
        "{FAST}[release]\ncommand = [\"python3\", \"-c\", \"print('migrating the database', flush=True)\"]\n"
    );
    std::fs::write(src.path().join("paas.toml"), &manifest).unwrap();
    p.paas(&["apps", "create", &app]).expect_ok();
    let since = unix_now();
    let out = p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    // The command's own output line (not the stage line naming the command), exactly once.
    let printed = out.stderr.lines().filter(|l| l.trim() == "migrating the database").count();
    assert_eq!(printed, 1, "{}", out.stderr);
    p.wait_for_body(&p.host(&app), "Hello from paas!", SERVE);
    let job = format!("paas.job=release-{app}--production-1");
    assert_eq!(created(&since, std::slice::from_ref(&job)), 1, "the release command ran exactly once");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !docker(&["ps", "-aq", "--filter", &format!("label={job}")]).trim().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the release command's container was not removed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A failing release command stops the deploy before any new replica starts.
    let failing = tempfile::tempdir().unwrap();
    std::fs::write(
        failing.path().join("paas.toml"),
        format!("{FAST}[release]\ncommand = [\"python3\", \"-c\", \"print('migration failed: no such table', flush=True); raise SystemExit(3)\"]\n"),
    )
    .unwrap();
    let image = format!("paas/{app}--production:v1");
    let since = unix_now();
    let out = p.paas(&["deploy", failing.path().to_str().unwrap(), "--app", &app, "--image", &image]);
    let out = out.expect_err("release command exited with 3");
    assert!(out.stderr.contains("migration failed: no such table"), "{}", out.stderr);
    let v2 = [format!("paas.app={app}"), "paas.release=2".to_string()];
    assert_eq!(created(&since, &v2), 1, "only the release command's container was created for v2");
    assert!(p.get(&p.host(&app), "/").body.contains("Hello from paas!"), "v1 keeps serving");

    // One-off runs: the release's image and config, output streamed, exit code passed on.
    p.paas(&["config", "set", "--app", &app, "GREETING=hey there"]).expect_ok();
    let out = p.paas(&[
        "run",
        "--app",
        &app,
        "--",
        "python3",
        "-c",
        "import os; print(os.environ['GREETING']); raise SystemExit(7)",
    ]);
    assert!(!out.ok && out.stdout.contains("hey there"), "{out:?}");
    let ok = p.paas(&["run", "--app", &app, "--", "python3", "-c", "print('fine')"]).expect_ok();
    assert_eq!(ok.stdout.trim(), "fine");
    let missing = p.paas(&["run", "--app", &app, "--", "no-such-program"]);
    assert!(!missing.ok && missing.stderr.contains("no-such-program"), "{missing:?}");
    p.paas(&["run", "--app", &app, "--env", "nope", "--", "true"]).expect_err("no environment named");
}

//! `[cron]` jobs end to end: a bad schedule is refused before upload, the serving release's jobs
//! run every minute in one-off containers with the app's config, their output lands in
//! `paas logs --process cron-NAME`, a failing or timed-out run is a warning event and shows in
//! `paas cron list`, and a restarted platform does not run a minute's job twice.

use paas_tests::Platform;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const JOBS: &str = r#"
[cron.tick]
schedule = "* * * * *"
command = ["sh", "-c", "echo tick at $(date -u +%H:%M) from v$PAAS_RELEASE with $GREETING"]

[cron.boom]
schedule = "* * * * *"
command = ["sh", "-c", "echo boom; exit 3"]

[cron.slow]
schedule = "* * * * *"
command = ["sleep", "600"]
timeout = "3s"

[cron.never]
schedule = "0 0 30 2 *"
command = ["true"]
"#;

fn cron_list(p: &Platform, app: &str) -> BTreeMap<String, Value> {
    let list = p.paas(&["cron", "list", "--app", app, "-o", "json"]).expect_ok().json();
    list.as_array().unwrap().iter().map(|j| (j["name"].as_str().unwrap().to_string(), j.clone())).collect()
}

/// The minutes (`HH:MM`) of the tick lines in the central log, in order.
fn tick_minutes(p: &Platform, app: &str) -> Vec<String> {
    let lines = p.logs(&["--app", app, "--process", "cron-tick", "-n", "1000"]);
    let texts: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
    texts.iter().filter_map(|t| t.strip_prefix("tick at ")?.split(' ').next().map(String::from)).collect()
}

fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn cron_jobs_run_each_minute_once_report_failures_and_log_their_output() {
    let mut p = Platform::start();
    let app = p.app_name("cron");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["config", "set", "--app", &app, "GREETING=hello-from-config"]).expect_ok();
    let src = paas_tests::example_copy("hello");
    let manifest = src.path().join("paas.toml");
    let base = std::fs::read_to_string(&manifest).unwrap();

    // A bad schedule is refused by the CLI before anything is uploaded.
    std::fs::write(
        &manifest,
        format!("{base}\n[cron.bad]\nschedule = \"61 * * * *\"\ncommand = [\"true\"]\n"),
    )
    .unwrap();
    let dir = src.path().to_str().unwrap();
    let bad = p.paas(&["deploy", dir, "--app", &app]);
    bad.expect_err("cron.bad.schedule: cron field 1 (minute) `61` is out of range 0-59");
    let none = p.paas(&["cron", "list", "--app", &app]).expect_ok().stdout;
    assert!(none.contains("has no scheduled jobs"), "{none}");

    std::fs::write(&manifest, format!("{base}{JOBS}")).unwrap();
    p.paas(&["deploy", dir, "--app", &app]).expect_ok();
    let jobs = cron_list(&p, &app);
    assert_eq!(jobs.keys().collect::<Vec<_>>(), ["boom", "never", "slow", "tick"]);
    assert_eq!(jobs["never"]["next_run"], Value::Null, "Feb 30 never comes");
    assert!(jobs["tick"]["next_run"].as_str().is_some_and(|t| t.ends_with(":00Z")), "{jobs:?}");
    let table = p.paas(&["cron", "list", "--app", &app]).expect_ok().stdout;
    assert!(table.contains("SCHEDULE (UTC)") && table.contains("* * * * *"), "{table}");

    // The first runs: output in the logs, with the app's config; failures say why.
    let first = wait_until("the first tick in the logs", Duration::from_secs(150), || {
        tick_minutes(&p, &app).first().cloned()
    });
    let lines = p.logs(&["--app", &app, "--process", "cron-tick"]);
    assert!(
        lines.iter().any(|l| l["text"].as_str().unwrap().ends_with("from v1 with hello-from-config")),
        "{lines:?}"
    );
    let jobs = wait_until("every job's first run to end", Duration::from_secs(60), || {
        let jobs = cron_list(&p, &app);
        let ended = |n: &str| jobs[n]["last_run"]["status"].as_str().is_some_and(|s| s != "running");
        (ended("tick") && ended("boom") && ended("slow")).then_some(jobs)
    });
    assert_eq!(jobs["tick"]["last_run"]["status"], "succeeded", "{:?}", jobs["tick"]);
    assert_eq!(jobs["boom"]["last_run"]["status"], "failed");
    assert_eq!(jobs["boom"]["last_run"]["exit_code"], 3);
    let slow = jobs["slow"]["last_run"]["error"].as_str().unwrap_or_default().to_string();
    assert!(slow.contains("still running after its timeout of 3s"), "{:?}", jobs["slow"]);
    assert_eq!(jobs["never"]["last_run"], Value::Null);
    let table = p.paas(&["cron", "list", "--app", &app]).expect_ok().stdout;
    assert!(table.contains("failed") && table.contains("(exit code 3)"), "{table}");

    let events = p.paas(&["events", "--app", &app]).expect_ok().stdout;
    assert!(events.contains("Cron job boom (v1) failed: exit code 3"), "{events}");
    assert!(events.contains("Cron job slow (v1) failed: it was still running"), "{events}");
    assert!(!events.contains("Cron job tick"), "a successful run is no event: {events}");

    // A restart within a minute looks at that minute again: what ran is not run twice.
    p.restart();
    let later = wait_until("a tick of a later minute", Duration::from_secs(150), || {
        let minutes = tick_minutes(&p, &app);
        minutes.iter().any(|m| *m != first).then_some(minutes)
    });
    let mut distinct = later.clone();
    distinct.dedup();
    assert_eq!(distinct, later, "a minute's tick ran twice: {later:?}");
}

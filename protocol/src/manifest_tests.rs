//! Tests of the `paas.toml` parser.

use super::*;

#[test]
fn an_empty_manifest_is_one_web_process_with_a_tcp_check() {
    let m = parse("", "production").unwrap();
    assert_eq!(m, Manifest::default());
    assert_eq!(m.web().unwrap().healthcheck.probe, Probe::Tcp);
}

#[test]
fn parses_processes_health_and_overrides() {
    let text = r#"
[processes.web]
command = ["python3", "app.py"]
port = 5000
replicas = 2
healthcheck = { path = "/healthz", interval = "500ms", unhealthy_threshold = 2, start_period = 3 }

[deploy]
stability_window = "1s"
drain_timeout = "5s"

[release]
command = ["python3", "migrate.py"]

[static]
dir = "/app/public"
max_age = "1h"

[env.staging.processes.web]
replicas = 1
"#;
    let prod = parse(text, "production").unwrap();
    let web = prod.web().unwrap();
    assert_eq!((web.port, web.replicas), (5000, 2));
    assert_eq!(web.healthcheck.probe, Probe::Http { path: "/healthz".into(), expect_status: None });
    assert_eq!(web.healthcheck.interval_ms, 500);
    assert_eq!(web.healthcheck.start_period_ms, 3000);
    assert_eq!(prod.deploy.stability_window_ms, 1000);
    assert_eq!(parse(text, "staging").unwrap().web().unwrap().replicas, 1);
    assert_eq!(prod.release_command, Some(vec!["python3".to_string(), "migrate.py".to_string()]));
    let st = prod.static_files.unwrap();
    assert_eq!((st.dir.as_str(), st.prefix.as_str(), st.max_age_secs), ("/app/public", "/static/", 3600));
    assert!(parse("[static]\ndir = \"public\"\n", "production").is_err());
}

#[test]
fn limits_have_defaults_and_can_be_set_per_process_and_environment() {
    let m = parse("", "production").unwrap();
    assert_eq!(m.web().unwrap().limits, Limits::default());
    assert_eq!(Limits::default().describe(), "512M, 1 CPU, 256 pids");
    let text = "[processes.web]\nmemory = \"1G\"\ncpus = 0.5\npids = 64\n\
                [env.staging.processes.web]\nmemory = \"256MiB\"\ncpus = 2\n";
    let l = parse(text, "production").unwrap().web().unwrap().limits;
    assert_eq!(l, Limits { memory_bytes: 1 << 30, millicpus: 500, pids: 64 });
    assert_eq!(l.describe(), "1G, 0.5 CPU, 64 pids");
    let l = parse(text, "staging").unwrap().web().unwrap().limits;
    assert_eq!(l, Limits { memory_bytes: 256 << 20, millicpus: 2000, pids: 64 });
    for (bad, why) in [
        ("memory = \"lots\"", "processes.web.memory"),
        ("memory = \"1M\"", "at least 16M"),
        ("cpus = 0", "processes.web.cpus"),
        ("pids = 2", "processes.web.pids"),
    ] {
        let e = parse(&format!("[processes.web]\n{bad}\n"), "production").unwrap_err();
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
    // A release stored before limits existed reads with the defaults.
    let old = r#"{"command":null,"port":8080,"replicas":1,"healthcheck":{"probe":{"type":"tcp"},
        "interval_ms":1,"timeout_ms":1,"healthy_threshold":1,"unhealthy_threshold":1,"start_period_ms":0}}"#;
    assert_eq!(serde_json::from_str::<ProcessSpec>(old).unwrap().limits, Limits::default());
}

#[test]
fn ingress_limits_have_defaults_and_can_be_set_per_environment() {
    let m = parse("", "production").unwrap();
    assert_eq!(m.ingress, IngressLimits::default());
    assert_eq!(m.ingress.max_body_bytes, 100 << 20);
    assert_eq!((m.ingress.max_concurrent, m.ingress.rate_per_sec), (1000, 0));
    let text = "[ingress]\nmax_body = \"10M\"\nmax_concurrent = 50\nrate_limit = 5\n\
                [env.staging.ingress]\nmax_body = 4096\nrate_limit = 20\nrate_burst = 100\n";
    let prod = parse(text, "production").unwrap().ingress;
    let want = IngressLimits {
        max_body_bytes: 10 << 20,
        max_concurrent: 50,
        rate_per_sec: 5,
        rate_burst: 5,
        ..Default::default()
    };
    assert_eq!(prod, want);
    let staging = parse(text, "staging").unwrap().ingress;
    assert_eq!(staging, IngressLimits { max_body_bytes: 4096, rate_per_sec: 20, rate_burst: 100, ..want });
    for (bad, why) in [
        ("max_body = \"huge\"", "ingress.max_body must be a size"),
        ("max_body = 10", "ingress.max_body must be a size"),
        ("max_concurrent = 0", "ingress.max_concurrent must be between"),
        ("rate_burst = 5", "ingress.rate_burst needs ingress.rate_limit"),
        ("rate_limit = 1\nrate_burst = 0", "ingress.rate_burst must be between"),
        ("hsts = \"forever\"", "ingress.hsts must be a duration"),
        ("hsts = \"10y\"", "ingress.hsts must be a duration"),
    ] {
        let e = parse(&format!("[ingress]\n{bad}\n"), "production").unwrap_err();
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
    let https = parse("[ingress]\nhttps_redirect = true\nhsts = \"365d\"\n", "production").unwrap().ingress;
    assert_eq!((https.https_redirect, https.hsts_max_age_secs), (true, 365 * 24 * 3600));
    // A release stored before these limits existed reads with the defaults.
    let mut old = serde_json::to_value(Manifest::default()).unwrap();
    old.as_object_mut().unwrap().remove("ingress");
    assert_eq!(serde_json::from_value::<Manifest>(old).unwrap().ingress, IngressLimits::default());
}

#[test]
fn durations_take_todays_forms_and_more() {
    let timeout =
        |v: &str| parse(&format!("[deploy]\ntimeout = {v}\n"), "production").map(|m| m.deploy.timeout_ms);
    for (v, ms) in [("90", 90_000), ("\"1500ms\"", 1500), ("\"2s\"", 2000), ("\" 2 s \"", 2000)] {
        assert_eq!(timeout(v).unwrap(), ms, "{v}");
    }
    for (v, ms) in
        [("\"1m\"", 60_000), ("\"1h\"", 3_600_000), ("\"1h 30m\"", 5_400_000), ("\"1m30s\"", 90_000)]
    {
        assert_eq!(timeout(v).unwrap(), ms, "{v}");
    }
    assert!(timeout("\"5\"").is_err() && timeout("\"-1s\"").is_err());
}

#[test]
fn errors_name_the_line_and_key() {
    let e = parse("[processes.web]\nport = \"eighty\"\n", "production").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.to_string().contains("paas.toml line 2"), "{e}");
    assert!(e.to_string().contains("expected a port number"), "{e}");
    let e = parse("[deploy]\ntimeout = \"soon\"\n", "production").unwrap_err();
    assert!(e.to_string().contains("deploy.timeout"), "{e}");
    for huge in ["\"99999999999999999999h\"", "\"18446744073709551615s\"", "9223372036854775807"] {
        let e = parse(&format!("[deploy]\ntimeout = {huge}\n"), "production").unwrap_err();
        assert!(e.to_string().contains("deploy.timeout must be a duration like"), "{huge}: {e}");
    }
    let e = parse("[processes.web]\nhealthcheck = { type = \"ping\" }\n", "production").unwrap_err();
    assert!(e.to_string().contains("processes.web.healthcheck.type"), "{e}");
    let e = parse("[procesess.web]\n", "production").unwrap_err();
    assert!(e.to_string().contains("unknown field"), "{e}");
}

#[test]
fn error_pages_are_files_of_the_static_directory() {
    let text = "[static]\ndir = \"/app/public\"\n[errors]\n503 = \"errors/busy.html\"\n5xx = \"oops.html\"\n";
    let st = parse(text, "production").unwrap().static_files.unwrap();
    assert_eq!(error_page(&st.errors, 503), Some("errors/busy.html"));
    assert_eq!(error_page(&st.errors, 502), Some("oops.html"));
    assert_eq!(error_page(&st.errors, 429), None);
    let no_static = parse("[errors]\n503 = \"busy.html\"\n", "production").unwrap_err();
    assert!(no_static.message.contains("add [static]"), "{no_static}");
    for (bad, why) in [
        ("404 = \"a.html\"", "answers only"),
        ("500 = \"a.html\"", "answers only"),
        ("503 = \"/etc/passwd\"", "inside the static directory"),
        ("503 = \"../secret\"", "inside the static directory"),
        ("503 = \"a//b.html\"", "inside the static directory"),
        ("503 = \"\"", "inside the static directory"),
    ] {
        let text = format!("[static]\ndir = \"/app/public\"\n[errors]\n{bad}\n");
        let e = parse(&text, "production").unwrap_err();
        assert!(e.message.contains(why), "{bad}: {e}");
    }
}

#[test]
fn cron_jobs_parse_with_environment_overrides_and_clear_errors() {
    let text = r#"
[cron.cleanup]
schedule = "*/10 * * * *"
command = ["python3", "cleanup.py"]

[cron.report]
schedule = "0 3 * * MON"
command = ["python3", "report.py"]
timeout = "10m"

[env.staging.cron.report]
enabled = false

[env.staging.cron.cleanup]
schedule = "@hourly"
"#;
    let prod = parse(text, "production").unwrap();
    assert_eq!(prod.cron.len(), 2);
    assert_eq!(prod.cron["report"].schedule, "0 3 * * mon");
    assert_eq!(prod.cron["report"].timeout_secs, 600);
    assert_eq!(prod.cron["cleanup"].timeout_secs, 3600);
    let staging = parse(text, "staging").unwrap();
    assert_eq!(staging.cron.keys().collect::<Vec<_>>(), ["cleanup"]);
    assert_eq!(staging.cron["cleanup"].schedule, "@hourly");
    assert_eq!(staging.cron["cleanup"].command, ["python3", "cleanup.py"]);
    // Stored releases from before [cron] read back with none.
    let mut json = serde_json::to_value(Manifest::default()).unwrap();
    assert!(json.get("cron").is_none());
    json.as_object_mut().unwrap().remove("cron");
    assert!(serde_json::from_value::<Manifest>(json).unwrap().cron.is_empty());

    let err = |t: &str| parse(t, "production").unwrap_err().to_string();
    assert_eq!(
        err("[cron.x]\nschedule = \"61 * * * *\"\ncommand = [\"true\"]\n"),
        "paas.toml: cron.x.schedule: cron field 1 (minute) `61` is out of range 0-59"
    );
    assert!(err("[cron.x]\ncommand = [\"true\"]\n").contains("cron.x.schedule is missing"));
    assert!(err("[cron.x]\nschedule = \"@daily\"\ncommand = []\n").contains("cron.x.command must be"));
    assert!(err("[cron.X]\nschedule = \"@daily\"\ncommand = [\"a\"]\n").contains("cron job"));
    assert!(err("[cron.x]\nschedule = \"@daily\"\ncommand = [\"a\"]\ntimeout = \"2d\"\n")
        .contains("between 1s and 24h"));
    assert!(parse("[env.staging.cron.y]\nenabled = false\n", "staging")
        .unwrap_err()
        .to_string()
        .contains("env.staging.cron.y overrides a job that is not defined"));
    assert!(err("[cron.x]\nschedule = \"@daily\"\ncommand = [\"a\"]\nevery = 1\n").contains("unknown field"));
}

#[test]
fn reservations_have_small_defaults_stay_within_the_limits_and_read_back_on_old_releases() {
    let m = parse("", "production").unwrap();
    assert_eq!(m.web().unwrap().reserve, default_reserve());
    let m = parse("[processes.web]\nreserve_memory = \"256M\"\nreserve_cpus = 0.25\n", "production").unwrap();
    let r = m.web().unwrap().reserve;
    assert_eq!((r.memory_bytes, r.millicpus), (256 << 20, 250));
    // A lowered limit lowers the default reservation with it; a reservation past a limit is refused.
    let m = parse("[processes.web]\nmemory = \"16M\"\n", "production").unwrap();
    assert_eq!(m.web().unwrap().reserve.memory_bytes, 16 << 20);
    let err = |t: &str| parse(t, "production").unwrap_err().to_string();
    assert!(err("[processes.web]\nreserve_memory = \"1G\"\n").contains("more than its memory limit"));
    assert!(err("[processes.web]\nreserve_cpus = 2\n").contains("more than its cpus limit"));
    assert!(err("[processes.web]\nreserve_cpus = -1\n").contains("from 0 to 256"));
    assert!(err("[processes.web]\nreserve_memory = \"lots\"\n").contains("reserve_memory must be a size"));
    // Releases stored before reservations get the defaults.
    let mut json = serde_json::to_value(Manifest::default()).unwrap();
    json["processes"]["web"].as_object_mut().unwrap().remove("reserve");
    assert_eq!(serde_json::from_value::<Manifest>(json).unwrap().web().unwrap().reserve, default_reserve());
}

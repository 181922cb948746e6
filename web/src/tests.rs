//! Router-level tests: every template renders with fixture data (a template error fails here),
//! controls follow the role, and the console's script and style stay small and self-hosted.

use super::*;
use serde_json::json;

fn base(role_deploy: bool, admin: bool) -> tera::Context {
    let mut ctx = tera::Context::new();
    ctx.insert("user", "ann");
    ctx.insert("csrf", "c5rf");
    ctx.insert("nav", "apps");
    ctx.insert("version", "0.0.0");
    ctx.insert("platform_admin", &admin);
    ctx.insert("can_deploy", &role_deploy);
    ctx.insert("can_admin", &admin);
    ctx.insert("can_create", &admin);
    ctx.insert("flash", &json!({"ok": false, "text": "the image <x> was not found"}));
    ctx
}

fn env_summary() -> serde_json::Value {
    json!({"name": "production", "hostname": "hello.localhost", "url": "http://hello.localhost:8080/",
        "current_release": 3, "target_release": null, "status": "running", "replicas": 2,
        "healthy_replicas": 2, "maintenance": false,
        "last_deploy": {"version": 3, "by": "ann", "at": "2026-01-01T00:00:00.5Z", "took_secs": 14}})
}

fn app_context(can_deploy: bool) -> tera::Context {
    let mut ctx = base(can_deploy, false);
    let release = |v: u32, status: &str| {
        json!({"app": "hello", "env": "production", "version": v, "status": status, "source": "hello:1",
            "image_id": "sha256:1", "created_at": "2026-01-01T00:00:00Z", "created_by": "ann", "error": null,
            "description": "Deploy of image hello:1", "config_keys": ["GREETING"],
            "manifest": {"processes": {"web": {"command": null, "port": 8080, "replicas": 2}}}})
    };
    ctx.insert("app", "hello");
    ctx.insert("env", &env_summary());
    ctx.insert("envs", &[env_summary()]);
    ctx.insert("other_envs", &["staging"]);
    ctx.insert("path", "/apps/hello/production");
    ctx.insert("role", "deployer");
    ctx.insert("revealed", &false);
    ctx.insert("releases", &[release(3, "active"), release(2, "superseded")]);
    ctx.insert(
        "processes",
        &[json!({"process": "web", "replica": 1, "release": 3, "state": "running",
        "healthy": true, "node": "n1", "restarts": 0, "cpu": "1.5%", "memory": "12.0 MiB"})],
    );
    ctx.insert("formation", &[("web", 2)]);
    ctx.insert("config", &json!({"vars": {"GREETING": "hi", "DATABASE_URL": "postgres://u:****@db/x"}}));
    ctx.insert("log_filter", &json!({"process": "", "source": "", "grep": "", "since": ""}));
    ctx.insert("logs", &[json!({"at": "2026-01-01T00:00:01Z", "source": "app", "process": "web", "replica": 1, "text": "<b>listening</b>"})]);
    ctx.insert("log_cursor", &7);
    ctx.insert("log_dropped", &0);
    let view = protocol::metrics::MetricsView {
        since: 1000,
        series: vec![protocol::metrics::SeriesView {
            metric: "http_requests_per_second".into(),
            labels: Default::default(),
            unit: "per_second".into(),
            step_secs: 10,
            points: vec![(1000, 1.0), (1010, 3.0)],
        }],
    };
    ctx.insert("charts", &chart::app_charts(&view, 1100));
    ctx.insert("range", "1h");
    ctx.insert("ranges", &["1h", "24h", "7d"]);
    ctx.insert("db", &json!({"version": 16, "max_connections": 100, "backup_schedule": "0 3 * * *",
        "next_backup_at": null, "keep": 7, "keep_days": 30, "warnings": ["no verified backup"],
        "primary": {"name": "p", "node": "n1", "state": "running", "healthy": true,
            "figures": {"connections": 3, "size_bytes": 8000000}},
        "replica": {"name": "r", "node": "n1", "state": "running", "healthy": true, "figures": {"lag_bytes": 0}}}));
    ctx.insert(
        "backups",
        &[json!({"id": "b1", "trigger": "manual", "status": "stored", "error": null,
        "size_bytes": 4096, "tables": {"notes": 2}, "started_at": "2026-01-01T00:00:00Z",
        "verification": "ok", "verification_error": null})],
    );
    ctx.insert("task", &json!({"id": "t1", "status": "done", "target_database": "hello_restore", "target_url": "postgres://x"}));
    ctx.insert(
        "events",
        &[json!({"at": "2026-01-01T00:00:00Z", "severity": "info", "message": "Deployed v3", "by": "ann"})],
    );
    ctx.insert("domains", &[json!({"domain": "www.example.com", "app": "hello", "env": "production", "tls": "local",
        "cert_expires": "2027-01-01T00:00:00Z", "dns": "Point www.example.com at 203.0.113.1 (an A record).", "created_at": "x"})]);
    ctx.insert("problems", &Vec::<String>::new());
    ctx
}

#[test]
fn every_page_renders_and_escapes() {
    let tera = templates().unwrap();
    let html = tera.render("app.html", &app_context(true)).unwrap();
    for needle in [
        "Roll back to v2",
        "web×2 :8080",
        "Scale web",
        "id=\"deploy-form\"",
        "Reveal values",
        "Restore in place",
        "<svg",
        "GREETING",
        "an A record",
        "Remove www.example.com",
        "domain-form",
        "upload-form",
    ] {
        assert!(html.contains(needle), "the app page shows {needle:?}");
    }
    assert!(html.contains("&lt;b&gt;listening") && !html.contains("<b>listening"), "log text is escaped");
    assert!(html.contains("the image &lt;x&gt;"), "the flash message is escaped");

    let mut dash = base(true, true);
    dash.insert("apps", &[json!({"name": "hello", "created_at": "x", "envs": [env_summary()]})]);
    dash.insert(
        "nodes",
        &[json!({"name": "n1", "private_addr": "10.0.0.1", "ingress": true, "status": "ready",
        "last_seen": "now", "disk": {"images": 1048576, "volumes": 0}, "replicas": 3,
        "capacity": {"millicpus": 2000, "memory_bytes": 1073741824}, "allocated": {"millicpus": 15, "memory_bytes": 100663296}})],
    );
    dash.insert("node_figures", &json!({"n1": {"cpu": "12.5%", "memory": "40.0%", "disk": "71.0%"}}));
    dash.insert(
        "alerts",
        &[json!({"rule": "node-disk", "subject": "node=n1", "description": "disk above 80%", "since": "x", "silenced": false})],
    );
    dash.insert("events", &[json!({"at": "x", "app": "hello", "env": "production", "severity": "info", "message": "Deployed", "by": ""})]);
    let html = tera.render("dashboard.html", &dash).unwrap();
    for needle in [
        "hello.localhost",
        "v3 by ann, ",
        "2026-01-01 00:00:00 UTC",
        "took 14 s",
        "node-disk",
        "71.0%",
        "1.0 MiB",
        "Create app",
        "data-live-url",
    ] {
        assert!(html.contains(needle), "the dashboard shows {needle:?}: {html}");
    }

    let mut release = base(true, false);
    release.insert("app", "hello");
    release.insert("env_name", "production");
    release.insert("path", "/apps/hello/production");
    release.insert("done", &false);
    release.insert("deploy", &json!({"next": 2, "url": "http://hello.localhost/", "events": [{"kind": "stage", "text": "Starting web.1"}],
        "release": {"version": 4, "status": "deploying", "description": "Deploy", "created_by": "ann", "created_at": "x", "error": null}}));
    assert!(tera.render("release.html", &release).unwrap().contains("Starting web.1"));

    let mut settings = base(true, true);
    settings.insert("tokens", &[json!({"id": "t1", "name": "ci", "created_at": "x", "expires_at": null})]);
    settings.insert("users", &[json!({"name": "bob", "grants": [{"app": "hello", "role": "viewer"}], "password": true, "totp": false})]);
    settings.insert(
        "targets",
        &[json!({"id": "n1", "kind": "email", "target": "ops@example.com", "app": null, "deploys": true})],
    );
    settings.insert("rules", &[json!({"id": "node-cpu", "description": "CPU above 80%", "app": null, "env": null, "enabled": true, "silenced_until": null})]);
    settings.insert("alerts", &[json!({"rule": "node-cpu", "subject": "node=n1", "state": "resolved", "since": "x", "resolved_at": "y"})]);
    settings.insert("audit", &[json!({"at": "x", "user": "ann", "action": "deploy.create", "detail": "", "app": "hello", "env": "production", "addr": "127.0.0.1", "outcome": "ok"})]);
    let html = tera.render("settings.html", &settings).unwrap();
    for needle in [
        "viewer of hello",
        "ops@example.com",
        "Silence",
        "deploy.create",
        "Create token",
        "Set role of bob",
        "Send a test message",
    ] {
        assert!(html.contains(needle), "settings show {needle:?}");
    }
    let mut token = base(false, false);
    token.insert("title", "Your new API token");
    token.insert("name", "ci");
    token.insert("secret", "paas_abc");
    token.insert("hint", "Copy it now");
    assert!(tera.render("token.html", &token).unwrap().contains("paas_abc"));
    let mut login = tera::Context::new();
    login.insert("error", "the API token is not valid");
    login.insert("csrf", "c");
    login.insert("version", "0");
    assert!(tera.render("login.html", &login).unwrap().contains("not valid"));
    let mut err = tera::Context::new();
    err.insert("message", "boom");
    err.insert("version", "0");
    assert!(tera.render("error.html", &err).unwrap().contains("boom"));
}

#[test]
fn a_viewer_gets_no_controls_that_change_anything() {
    let tera = templates().unwrap();
    let html = tera.render("app.html", &app_context(false)).unwrap();
    for control in [
        "upload-form",
        "domain-form",
        "/domains/remove",
        "db-settings",
        "/deploy\"",
        "/rollback\"",
        "/scale\"",
        "/config\"",
        "/maintenance\"",
        "/promote\"",
        "/db/backup\"",
        "/db/restore\"",
        "/db/verify\"",
        "Reveal values",
    ] {
        assert!(!html.contains(control), "a viewer sees no {control:?}");
    }
    // Still reads everything.
    for needle in ["GREETING", "<svg", "listening", "b1", "www.example.com"] {
        assert!(html.contains(needle), "a viewer reads {needle:?}");
    }
    let mut settings = base(false, false);
    settings.insert("rules", &[json!({"id": "node-cpu", "description": "CPU", "enabled": true})]);
    let html = tera.render("settings.html", &settings).unwrap();
    assert!(
        !html.contains("/settings/users")
            && !html.contains("/settings/notify\"")
            && !html.contains("Silence")
    );
    let mut dash = base(false, false);
    dash.insert("apps", &Vec::<String>::new());
    assert!(!tera.render("dashboard.html", &dash).unwrap().contains("action=\"/apps\""));
}

#[test]
fn script_and_style_stay_in_budget_and_load_nothing_from_elsewhere() {
    assert!(SCRIPT.len() + STYLE.len() < 30 * 1024, "{} bytes", SCRIPT.len() + STYLE.len());
    for (name, text) in TEMPLATES {
        for bad in ["src=\"http", "src=\"//", "href=\"//", "@import", "url(http", "<script>", "style=\""] {
            assert!(!text.contains(bad), "{name} holds {bad:?}");
        }
        for tag in text.match_indices("<link ") {
            assert!(text[tag.0..].starts_with("<link rel=\"stylesheet\" href=\"/static/"), "{name}");
        }
    }
    for bad in ["http://", "https://", "//cdn", "eval("] {
        assert!(!SCRIPT.contains(bad) && !STYLE.contains(bad), "static files hold {bad:?}");
    }
}

#[test]
fn roles_are_read_from_grants() {
    use protocol::access::{Grant, Role};
    let grants =
        vec![Grant { app: "a".into(), role: Role::Viewer }, Grant { app: "*".into(), role: Role::Deployer }];
    assert_eq!(role_on(&grants, "a"), Some(Role::Deployer));
    assert_eq!(role_on(&grants[..1], "b"), None);
}

#[tokio::test]
async fn odd_names_in_paths_never_reach_the_api() {
    use tower::ServiceExt;
    let config =
        WebConfig { api_url: "http://127.0.0.1:9".into(), console_key: "k".into(), secure_cookies: false };
    let app = router(config).unwrap();
    for path in
        ["/apps/..%2Fusers/production", "/apps/a/..", "/apps/A%20B", "/apps/a/prod%2F..%2F..%2Fnodes/scale"]
    {
        let method = if path.ends_with("scale") { "POST" } else { "GET" };
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("cookie", "paas_session=s")
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // A valid name goes on (to an API that is not there: one sentence, 502).
    let req = axum::http::Request::builder()
        .uri("/apps/ok/production")
        .header("cookie", "paas_session=s")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(app.oneshot(req).await.unwrap().status(), StatusCode::BAD_GATEWAY);
}

/// WCAG relative luminance of `#rrggbb`.
fn luminance(hex: &str) -> f64 {
    let hex = hex.trim_start_matches('#');
    let channel = |i: usize| {
        let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
        if c <= 0.03928 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(0) + 0.7152 * channel(2) + 0.0722 * channel(4)
}

fn contrast(a: &str, b: &str) -> f64 {
    let (x, y) = (luminance(a), luminance(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

#[test]
fn every_text_colour_meets_wcag_aa_on_its_background() {
    let mut checked = 0;
    for rule in STYLE.split('}') {
        let Some((selector, body)) = rule.split_once('{') else { continue };
        let selector = selector.rsplit(['/', '\n']).next().unwrap_or(selector).trim();
        let value = |prop: &str| {
            body.split(';').find_map(|d| {
                let (k, v) = d.split_once(':')?;
                let v = v.trim();
                match (k.trim() == prop, v.len()) {
                    (true, 7) if v.starts_with('#') => Some(v.to_string()),
                    // `#fff` is `#ffffff`.
                    (true, 4) if v.starts_with('#') => Some(v.chars().flat_map(|c| [c, c]).skip(1).collect()),
                    _ => None,
                }
            })
        };
        let Some(fg) = value("color") else { continue };
        // A rule's own background, else the page's, the header's or the log box's.
        let bg = value("background").unwrap_or_else(|| {
            if selector.starts_with("header") {
                "#12355b".into()
            } else if selector.contains(".log") {
                "#111111".into()
            } else {
                "#ffffff".into()
            }
        });
        let ratio = contrast(&fg, &bg);
        assert!(ratio >= 4.5, "{selector}: {fg} on {bg} is {ratio:.2}:1, under AA's 4.5:1");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} colours found");
    // The chart lines and axis labels, drawn on the chart's #fafafa.
    for colour in ["#1f5fa8", "#a8431f", "#2e7d32", "#6a1b9a", "#8d6e00", "#00695c", "#333333"] {
        assert!(contrast(colour, "#fafafa") >= 4.5, "{colour}");
    }
}

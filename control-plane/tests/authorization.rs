//! The authorization matrix, generated from the router's own route list: every API route is
//! called by every role, on an app the caller holds a role on and on another team's app, and
//! must answer as the expected table below says. A route added without an entry here fails the
//! test. Also: no call answers 5xx, revoked tokens stop at once, sign-in failures are limited,
//! and every change lands in the audit log under the right user.

#[allow(dead_code)] // The helpers this file does not use serve the controller tests.
mod common;

use common::{DataDir, Plane};
use protocol::access::{Login, Role};
use protocol::Client;
use std::collections::BTreeMap;

/// Who may call each route, written independently of the code's own rules.
fn expected() -> BTreeMap<(&'static str, &'static str), &'static str> {
    let db = "/apps/{app}/envs/{env}/db";
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut m = BTreeMap::new();
    for (method, path, who) in [
        ("POST", "/login".to_string(), "public"),
        ("POST", "/sessions".into(), "public"),
        ("DELETE", "/sessions/current".into(), "signed"),
        ("GET", "/whoami".into(), "signed"),
        ("GET", "/apps".into(), "signed"),
        ("POST", "/apps".into(), "platform"),
        ("GET", "/apps/{app}".into(), "viewer"),
        ("DELETE", "/apps/{app}".into(), "admin"),
        ("POST", "/apps/{app}/envs".into(), "admin"),
        ("DELETE", "/apps/{app}/envs/{env}".into(), "admin"),
        ("POST", "/apps/{app}/envs/{env}/swap".into(), "deployer"),
        ("GET", "/apps/{app}/envs/{env}/config".into(), "viewer"),
        ("POST", "/apps/{app}/envs/{env}/config".into(), "deployer"),
        ("POST", "/apps/{app}/envs/{env}/promote".into(), "deployer"),
        ("PUT", "/apps/{app}/envs/{env}/maintenance".into(), "deployer"),
        ("POST", "/apps/{app}/envs/{env}/deploys".into(), "deployer"),
        ("GET", "/apps/{app}/envs/{env}/releases".into(), "viewer"),
        ("GET", "/apps/{app}/envs/{env}/releases/{version}/events".into(), "viewer"),
        ("GET", "/apps/{app}/envs/{env}/processes".into(), "viewer"),
        ("GET", "/apps/{app}/envs/{env}/logs".into(), "viewer"),
        ("GET", "/apps/{app}/envs/{env}/logs/stream".into(), "viewer"),
        ("GET", "/apps/{app}/logs/retention".into(), "viewer"),
        ("PUT", "/apps/{app}/logs/retention".into(), "admin"),
        ("POST", "/apps/{app}/envs/{env}/rollback".into(), "deployer"),
        ("POST", "/apps/{app}/envs/{env}/restart".into(), "deployer"),
        ("POST", "/apps/{app}/envs/{env}/scale".into(), "deployer"),
        ("POST", "/apps/{app}/envs/{env}/runs".into(), "deployer"),
        ("GET", "/apps/{app}/envs/{env}/runs/{id}".into(), "deployer"),
        ("GET", "/apps/{app}/envs/{env}/runs/{id}/attach".into(), "deployer"),
        ("GET", "/apps/{app}/envs/{env}/cron".into(), "viewer"),
        ("POST", "/apps/{app}/envs/{env}/processes/{process}/restart".into(), "deployer"),
        ("GET", db.into(), "viewer"),
        ("POST", db.into(), "admin"),
        ("POST", format!("{db}/settings"), "admin"),
        ("POST", format!("{db}/failover"), "admin"),
        ("POST", format!("{db}/rotate-credentials"), "admin"),
        ("GET", format!("{db}/backups"), "viewer"),
        ("POST", format!("{db}/backups"), "deployer"),
        ("GET", format!("{db}/backups/{{id}}"), "viewer"),
        ("GET", format!("{db}/backups/{{id}}/data"), "deployer"),
        ("POST", format!("{db}/backups/{{id}}/verify"), "deployer"),
        ("POST", format!("{db}/restores"), "admin"),
        ("POST", format!("{db}/imports"), "admin"),
        ("POST", format!("{db}/psql"), "deployer"),
        ("POST", format!("{db}/psql/attach"), "deployer"),
        ("GET", format!("{db}/tasks/{{id}}"), "deployer"),
        ("GET", "/events".into(), "signed"),
        ("GET", "/nodes".into(), "platform"),
        ("GET", "/platform/state-backups".into(), "platform"),
        ("POST", "/platform/state-backups".into(), "platform"),
        ("POST", "/nodes/{node}/prune".into(), "platform"),
        ("POST", "/nodes/{node}/drain".into(), "platform"),
        ("POST", "/nodes/{node}/undrain".into(), "platform"),
        ("POST", "/nodes/tokens".into(), "platform"),
        ("DELETE", "/nodes/{node}".into(), "platform"),
        ("GET", "/users".into(), "platform"),
        ("POST", "/users".into(), "platform"),
        ("GET", "/users/{user}".into(), "platform"),
        ("DELETE", "/users/{user}".into(), "platform"),
        ("POST", "/users/{user}/password".into(), "platform"),
        ("POST", "/users/{user}/grants".into(), "platform"),
        ("DELETE", "/users/{user}/grants/{grant}".into(), "platform"),
        ("DELETE", "/users/{user}/totp".into(), "platform"),
        ("POST", "/me/totp".into(), "signed"),
        ("GET", "/tokens".into(), "signed"),
        ("POST", "/tokens".into(), "signed"),
        ("DELETE", "/tokens/{token}".into(), "signed"),
        ("POST", "/tokens/rotate-admin".into(), "platform"),
        ("GET", "/audit".into(), "signed"),
        ("GET", "/apps/{app}/domains".into(), "viewer"),
        ("POST", "/apps/{app}/domains".into(), "deployer"),
        ("DELETE", "/apps/{app}/domains/{domain}".into(), "deployer"),
        ("GET", "/apps/{app}/drains".into(), "viewer"),
        ("POST", "/apps/{app}/drains".into(), "deployer"),
        ("DELETE", "/apps/{app}/drains".into(), "deployer"),
        ("DELETE", "/apps/{app}/drains/{id}".into(), "deployer"),
        ("GET", "/apps/{app}/envs/{env}/metrics".into(), "viewer"),
        ("GET", "/nodes/metrics".into(), "platform"),
        ("GET", "/metrics/scrape-token".into(), "platform"),
        ("GET", "/alerts".into(), "signed"),
        ("GET", "/alerts/rules".into(), "signed"),
        ("PUT", "/alerts/rules/{rule}".into(), "platform"),
        ("POST", "/alerts/rules".into(), "platform"),
        ("DELETE", "/alerts/rules/{rule}".into(), "platform"),
        ("POST", "/alerts/rules/{rule}/silence".into(), "platform"),
        ("DELETE", "/alerts/rules/{rule}/silence".into(), "platform"),
        ("GET", "/notify".into(), "platform"),
        ("POST", "/notify".into(), "platform"),
        ("DELETE", "/notify/{id}".into(), "platform"),
        ("POST", "/notify/test".into(), "platform"),
    ] {
        m.insert((method, leak(path)), who);
    }
    m
}

/// The users of the matrix: a role on app A (or on every app), or none.
const ROLES: [(&str, Option<(&str, Role)>); 5] = [
    ("nobody", None),
    ("viewer-a", Some(("A", Role::Viewer))),
    ("deployer-a", Some(("A", Role::Deployer))),
    ("admin-a", Some(("A", Role::Admin))),
    ("platform", Some(("*", Role::Admin))),
];

fn rank(who: &str) -> u8 {
    match who {
        "nobody" => 0,
        "viewer-a" | "viewer" => 1,
        "deployer-a" | "deployer" => 2,
        "admin-a" | "admin" => 3,
        "platform" => 4,
        other => panic!("no rank for {other}"),
    }
}

struct Call {
    status: u16,
    body: String,
}

async fn call(url: &str, token: Option<&str>, method: &str, path: &str) -> Call {
    let http = reqwest::Client::new();
    let mut req =
        http.request(method.parse().unwrap(), format!("{url}/api/v1{path}")).json(&serde_json::json!({}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("the API answers");
    let status = resp.status().as_u16();
    Call { status, body: body_of(resp).await }
}

/// A response's text; a live stream (server-sent events) is not read: it does not end.
async fn body_of(resp: reqwest::Response) -> String {
    let streaming =
        resp.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        return String::new();
    }
    resp.text().await.unwrap_or_default()
}

fn fill(path: &str, app: &str) -> String {
    path.replace("{app}", app)
        .replace("{env}", "production")
        .replace("{version}", "1")
        .replace("{id}", "nonexistent")
        .replace("{node}", "no-such-node")
        .replace("{user}", "no-such-user")
        .replace("{grant}", "no-such-app")
        .replace("{token}", "no-such-token")
        .replace("{domain}", "no-such.example.com")
        .replace("{process}", "web")
}

#[tokio::test]
async fn every_route_answers_every_role_as_the_matrix_says() {
    let dir = DataDir::new();
    let p = Plane::start(&dir).await;
    let (a, b) = (
        format!("a{:06x}", rand::random::<u32>() & 0xffffff),
        format!("b{:06x}", rand::random::<u32>() & 0xffffff),
    );
    p.api.create_app(&a).await.unwrap();
    p.api.create_app(&b).await.unwrap();

    // The route list and the table agree: no route without an expectation, none left over.
    let rules = paas_control_plane::http::api();
    let listed: Vec<(String, String)> =
        rules.rules().iter().map(|r| (r.method.to_string(), r.path.clone())).collect();
    let table = expected();
    for (m, path) in &listed {
        assert!(
            table.contains_key(&(m.as_str(), path.as_str())),
            "route {m} {path} has no entry in the matrix"
        );
    }
    assert_eq!(listed.len(), table.len(), "the matrix lists routes the router does not have");

    // One user per role, each with a token of their own from a password sign-in.
    let mut tokens = BTreeMap::new();
    for (name, grant) in ROLES {
        p.api.add_user(name, Some("correct horse battery".into())).await.unwrap();
        if let Some((app, role)) = grant {
            let app = if app == "A" { a.as_str() } else { "*" };
            p.api.grant(name, app, role).await.unwrap();
        }
        let login =
            Login { user: name.into(), password: "correct horse battery".into(), ..Default::default() };
        tokens.insert(name, Client::new(p.api.base(), "").login(&login).await.unwrap().token);
    }

    // App and environment deletion last: the calls after them still find the grants.
    let mut order: Vec<_> = table.iter().collect();
    order.sort_by_key(|((m, path), _)| match (*m, path.rsplit('/').next()) {
        ("DELETE", Some("{env}")) => 1,
        ("DELETE", Some("{app}")) => 2,
        _ => 0,
    });
    for ((method, path), who) in order {
        if *who == "public" {
            let c = call(p.api.base(), None, method, path).await;
            assert!(c.status < 500, "{method} {path} anonymous: {}", c.status);
            continue;
        }
        let anonymous = call(p.api.base(), None, method, &fill(path, &a)).await;
        assert_eq!(anonymous.status, 401, "{method} {path} without a token: {}", anonymous.body);
        for (name, _) in ROLES {
            let token = tokens[name].as_str();
            for (app, own) in [(b.as_str(), false), (a.as_str(), true)] {
                if !path.contains("{app}") && !own {
                    continue;
                }
                let c = call(p.api.base(), Some(token), method, &fill(path, app)).await;
                // 503 is the domain's "no node to run it on" (this test runs no agent), never a fault.
                assert!(
                    c.status < 500 || c.status == 503,
                    "{method} {path} as {name} on {app}: {} {}",
                    c.status,
                    c.body
                );
                let allowed = match *who {
                    "signed" => true,
                    "platform" => name == "platform",
                    need => name == "platform" || (own && rank(name) >= rank(need)),
                };
                if allowed {
                    assert!(
                        ![401, 403].contains(&c.status),
                        "{method} {path} as {name} on {app} should be allowed: {} {}",
                        c.status,
                        c.body
                    );
                } else {
                    assert_eq!(c.status, 403, "{method} {path} as {name} on {app}: {}", c.body);
                    assert!(c.body.contains("role"), "the refusal says which role is missing: {}", c.body);
                }
            }
        }
    }
    p.stop().await;
}

#[tokio::test]
async fn viewers_stay_read_only_tokens_revoke_at_once_and_the_audit_log_names_users() {
    let dir = DataDir::new();
    let p = Plane::start(&dir).await;
    let app = format!("shop{:06x}", rand::random::<u32>() & 0xffffff);
    p.api.create_app(&app).await.unwrap();
    let mut change = protocol::api::ConfigChange::default();
    change.set.insert("SECRET".to_string(), "hunter2".to_string());
    p.api.change_config(&app, "production", &change).await.unwrap();

    for (name, role) in [("vera", Role::Viewer), ("dan", Role::Deployer)] {
        p.api.add_user(name, Some("correct horse battery".into())).await.unwrap();
        p.api.grant(name, &app, role).await.unwrap();
    }
    let login = |user: &str| Login {
        user: user.into(),
        password: "correct horse battery".into(),
        ..Default::default()
    };
    let anon = Client::new(p.api.base(), "");
    let vera = Client::new(p.api.base(), anon.login(&login("vera")).await.unwrap().token);
    let dan_token = anon.login(&login("dan")).await.unwrap().token;
    let dan = Client::new(p.api.base(), &dan_token);

    // The viewer reads masked values and may not reveal them; the deployer may.
    let masked = vera.config(&app, "production", false).await.unwrap();
    assert_eq!(masked.vars["SECRET"], "****");
    let refused = vera.config(&app, "production", true).await.unwrap_err();
    assert_eq!(refused.status, Some(403), "{refused}");
    assert!(refused.message.contains("deployer"), "{refused}");
    assert_eq!(dan.config(&app, "production", true).await.unwrap().vars["SECRET"], "hunter2");
    // Nor run commands, nor restore.
    let run = vera.run(&app, "production", vec!["true".into()]).await.unwrap_err();
    assert_eq!(run.status, Some(403), "{run}");

    // A named token works until it is revoked, then at once not.
    let ci = dan.create_token("ci", Some(3600)).await.unwrap();
    let ci_client = Client::new(p.api.base(), &ci.token);
    assert_eq!(ci_client.whoami().await.unwrap().user, "dan");
    assert!(dan.tokens(None, false).await.unwrap().iter().any(|t| t.name == "ci" && t.expires_at.is_some()));
    dan.revoke_token("ci").await.unwrap();
    assert_eq!(ci_client.whoami().await.unwrap_err().status, Some(401));
    // A deployer cannot list or revoke other users' tokens.
    assert_eq!(dan.tokens(Some("vera"), false).await.unwrap_err().status, Some(403));

    // Sign-in failures are limited per user: the sixth wrong password in a row is refused
    // with 429 even before the password is checked.
    let mut wrong = login("vera");
    wrong.password = "not the password".into();
    for _ in 0..5 {
        assert_eq!(anon.login(&wrong).await.unwrap_err().status, Some(401));
    }
    let limited = anon.login(&login("vera")).await.unwrap_err();
    assert_eq!(limited.status, Some(429), "{limited}");

    // The audit log names who did what.
    let entries = p.api.audit(Some(&app), None).await.unwrap();
    let has = |user: &str, action: &str, outcome: &str| {
        entries.iter().any(|e| e.user == user && e.action == action && e.outcome.starts_with(outcome))
    };
    assert!(has("dan", "config.reveal", "ok"), "{entries:#?}");
    assert!(has("vera", "run", "denied"), "{entries:#?}");
    assert!(has("admin", "config.change", "ok"), "{entries:#?}");
    // Viewers see their app's log; a user with no role on it sees none of it.
    assert!(!vera.audit(Some(&app), None).await.unwrap().is_empty());
    p.api.add_user("eve", Some("correct horse battery".into())).await.unwrap();
    let eve = Client::new(p.api.base(), anon.login(&login("eve")).await.unwrap().token);
    assert!(eve.audit(Some(&app), None).await.unwrap().is_empty());
    assert!(eve.list_apps().await.unwrap().is_empty(), "apps without a role are not listed");
    p.stop().await;
}

#[tokio::test]
async fn a_second_factor_is_asked_for_once_enabled() {
    let dir = DataDir::new();
    let p = Plane::start(&dir).await;
    p.api.add_user("tess", Some("correct horse battery".into())).await.unwrap();
    let anon = Client::new(p.api.base(), "");
    let mut login =
        Login { user: "tess".into(), password: "correct horse battery".into(), ..Default::default() };
    let tess = Client::new(p.api.base(), anon.login(&login).await.unwrap().token);
    let setup = tess.enable_totp().await.unwrap();
    assert!(setup.url.starts_with("otpauth://totp/"), "{}", setup.url);

    // Without the code, and with a wrong one, the password alone no longer signs in.
    let without = anon.start_session(&login).await.unwrap_err();
    assert_eq!(without.status, Some(401));
    assert!(without.message.contains("one-time code"), "{without}");
    login.code = Some("000000".into());
    assert_eq!(anon.login(&login).await.unwrap_err().status, Some(401));
    // The current code does.
    let secret = totp_rs::Secret::Encoded(setup.secret).to_bytes().unwrap();
    let totp = totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, secret, None, "tess".into()).unwrap();
    login.code = Some(totp.generate_current().unwrap());
    let session = anon.start_session(&login).await.unwrap();
    assert_eq!(Client::new(p.api.base(), &session.id).whoami().await.unwrap().user, "tess");
    // An admin can turn it off for a user who lost their device.
    p.api.disable_totp("tess").await.unwrap();
    login.code = None;
    anon.login(&login).await.unwrap();
    p.stop().await;
}

/// Bodies a hostile or careless client might send.
fn odd_bodies() -> Vec<String> {
    let long = "x".repeat(100_000);
    vec![
        String::new(),
        "null".into(),
        "[]".into(),
        "\"string\"".into(),
        "{\"name\": 5}".into(),
        "{\"name\": \"../../etc\", \"app\": \"*\", \"role\": \"root\"}".into(),
        format!("{{\"name\": \"{long}\", \"password\": \"{long}\"}}"),
        "{\"command\": [\"\"], \"replicas\": -1, \"processes\": {\"web\": 4294967296}}".into(),
        "{\"set\": {\"\": \"x\", \"A=B\": \"y\"}, \"unset\": [\"\\u0000\"]}".into(),
        "{\"image\": \"\\u0000\", \"version\": 18446744073709551615}".into(),
        "{\"backup\": \"..\", \"to\": \"nowhere\", \"ttl_secs\": 18446744073709551615}".into(),
        "{\"user\": \"admin\", \"password\": \"\", \"token\": \"\"}".into(),
        "not json at all {".into(),
    ]
}

/// Fills path parameters with odd values: traversal, unicode, very long, percent-encoded.
fn odd_fill(path: &str, i: usize) -> String {
    let odd = ["%2e%2e", "%00", "%C3%A9t%C3%A9", &"a".repeat(300), "*", "-", "1e9", "18446744073709551616"];
    let v = odd[i % odd.len()];
    path.split('/').map(|part| if part.starts_with('{') { v } else { part }).collect::<Vec<_>>().join("/")
}

#[tokio::test]
async fn no_route_answers_a_fault_to_odd_input() {
    let dir = DataDir::new();
    let p = Plane::start(&dir).await;
    let app = format!("f{:06x}", rand::random::<u32>() & 0xffffff);
    p.api.create_app(&app).await.unwrap();
    let token = std::fs::read_to_string(dir.0.join("admin-token")).unwrap().trim().to_string();
    // No kept-alive connections: one the server closed after a refused body is not reused.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let api = paas_control_plane::http::api();
    let mut calls = 0;
    for rule in api.rules() {
        if rule.path == "/tokens/rotate-admin" {
            continue; // it works, and would change the token this test calls with
        }
        for (i, body) in odd_bodies().into_iter().enumerate() {
            let path = if i % 2 == 0 { fill(&rule.path, &app) } else { odd_fill(&rule.path, i) };
            let resp = http
                .request(rule.method.clone(), format!("{}/api/v1{path}", p.api.base()))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                // A route that answers without reading a large body closes the connection
                // under the client's feet: an answer, not a fault.
                Err(_) if body.len() > 10_000 => continue,
                Err(e) => panic!("{} {path}: {e}", rule.method),
            };
            let status = resp.status().as_u16();
            let text = body_of(resp).await;
            assert!(
                status != 500 && status != 502,
                "{} {path} with {:.80}: {status} {text}",
                rule.method,
                body
            );
            calls += 1;
        }
    }
    assert!(calls > 500, "{calls} calls");
    // Still serving, and the app is still there.
    p.api.whoami().await.unwrap();
    p.stop().await;
}

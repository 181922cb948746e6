//! Users, roles, tokens and the audit log through the real binaries: an admin adds a viewer,
//! who signs in with a password (`paas login --user`), reads but may not reveal config, run
//! or `git push`; named tokens are made and revoked (a revoked one fails at once); the admin
//! token is rotated; the console's sign-in sets a session cookie (not the token) with its
//! flags, refuses a form without its CSRF value, limits failed sign-ins, and its sign-out ends
//! the session on the server. Every change shows in `paas audit` under the right user.

use paas_tests::{git, http, Platform, Run};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const PASSWORD: &str = "correct horse battery";

/// `paas ARGS` as the platform's admin, with `input` on standard input.
fn paas_stdin(p: &Platform, config: Option<&Path>, args: &[&str], input: &str) -> Run {
    let mut cmd = Command::new(paas_tests::paas_bin());
    cmd.args(args).env("XDG_CONFIG_HOME", p.dir.path().join("config")).env_remove("PAAS_TOKEN");
    if let Some(c) = config {
        cmd.env("PAAS_CONFIG", c);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap().into()
}

fn cookie_value(headers: &str, name: &str) -> Option<(String, String)> {
    headers.lines().find_map(|l| {
        let rest = l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: "))?;
        let (kv, flags) = rest.split_once(';').unwrap_or((rest, ""));
        let value = kv.strip_prefix(&format!("{name}="))?;
        Some((value.trim().to_string(), flags.to_string()))
    })
}

#[test]
fn a_viewer_reads_but_cannot_reveal_run_or_push_and_the_audit_log_names_everyone() {
    let mut p = Platform::start();
    let app = p.app_name("team");
    p.paas(&["apps", "create", &app]).expect_ok();
    p.paas(&["config", "set", "--app", &app, "SECRET=hunter2"]).expect_ok();

    // The admin adds a viewer, with a password sent on standard input.
    paas_stdin(&p, None, &["users", "add", "vera", "--password-stdin"], &format!("{PASSWORD}\n")).expect_ok();
    p.paas(&["users", "grant", "vera", "viewer", "--app", &app]).expect_ok();
    let list = p.paas(&["users", "list"]).expect_ok().stdout;
    assert!(list.contains("vera") && list.contains(&format!("viewer on {app}")), "{list}");
    p.paas(&["users", "grant", "vera", "owner", "--app", &app]).expect_err("not a role");

    // She signs in with her password into a CLI config of her own.
    let vera_config = p.dir.path().join("vera.toml");
    let server = p.api_url.clone();
    let login = ["login", "--server", &server, "--user", "vera", "--password-stdin"];
    paas_stdin(&p, Some(&vera_config), &login, "wrong password\n").expect_err("wrong");
    let out = paas_stdin(&p, Some(&vera_config), &login, &format!("{PASSWORD}\n")).expect_ok();
    assert!(out.stdout.contains("as vera"), "{out:?}");
    let vera = |args: &[&str]| p.paas_env(args, &[("PAAS_CONFIG", vera_config.to_str().unwrap())]);

    // Reads yes, secrets and changes no.
    assert!(vera(&["apps", "list"]).expect_ok().stdout.contains(&app));
    let masked = vera(&["config", "list", "--app", &app]).expect_ok().stdout;
    assert!(masked.contains("SECRET") && !masked.contains("hunter2"), "{masked}");
    vera(&["config", "list", "--app", &app, "--reveal"]).expect_err("deployer");
    vera(&["config", "set", "--app", &app, "X=1"]).expect_err("deployer");
    vera(&["run", "--app", &app, "--", "env"]).expect_err("deployer");
    vera(&["users", "list"]).expect_err("admin");

    // Her push is refused with a sentence, before anything is received.
    let repo = paas_tests::example_copy("hello");
    git(repo.path(), &["init", "-q"]).expect_ok();
    git(repo.path(), &["add", "-A"]).expect_ok();
    git(repo.path(), &["commit", "-qm", "first"]).expect_ok();
    let remote = p.paas(&["git-remote", "--app", &app]).expect_ok().stdout.trim().to_string();
    let vera_token = paas_tests::config_token(&vera_config);
    let as_vera = remote.replacen("http://", &format!("http://vera:{vera_token}@"), 1);
    let push = git(repo.path(), &["push", &as_vera, "main"]);
    assert!(!push.ok && push.stderr.contains("deployer"), "a viewer's push is refused with why: {push:?}");

    // A named token works until revoked, and then not at all.
    let ci = vera(&["tokens", "create", "ci", "--ttl", "1h"]).expect_ok();
    let ci_token = ci.stdout.trim().to_string();
    assert!(ci_token.starts_with("paas_") && ci.stderr.contains("not shown again"), "{ci:?}");
    let as_ci = |args: &[&str]| p.paas_env(args, &[("PAAS_TOKEN", ci_token.as_str())]);
    as_ci(&["apps", "list"]).expect_ok();
    let tokens = vera(&["tokens", "list"]).expect_ok().stdout;
    assert!(tokens.contains("ci") && tokens.contains("login@"), "{tokens}");
    vera(&["tokens", "revoke", "ci"]).expect_ok();
    as_ci(&["apps", "list"]).expect_err("not valid");

    // Rotating the admin token: the old one stops, the CLI config gets the new one.
    let old_admin = p.token();
    let rotated = p.paas(&["tokens", "rotate-admin"]).expect_ok().stdout.trim().to_string();
    assert_ne!(rotated, old_admin);
    p.paas(&["apps", "list"]).expect_ok();
    p.paas_env(&["apps", "list"], &[("PAAS_TOKEN", old_admin.as_str())]).expect_err("not valid");
    let kept = std::fs::read_to_string(p.dir.path().join("data/admin-token")).unwrap();
    assert_eq!(kept.trim(), rotated, "the data directory holds the new admin token");

    // The audit log: who did what, with the outcome.
    let audit = p.paas(&["audit", "--output", "json"]).expect_ok().json();
    let has = |user: &str, action: &str, outcome: &str| {
        audit.as_array().unwrap().iter().any(|e| {
            e["user"] == user && e["action"] == action && e["outcome"].as_str().unwrap().starts_with(outcome)
        })
    };
    for (user, action, outcome) in [
        ("admin", "user.add", "ok"),
        ("admin", "user.grant", "ok"),
        ("admin", "config.change", "ok"),
        ("vera", "signin", "denied"),
        ("vera", "signin", "ok"),
        ("vera", "config.change", "denied"),
        ("vera", "run", "denied"),
        ("vera", "token.create", "ok"),
        ("vera", "token.revoke", "ok"),
        ("admin", "token.rotate-admin", "ok"),
    ] {
        assert!(has(user, action, outcome), "no {user} {action} {outcome} in {audit:#}");
    }
    let text = p.paas(&["audit", "--app", &app, "--since", "1h"]).expect_ok().stdout;
    assert!(text.contains("config.change") && !text.contains("token.create"), "{text}");
    p.paas(&["audit", "--since", "yesterday"]).expect_err("not a duration");

    // Removing her: her tokens go with her.
    p.paas(&["users", "remove", "vera"]).expect_err("--confirm vera");
    p.paas(&["users", "remove", "vera", "--confirm", "vera"]).expect_ok();
    vera(&["apps", "list"]).expect_err("not valid");
}

#[test]
fn console_sessions_have_their_own_ids_flags_csrf_limits_and_end_at_sign_out() {
    let p = Platform::start();
    let addr = p.api_url.trim_start_matches("http://").to_string();
    paas_stdin(&p, None, &["users", "add", "olga", "--password-stdin"], &format!("{PASSWORD}\n")).expect_ok();
    let form = "application/x-www-form-urlencoded";

    // The form comes with a CSRF value in a cookie and in the form.
    let page = http::get(&addr, "localhost", "/login");
    let (csrf, flags) = cookie_value(&page.headers, "paas_csrf").expect("a CSRF cookie");
    assert!(page.body.contains(&csrf) && flags.contains("HttpOnly") && flags.contains("SameSite=Strict"));
    let cookie = format!("paas_csrf={csrf}");
    let post = |body: &str, cookie: &str| {
        http::request(
            &addr,
            "POST",
            "localhost",
            "/login",
            &[("Content-Type", form), ("Cookie", cookie)],
            body,
        )
    };

    // Without the CSRF value, or with another one, the form is refused.
    let body = format!("user=olga&password={}", PASSWORD.replace(' ', "+"));
    assert_eq!(post(&body, &cookie).status, 403);
    assert_eq!(post(&format!("{body}&csrf=0000"), &cookie).status, 403);

    // Signed in: a session cookie that is not any token, with its flags.
    let signed = post(&format!("{body}&csrf={csrf}"), &cookie);
    assert_eq!(signed.status, 303, "{signed:?}");
    let (session, flags) = cookie_value(&signed.headers, "paas_session").expect("a session cookie");
    assert!(session.starts_with("paas_session_"), "{session}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(flags.contains(flag), "session cookie lacks {flag}: {flags}");
    }
    let who = |s: &str| {
        let auth = format!("Bearer {s}");
        http::request(&addr, "GET", "localhost", "/api/v1/whoami", &[("Authorization", &auth)], "")
    };
    assert_eq!(who(&session).status, 200);

    // Sign-out needs the page's CSRF value, and ends the session on the server.
    let cookies = format!("paas_session={session}");
    let apps = http::request(&addr, "GET", "localhost", "/", &[("Cookie", &cookies)], "");
    let logout_csrf =
        apps.body.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap();
    let logout = |body: &str| {
        http::request(
            &addr,
            "POST",
            "localhost",
            "/logout",
            &[("Content-Type", form), ("Cookie", &cookies)],
            body,
        )
    };
    assert_eq!(logout("csrf=wrong").status, 403);
    assert_eq!(who(&session).status, 200, "a refused sign-out leaves the session");
    assert_eq!(logout(&format!("csrf={logout_csrf}")).status, 303);
    assert_eq!(who(&session).status, 401, "signing out ends the session");

    // Wrong passwords: five are answered, then the sixth try is limited.
    for _ in 0..5 {
        assert_eq!(post(&format!("user=olga&password=nope&csrf={csrf}"), &cookie).status, 401);
    }
    let limited = post(&format!("{body}&csrf={csrf}"), &cookie);
    assert_eq!(limited.status, 429, "{limited:?}");
    assert!(limited.body.contains("too many"), "{}", limited.body);
}

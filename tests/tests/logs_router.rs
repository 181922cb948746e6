//! Router and build lines through the real binaries: a deploy's build output is in `paas logs
//! --source build`, and every request the ingress answers for the app has a router line with
//! its method, path, status, duration, bytes, the replica that answered and a request id the
//! client could not choose (the same one the client got back).

use paas_tests::Platform;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Polls `paas logs ARGS` until `done` holds for its lines (or fails after a minute).
fn wait_for_lines(p: &Platform, args: &[&str], done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = p.logs(args);
        if done(&lines) {
            return lines;
        }
        assert!(Instant::now() < deadline, "the lines did not arrive: {lines:#?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The value of response header `name` in a raw header block.
fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// The router line of the request to `path`.
fn router_line<'a>(lines: &'a [Value], path: &str) -> Option<&'a Value> {
    let field = format!(" path=\"{path}\" ");
    lines.iter().find(|l| l["text"].as_str().unwrap().contains(&field))
}

/// The number in `key=<number><unit>` of a router line.
fn number(text: &str, key: &str, unit: &str) -> u64 {
    let start =
        text.find(&format!(" {key}=")).unwrap_or_else(|| panic!("no {key} in {text}")) + key.len() + 2;
    let rest = &text[start..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert!(rest[digits.len()..].starts_with(unit), "{key} in {text}");
    digits.parse().unwrap_or_else(|_| panic!("{key} in {text}"))
}

#[test]
fn build_output_and_router_lines_reach_the_central_log() {
    let mut p = Platform::start();
    let app = p.app_name("router");
    p.paas(&["apps", "create", &app]).expect_ok();
    let src = paas_tests::example_copy("hello");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();

    // The build's output, as build lines of release 1.
    let build = wait_for_lines(&p, &["--app", &app, "--source", "build", "-n", "1000"], |lines| {
        lines.iter().any(|l| l["text"].as_str().unwrap().contains("FROM"))
    });
    for l in &build {
        assert_eq!(
            (&l["source"], &l["process"], &l["release"]),
            (&"build".into(), &"build".into(), &1.into()),
            "{l}"
        );
    }
    let text = p.paas(&["logs", "--app", &app, "--source", "build", "-n", "1"]).expect_ok().stdout;
    assert!(text.contains(" build[v1]: "), "{text}");

    // Requests through the ingress: one with a request id an outside client chose.
    let host = p.host(&app);
    let chosen = "client-chosen-request-id";
    let ok =
        paas_tests::http::request(&p.ingress, "GET", &host, "/?from=test", &[("X-Request-Id", chosen)], "");
    assert_eq!(ok.status, 200, "{}", ok.body);
    let id = header(&ok.headers, "x-request-id").expect("the client gets the request id back");
    assert_ne!(id, chosen);
    let missing = p.get(&host, "/no-such-page");
    assert_eq!(missing.status, 404);

    let router = wait_for_lines(&p, &["--app", &app, "--source", "router", "-n", "1000"], |lines| {
        router_line(lines, "/?from=test").is_some() && router_line(lines, "/no-such-page").is_some()
    });
    assert!(router.iter().all(|l| l["source"] == "router"));
    let line = router_line(&router, "/?from=test").unwrap();
    let text = line["text"].as_str().unwrap();
    assert!(text.starts_with("at=info method=GET path=\"/?from=test\" "), "{text}");
    assert!(text.contains(&format!(" host={host} ")), "{text}");
    assert!(text.contains(&format!(" request_id={id} ")) && !text.contains(chosen), "{text}");
    assert!(text.contains(" dyno=web.1 ") && text.contains(" status=200 "), "{text}");
    assert_eq!(number(text, "bytes", " "), ok.body.len() as u64, "{text}");
    number(text, "connect", "ms");
    number(text, "service", "ms");
    assert_eq!((&line["process"], &line["replica"], &line["release"]), (&"web".into(), &1.into(), &1.into()));
    let text = router_line(&router, "/no-such-page").unwrap()["text"].as_str().unwrap();
    assert!(text.contains(" status=404 ") && text.contains(" dyno=web.1 "), "{text}");

    // Text output names the router.
    let text = p.paas(&["logs", "--app", &app, "--source", "router", "-n", "1"]).expect_ok().stdout;
    assert!(text.contains(" router: at="), "{text}");
}

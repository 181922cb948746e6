//! Central logs through a real control plane on loopback: a fake agent ships batches over
//! mutual TLS (twice, as after a lost acknowledgement), and users read them back through the
//! API client the CLI uses, filtered, searched and followed; the store keeps its lines and
//! each node's position across a restart.

#[allow(dead_code)] // The helpers this file does not use serve the controller tests.
mod common;

use common::fake_agent::FakeAgent;
use common::{DataDir, Plane, ENV};
use protocol::logs::{LogBatch, LogPage, LogQuery, LogSource, LogStream, ShippedLine};
use std::time::{Duration, Instant};

const NODE: &str = "node-1";

fn line(seq: u64, second: u32, source: LogSource, process: &str, replica: u32, text: &str) -> ShippedLine {
    ShippedLine {
        seq,
        at: format!("2026-11-27T10:00:{second:02}.{seq:09}Z"),
        app: "shop".into(),
        env: ENV.into(),
        source,
        process: process.into(),
        replica,
        release: 1,
        stream: LogStream::Stdout,
        text: text.into(),
    }
}

/// Numbered lines from two web replicas, interleaved in time but shipped replica by replica,
/// then a router line and a platform line.
fn first_batch() -> LogBatch {
    let mut lines = Vec::new();
    for i in 0..5u32 {
        lines.push(line(
            lines.len() as u64 + 1,
            2 * i,
            LogSource::App,
            "web",
            1,
            &format!("web.1 says {}", 2 * i),
        ));
    }
    for i in 0..5u32 {
        let text = format!("web.2 says {}", 2 * i + 1);
        lines.push(line(lines.len() as u64 + 1, 2 * i + 1, LogSource::App, "web", 2, &text));
    }
    lines.push(line(11, 20, LogSource::Router, "router", 0, "GET /orders 200 12ms"));
    lines.push(line(12, 21, LogSource::Platform, "platform", 0, "deploy of v1 switched"));
    LogBatch { lines, ..Default::default() }
}

async fn read(p: &Plane, q: LogQuery) -> LogPage {
    p.api.logs("shop", ENV, &q).await.expect("reading the logs")
}

fn texts(page: &LogPage) -> Vec<&str> {
    page.lines.iter().map(|l| l.text.as_str()).collect()
}

#[tokio::test]
async fn shipped_lines_are_stored_once_and_read_back_filtered_searched_and_followed() {
    let dir = DataDir::new();
    let p = Plane::start(&dir).await;
    let agent = FakeAgent::join(&p.agent_url, &p.join_token().await, NODE).await;
    p.api.create_app("shop").await.expect("creating the app");

    // Sent twice, as an agent does when the first answer was lost.
    let batch = first_batch();
    let node = agent.client();
    assert_eq!(node.ship_logs(NODE, &batch).await.unwrap().through, 12);
    assert_eq!(node.ship_logs(NODE, &batch).await.unwrap().through, 12);

    let all = read(&p, LogQuery::default()).await;
    assert_eq!(all.lines.len(), 12, "each line once: {:#?}", texts(&all));
    let web: Vec<String> = (0..10).map(|i| format!("web.{} says {i}", i % 2 + 1)).collect();
    assert_eq!(texts(&all)[..10], web.iter().map(String::as_str).collect::<Vec<_>>()[..], "time order");
    assert_eq!(all.dropped, 0);
    assert!(all.lines.iter().all(|l| l.node == NODE));

    let newest = read(&p, LogQuery { n: Some(2), ..Default::default() }).await;
    assert_eq!(texts(&newest), ["GET /orders 200 12ms", "deploy of v1 switched"]);
    let router = read(&p, LogQuery { source: Some(LogSource::Router), ..Default::default() }).await;
    assert_eq!(texts(&router), ["GET /orders 200 12ms"]);
    let web_only = read(&p, LogQuery { process: Some("web".into()), ..Default::default() }).await;
    assert_eq!(web_only.lines.len(), 10);
    let found = read(&p, LogQuery { grep: Some("SAYS 7".into()), ..Default::default() }).await;
    assert_eq!(texts(&found), ["web.2 says 7"]);
    let span = LogQuery {
        since: Some("2026-11-27T10:00:03Z".into()),
        until: Some("2026-11-27T10:00:04.999Z".into()),
        ..Default::default()
    };
    assert_eq!(texts(&read(&p, span).await), ["web.2 says 3", "web.1 says 4"]);
    let recent = read(&p, LogQuery { since: Some("10m".into()), ..Default::default() }).await;
    assert!(recent.lines.is_empty(), "the lines are from another day");

    // Whatever the search text, the answer is lines or none, never a fault.
    for hostile in ["\"", "a OR", "NEAR(", "*", "'; DROP TABLE lines; --", "text:x", "^"] {
        let q = LogQuery { grep: Some(hostile.into()), ..Default::default() };
        p.api.logs("shop", ENV, &q).await.unwrap_or_else(|e| panic!("{hostile:?}: {e}"));
    }
    let bad = p.api.logs("shop", ENV, &LogQuery { n: Some(0), ..Default::default() }).await.unwrap_err();
    assert_eq!(bad.status, Some(422), "{bad}");
    assert!(bad.message.contains("from 1 to 5000"), "{bad}");
    let raw = reqwest::get(format!("{}/api/v1/apps/shop/envs/{ENV}/logs?since=soon", p.api.base())).await;
    assert_eq!(raw.unwrap().status().as_u16(), 401, "the route needs a token");
    let missing = p.api.logs("shop", "staging", &LogQuery::default()).await.unwrap_err();
    assert_eq!(missing.status, Some(404), "{missing}");

    // An app's own retention: tighter than the store's, checked, and back to the store's.
    let set =
        |age: Option<&str>, max_mib| protocol::logs::SetLogRetention { age: age.map(Into::into), max_mib };
    let r = p.api.set_log_retention("shop", &set(Some("3d"), Some(100))).await.unwrap();
    assert_eq!((r.age_secs, r.max_mib), (Some(3 * 86400), Some(100)));
    assert_eq!(p.api.log_retention("shop").await.unwrap().age_secs, Some(3 * 86400));
    let long = p.api.set_log_retention("shop", &set(Some("30d"), None)).await.unwrap();
    assert_eq!(long.age_secs, Some(long.store_age_secs), "never longer than the store's");
    for bad in [set(Some("soon"), None), set(Some("10s"), None), set(None, Some(0))] {
        let e = p.api.set_log_retention("shop", &bad).await.unwrap_err();
        assert_eq!(e.status, Some(422), "{e}");
    }
    let r = p.api.set_log_retention("shop", &set(None, None)).await.unwrap();
    assert_eq!((r.age_secs, r.max_mib), (None, None));
    assert_eq!(p.api.log_retention("nope").await.unwrap_err().status, Some(404));

    // A node ships only its own lines.
    let refused = node.ship_logs("node-2", &batch).await.unwrap_err();
    assert_eq!(refused.status, Some(403), "{refused}");

    // Follow: a waiting read answers as soon as a new line is stored.
    let cursor = all.cursor;
    let api = p.api.clone();
    let follower = tokio::spawn(async move {
        let q = LogQuery { after: Some(cursor), wait: Some(10), ..Default::default() };
        let started = Instant::now();
        (api.logs("shop", ENV, &q).await.expect("following"), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = LogBatch {
        lines: vec![line(13, 30, LogSource::App, "web", 3, "a new replica")],
        ..Default::default()
    };
    assert_eq!(node.ship_logs(NODE, &next).await.unwrap().through, 13);
    let (page, took) = follower.await.unwrap();
    assert_eq!(texts(&page), ["a new replica"]);
    assert!(took < Duration::from_secs(3), "the follower woke when the line came: {took:?}");
    // Nothing new: the wait runs out with an empty page and the same cursor.
    let q = LogQuery { after: Some(page.cursor), wait: Some(1), ..Default::default() };
    let empty = p.api.logs("shop", ENV, &q).await.unwrap();
    assert!(empty.lines.is_empty() && empty.cursor == page.cursor);

    // A restart keeps the lines and the node's position: the batch sent again adds nothing.
    p.stop().await;
    let p = Plane::start(&dir).await;
    agent.reconnect(&p.agent_url);
    assert_eq!(agent.client().ship_logs(NODE, &batch).await.unwrap().through, 13);
    assert_eq!(read(&p, LogQuery::default()).await.lines.len(), 13);
    p.stop().await;
}

/// Server-sent events read off a response until `want` events carrying data came (or 10 s).
async fn sse_events(
    resp: &mut reqwest::Response,
    buf: &mut String,
    want: usize,
) -> Vec<(String, String, String)> {
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while events.len() < want {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut kind, mut id, mut data) = (String::new(), String::new(), String::new());
            for field in block.lines() {
                if let Some(v) = field.strip_prefix("event: ") {
                    kind = v.into();
                } else if let Some(v) = field.strip_prefix("id: ") {
                    id = v.into();
                } else if let Some(v) = field.strip_prefix("data: ") {
                    data = v.into();
                }
            }
            if !data.is_empty() {
                events.push((kind, id, data));
            } else if !id.is_empty() {
                events.push(("cursor".into(), id, String::new()));
            }
        }
        if events.len() >= want {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the stream ended or stalled after {events:?}: {other:?}"),
        }
    }
    events
}

#[tokio::test]
async fn the_stream_sends_the_newest_lines_then_each_new_one_and_resumes_from_its_last_id() {
    let dir = DataDir::new();
    let p = Plane::start(&dir).await;
    let agent = FakeAgent::join(&p.agent_url, &p.join_token().await, NODE).await;
    p.api.create_app("shop").await.expect("creating the app");
    let node = agent.client();
    node.ship_logs(NODE, &first_batch()).await.unwrap();

    let web = LogQuery { n: Some(2), process: Some("web".into()), ..Default::default() };
    let mut resp = p.api.logs_stream("shop", ENV, &web, None).await.expect("opening the stream");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let first = sse_events(&mut resp, &mut buf, 3).await;
    let texts: Vec<String> = first[..2]
        .iter()
        .map(|(kind, _, data)| {
            assert_eq!(kind, "line");
            serde_json::from_str::<protocol::logs::LogEntry>(data).unwrap().text
        })
        .collect();
    assert_eq!(texts, ["web.1 says 8", "web.2 says 9"], "the newest two of the process");
    assert_eq!(first[2].0, "cursor");

    // A new line of the process arrives at once; one the filter leaves out moves the cursor only.
    let started = Instant::now();
    let more = LogBatch {
        lines: vec![
            line(13, 30, LogSource::Router, "router", 0, "GET / 200"),
            line(14, 31, LogSource::App, "web", 3, "a new replica"),
        ],
        ..Default::default()
    };
    node.ship_logs(NODE, &more).await.unwrap();
    let next = sse_events(&mut resp, &mut buf, 2).await;
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert_eq!(next[0].0, "line");
    assert!(next[0].2.contains("a new replica"), "{next:?}");
    let cursor: i64 = next[1].1.parse().unwrap();
    drop(resp);

    // Reconnecting with Last-Event-ID sends only what came since.
    let later = LogBatch {
        lines: vec![line(15, 32, LogSource::App, "web", 1, "after the reconnect")],
        ..Default::default()
    };
    node.ship_logs(NODE, &later).await.unwrap();
    let mut resp = p.api.logs_stream("shop", ENV, &web, Some(cursor)).await.unwrap();
    let mut buf = String::new();
    let resumed = sse_events(&mut resp, &mut buf, 1).await;
    assert!(resumed[0].2.contains("after the reconnect"), "{resumed:?}");

    // Errors come before the stream starts, as statuses with a sentence.
    let bad = p.api.logs_stream("shop", "staging", &web, None).await.unwrap_err();
    assert_eq!(bad.status, Some(404), "{bad}");
    let bad = p
        .api
        .logs_stream("shop", ENV, &LogQuery { n: Some(0), ..Default::default() }, None)
        .await
        .unwrap_err();
    assert_eq!(bad.status, Some(422), "{bad}");
    let raw = reqwest::get(format!("{}/api/v1/apps/shop/envs/{ENV}/logs/stream", p.api.base())).await;
    assert_eq!(raw.unwrap().status().as_u16(), 401, "the stream needs a token");
    drop(resp);
    p.stop().await;
}

#[tokio::test]
async fn lines_an_agent_could_not_keep_are_reported_with_the_page() {
    let dir = DataDir::new();
    let p = Plane::start(&dir).await;
    let agent = FakeAgent::join(&p.agent_url, &p.join_token().await, NODE).await;
    p.api.create_app("shop").await.unwrap();
    let before = read(&p, LogQuery::default()).await;
    let mut batch = LogBatch {
        lines: vec![line(1, 0, LogSource::App, "web", 1, "after the loss")],
        ..Default::default()
    };
    batch.dropped.push(protocol::logs::Dropped { app: "shop".into(), env: ENV.into(), lines: 40 });
    agent.client().ship_logs(NODE, &batch).await.unwrap();
    agent.client().ship_logs(NODE, &batch).await.unwrap();
    let follow = read(&p, LogQuery { after: Some(before.cursor), ..Default::default() }).await;
    assert_eq!((follow.lines.len(), follow.dropped), (1, 40));
    assert_eq!(read(&p, LogQuery::default()).await.dropped, 40);
    p.stop().await;
}

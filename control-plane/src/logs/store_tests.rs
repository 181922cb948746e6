//! The log store's rules: each (node, seq) once, `through` over gaps, time order, search that
//! no input can break, and retention that records what it removed.

use super::*;
use protocol::logs::{Dropped, LogBatch, LogSource, LogStream, ShippedLine};

const T0: i64 = 1_790_000_000_000_000_000;
const SEC: i64 = 1_000_000_000;

fn line(seq: u64, at: i64, process: &str, text: &str) -> ShippedLine {
    ShippedLine {
        seq,
        at: format_time(at),
        app: "shop".into(),
        env: "production".into(),
        source: LogSource::App,
        process: process.into(),
        replica: 1,
        release: 3,
        stream: LogStream::Stdout,
        text: text.into(),
    }
}

fn batch(lines: Vec<ShippedLine>) -> LogBatch {
    LogBatch { lines, ..Default::default() }
}

fn newest(n: u32) -> Filter {
    Filter { n, ..Filter::default() }
}

async fn texts(s: &LogStore, f: &Filter) -> Vec<String> {
    s.read("shop", "production", f).await.unwrap().lines.into_iter().map(|l| l.text).collect()
}

#[tokio::test]
async fn a_batch_sent_again_is_stored_once_and_its_losses_counted_once() {
    let s = LogStore::open_in_memory().await.unwrap();
    let mut b = batch((1..=3).map(|i| line(i, T0 + i as i64, "web", &format!("line {i}"))).collect());
    b.dropped.push(Dropped { app: "shop".into(), env: "production".into(), lines: 7 });
    assert_eq!(s.insert("n1", &b, T0).await.unwrap(), 3);
    assert_eq!(s.insert("n1", &b, T0).await.unwrap(), 3);
    // The same seqs from another node are other lines.
    assert_eq!(s.insert("n2", &batch(b.lines.clone()), T0).await.unwrap(), 3);
    assert_eq!(s.count().await.unwrap(), 6);
    let page = s.read("shop", "production", &newest(100)).await.unwrap();
    assert_eq!(page.lines.len(), 6);
    assert_eq!(page.dropped, 7, "the resent batch's losses are not counted again");
}

#[tokio::test]
async fn through_stops_at_a_gap_until_it_is_filled() {
    let s = LogStore::open_in_memory().await.unwrap();
    let l = |i| line(i, T0 + i as i64, "web", "x");
    assert_eq!(s.insert("n1", &batch(vec![l(1), l(2), l(4), l(5)]), T0).await.unwrap(), 2);
    assert_eq!(s.insert("n1", &batch(vec![l(3), l(4), l(5), l(6)]), T0).await.unwrap(), 6);
    assert_eq!(s.through("n1").await.unwrap(), 6);
    // Nothing new: the answer stays.
    assert_eq!(s.insert("n1", &batch(vec![]), T0).await.unwrap(), 6);
    // A batch that starts past the gap: the agent no longer has the lines in it.
    assert_eq!(s.insert("n1", &batch(vec![l(10), l(11)]), T0).await.unwrap(), 11);
    // An agent that starts again from 1 hears how far the store already is.
    assert_eq!(s.insert("n1", &batch(vec![l(1)]), T0).await.unwrap(), 11);
    assert_eq!(s.through("nobody").await.unwrap(), 0);
}

#[tokio::test]
async fn pages_hold_the_newest_lines_in_time_order_and_follow_from_the_cursor() {
    let s = LogStore::open_in_memory().await.unwrap();
    // Stored out of time order: two nodes' replicas interleave.
    let a = vec![line(1, T0 + 3 * SEC, "web", "c"), line(2, T0 + SEC, "web", "a")];
    let b = vec![line(1, T0 + 2 * SEC, "worker", "b"), line(2, T0 + 4 * SEC, "worker", "d")];
    s.insert("n1", &batch(a), T0).await.unwrap();
    s.insert("n2", &batch(b), T0).await.unwrap();
    assert_eq!(texts(&s, &newest(10)).await, ["a", "b", "c", "d"]);
    assert_eq!(texts(&s, &newest(2)).await, ["c", "d"]);
    let web = Filter { process: Some("web".into()), ..newest(10) };
    assert_eq!(texts(&s, &web).await, ["a", "c"]);
    let span = Filter { since: Some(T0 + 2 * SEC), until: Some(T0 + 3 * SEC), ..newest(10) };
    assert_eq!(texts(&s, &span).await, ["b", "c"]);
    let router = Filter { source: Some(LogSource::Router), ..newest(10) };
    assert!(texts(&s, &router).await.is_empty());

    let page = s.read("shop", "production", &newest(10)).await.unwrap();
    let follow = Filter { after: Some(page.cursor), ..newest(10) };
    assert!(s.read("shop", "production", &follow).await.unwrap().lines.is_empty());
    s.insert("n1", &batch(vec![line(3, T0, "web", "late")]), T0).await.unwrap();
    let next = s.read("shop", "production", &follow).await.unwrap();
    assert_eq!(next.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["late"]);
    assert!(next.cursor > page.cursor);
    // Another environment's lines are not this one's.
    assert!(s.read("shop", "staging", &newest(10)).await.unwrap().lines.is_empty());
}

#[tokio::test]
async fn search_finds_phrases_and_no_input_breaks_it() {
    let s = LogStore::open_in_memory().await.unwrap();
    let lines = ["GET /orders 200", "payment failed: card declined", "worker: Payment FAILED again"];
    let b =
        batch(lines.iter().enumerate().map(|(i, t)| line(i as u64 + 1, T0 + i as i64, "web", t)).collect());
    s.insert("n1", &b, T0).await.unwrap();
    let grep = |t: &str| Filter { grep: crate::logs::search_text(t).unwrap(), ..newest(10) };
    assert_eq!(texts(&s, &grep("payment failed")).await.len(), 2);
    assert_eq!(texts(&s, &grep("card")).await, ["payment failed: card declined"]);
    for hostile in [
        "\"",
        "'",
        "\"\"\"",
        "*",
        "a OR b",
        "NEAR(a b)",
        "text:x",
        "-x",
        "^x",
        "(",
        ")",
        "'; DROP TABLE lines; --",
        "\\",
        "%_",
        "ünïcödé ✓",
        "!!!",
        "a\"b AND c",
    ] {
        let f = grep(hostile);
        let page = s.read("shop", "production", &f).await;
        assert!(page.is_ok(), "{hostile:?}: {:?}", page.err());
    }
    assert_eq!(s.count().await.unwrap(), 3);
}

#[tokio::test]
async fn retention_removes_old_lines_then_the_oldest_over_the_cap_and_counts_them() {
    // Segments of two batches: space is freed a segment at a time.
    let s = LogStore::open_small(64 << 10).await.unwrap();
    let now = now_ns();
    let old = now - 8 * 24 * 3600 * SEC;
    let text = "y".repeat(400);
    let lines: Vec<_> = (1..=2000).map(|i| line(i, if i <= 100 { old } else { now }, "web", &text)).collect();
    for chunk in lines.chunks(100) {
        s.insert("n1", &batch(chunk.to_vec()), now).await.unwrap();
    }
    let cutoff = now - 7 * 24 * 3600 * SEC;

    let roomy = s.trim(cutoff, 1 << 40).await.unwrap();
    assert_eq!(roomy, Trimmed { by_age: 100, by_size: 0 });
    assert_eq!(s.count().await.unwrap(), 1900);
    // Aged-out lines show to whoever asks for their time, not to a plain read.
    assert_eq!(s.read("shop", "production", &newest(5000)).await.unwrap().dropped, 0);
    let back = Filter { since: Some(old - SEC), ..newest(5000) };
    assert_eq!(s.read("shop", "production", &back).await.unwrap().dropped, 100);

    let cap = s.used_bytes().await.unwrap() / 2;
    // A follower that has every line so far.
    let before = s.read("shop", "production", &Filter { after: Some(0), ..newest(5000) }).await.unwrap();
    assert_eq!((before.lines.len(), before.dropped), (1900, 0));
    let tight = s.trim(cutoff, cap).await.unwrap();
    assert!(tight.by_size > 0 && tight.by_age == 0, "{tight:?}");
    let left = s.count().await.unwrap();
    assert_eq!(left, 1900 - tight.by_size);
    assert!(left < 1900 * 6 / 10, "about half and a margin went: {left} left");
    // The oldest went first: the newest line is still there.
    let page = s.read("shop", "production", &newest(1)).await.unwrap();
    assert_eq!(page.lines[0].id, 2000);
    // The loss is shown: in the span of a read, and to the follower once.
    assert_eq!(s.read("shop", "production", &newest(5000)).await.unwrap().dropped, tight.by_size);
    s.insert("n1", &batch(vec![line(2001, now, "web", "new")]), now).await.unwrap();
    let follow = Filter { after: Some(before.cursor), ..newest(10) };
    let next = s.read("shop", "production", &follow).await.unwrap();
    assert_eq!((next.lines.len(), next.dropped), (1, tight.by_size));
    let again = Filter { after: Some(next.cursor), ..newest(10) };
    assert_eq!(s.read("shop", "production", &again).await.unwrap().dropped, 0);
}

#[tokio::test]
async fn ids_keep_growing_after_the_store_was_emptied() {
    let s = LogStore::open_in_memory().await.unwrap();
    s.insert("n1", &batch(vec![line(1, T0, "web", "a")]), T0).await.unwrap();
    s.trim(T0 + SEC, 1 << 40).await.unwrap();
    assert_eq!(s.count().await.unwrap(), 0);
    s.insert("n1", &batch(vec![line(2, T0 + 2 * SEC, "web", "b")]), T0).await.unwrap();
    let page = s.read("shop", "production", &Filter { after: Some(1), ..newest(10) }).await.unwrap();
    assert_eq!(page.lines.len(), 1);
}

#[tokio::test]
async fn lines_of_deleted_environments_are_left_out_and_a_deleted_app_forgotten() {
    let s = LogStore::open_in_memory().await.unwrap();
    let mut lines: Vec<ShippedLine> =
        (1..=4).map(|i| line(i, T0 + i as i64, "web", &format!("shop {i}"))).collect();
    lines[1].app = "gone".into();
    lines[2].app = "gone".into();
    let known: std::collections::HashSet<(String, String)> =
        [("shop".to_string(), "production".to_string())].into();
    // The left-out lines count as stored: the node's position moves past them.
    assert_eq!(s.insert_known("n1", &batch(lines).borrowed(), T0, Some(&known)).await.unwrap(), 4);
    assert_eq!(s.count().await.unwrap(), 2);
    assert_eq!(texts(&s, &newest(10)).await, ["shop 1", "shop 4"]);

    let more: Vec<ShippedLine> = (5..=6).map(|i| line(i, T0 + i as i64, "web", "more")).collect();
    s.insert("n1", &batch(more), T0).await.unwrap();
    let mut other = line(7, T0 + 7, "web", "another app");
    other.app = "other".into();
    s.insert("n1", &batch(vec![other]), T0).await.unwrap();
    assert_eq!(s.forget("shop", None).await.unwrap(), 4);
    assert!(texts(&s, &newest(10)).await.is_empty(), "a new app of the same name starts empty");
    assert_eq!(s.count().await.unwrap(), 1, "other apps keep theirs");
    // Lines stored after the deletion are the new app's.
    s.insert("n1", &batch(vec![line(8, T0 + 8, "web", "new app")]), T0).await.unwrap();
    assert_eq!(texts(&s, &newest(10)).await, ["new app"]);
}

#[tokio::test]
async fn an_apps_own_limits_trim_only_its_lines_and_count_them() {
    // A segment per batch, a batch per line: space is freed a segment at a time.
    let s = LogStore::open_small(1).await.unwrap();
    let now = T0 + 3600 * SEC;
    let mut lines: Vec<ShippedLine> =
        (1..=10).map(|i| line(i, T0 + i as i64 * 600 * SEC, "web", &"y".repeat(100))).collect();
    for l in lines.iter_mut().skip(5) {
        l.app = "other".into();
    }
    for l in lines {
        s.insert("n1", &batch(vec![l]), T0).await.unwrap();
    }
    // Half an hour for shop: its lines at 10 and 20 minutes go, at 30, 40 and 50 stay.
    s.set_app_limits("shop", Some(1800), None).await.unwrap();
    assert_eq!(s.app_limits("shop").await.unwrap(), (Some(1800), None));
    let t = s.trim_apps(now).await.unwrap();
    assert_eq!((t.by_age, t.by_size), (2, 0));
    assert_eq!(s.count().await.unwrap(), 8, "other apps keep theirs");
    // Room for about one line (a line of 100 bytes takes about 190 in its segment): the
    // oldest go first.
    s.set_app_limits("shop", None, Some(350)).await.unwrap();
    let t = s.trim_apps(now).await.unwrap();
    assert_eq!(t.by_size, 2);
    let page = s.read("shop", "production", &newest(10)).await.unwrap();
    assert_eq!(page.lines.len(), 1);
    assert!(page.dropped >= 2, "the loss is recorded: {}", page.dropped);
    s.set_app_limits("shop", None, None).await.unwrap();
    assert_eq!(s.app_limits("shop").await.unwrap(), (None, None));
}

#[tokio::test]
async fn a_store_opened_again_keeps_what_was_committed_and_cuts_off_an_interrupted_batch() {
    let dir = std::env::temp_dir().join(format!("paas-logs-reopen-{}-{}", std::process::id(), now_ns()));
    let s = LogStore::open(&dir).await.unwrap();
    for i in 1..=3 {
        s.insert("n1", &batch(vec![line(i, T0 + i as i64, "web", &format!("line {i}"))]), T0).await.unwrap();
    }
    let mut other = line(1, T0, "web", "staging line");
    other.env = "staging".into();
    s.insert("n2", &batch(vec![other]), T0).await.unwrap();
    s.forget("shop", Some("staging")).await.unwrap();
    drop(s);
    // A crash mid-batch: bytes past the committed end of a segment, a torn journal line and
    // a chain whose first batch was never committed.
    let chain = dir.join("chains/shop/production");
    let seg = std::fs::read_dir(&chain).unwrap().next().unwrap().unwrap().path();
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    std::io::Write::write_all(&mut f, b"half a record").unwrap();
    let mut j = std::fs::OpenOptions::new().append(true).open(dir.join("meta.jsonl")).unwrap();
    std::io::Write::write_all(&mut j, b"{\"t\":\"batch\",\"node\":\"n1\"").unwrap();
    std::fs::create_dir_all(dir.join("chains/shop/review")).unwrap();
    std::fs::write(dir.join("chains/shop/review/00000000000000000009.seg"), b"x").unwrap();

    let s = LogStore::open(&dir).await.unwrap();
    assert_eq!(texts(&s, &newest(10)).await, ["line 1", "line 2", "line 3"]);
    assert_eq!(s.through("n1").await.unwrap(), 3);
    assert_eq!(s.through("n2").await.unwrap(), 1);
    assert_eq!(s.count().await.unwrap(), 3, "the forgotten environment stays forgotten");
    assert!(!dir.join("chains/shop/review").exists(), "an uncommitted chain is removed");
    assert!(std::fs::metadata(&seg).unwrap().len() < 1000, "the torn tail is cut off");
    // Resent lines are not stored twice; new ones get ids past every earlier one.
    assert_eq!(s.insert("n1", &batch(vec![line(3, T0, "web", "again")]), T0).await.unwrap(), 3);
    s.insert("n1", &batch(vec![line(4, T0 + 4, "web", "line 4")]), T0).await.unwrap();
    let page = s.read("shop", "production", &newest(10)).await.unwrap();
    assert_eq!(
        page.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        ["line 1", "line 2", "line 3", "line 4"]
    );
    assert_eq!(page.lines[3].id, 5, "ids never go back (the staging line had 4)");
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn search_is_a_case_blind_substring_and_skips_nothing_across_segments() {
    let s = LogStore::open_small(4 << 10).await.unwrap();
    for i in 1..=300u64 {
        let text =
            if i % 100 == 0 { format!("ERROR order {i} failed") } else { format!("GET /item/{i} 200") };
        s.insert("n1", &batch(vec![line(i, T0 + i as i64 * SEC, "web", &text)]), T0).await.unwrap();
    }
    let grep = |t: &str, n| Filter { grep: Some(t.into()), ..newest(n) };
    assert_eq!(
        texts(&s, &grep("error order", 10)).await,
        ["ERROR order 100 failed", "ERROR order 200 failed", "ERROR order 300 failed"]
    );
    assert_eq!(texts(&s, &grep("item/15", 2)).await, ["GET /item/158 200", "GET /item/159 200"]);
    let since = Filter { since: Some(T0 + 250 * SEC), ..grep("failed", 10) };
    assert_eq!(texts(&s, &since).await, ["ERROR order 300 failed"]);
    let follow = Filter { after: Some(150), ..grep("failed", 10) };
    assert_eq!(texts(&s, &follow).await, ["ERROR order 200 failed", "ERROR order 300 failed"]);
}

//! Tests of lines pushed from no container (access log, build output): the writer spools them
//! beside the readers' lines, counts what a full queue dropped, and still ends at shutdown
//! while handles live on.

use super::*;
use protocol::logs::{Dropped, LogSource, LogStream};

fn line(source: LogSource, text: &str) -> ShippedLine {
    ShippedLine {
        seq: 0,
        at: now(),
        app: "a".into(),
        env: "production".into(),
        source,
        process: "web".into(),
        replica: 1,
        release: 3,
        stream: LogStream::Stdout,
        text: text.into(),
    }
}

#[test]
fn now_is_rfc3339_with_nanoseconds_like_dockers_timestamps() {
    let at = now();
    assert_eq!(at.len(), "2026-11-27T10:00:00.000000000Z".len(), "{at}");
    assert!(at.ends_with('Z') && at.as_bytes()[10] == b'T' && at.as_bytes()[19] == b'.', "{at}");
    assert!(tail::unix_secs(&at).is_some());
}

#[tokio::test]
async fn pushed_lines_are_spooled_and_the_writer_ends_with_the_readers_though_handles_live() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Mutex::new(Spool::open(dir.path(), 1 << 20).unwrap()));
    let (drains, _) = mpsc::unbounded_channel();
    let (pushed_tx, pushed) = mpsc::channel(2);
    let signals = Arc::new(Signals::new(drains, pushed_tx));
    let handle = LogHandle { inner: signals.clone() };
    // Two fit in the queue; the third finds it full and is counted, without waiting.
    handle.push(line(LogSource::Router, "first"));
    handle.push(line(LogSource::Build, "second"));
    handle.push(line(LogSource::Router, "third"));
    assert_eq!(handle.lost(), [(("a".to_string(), "production".to_string()), 1)].into());
    let (tx, rx) = mpsc::channel(10);
    let collected = Collected {
        container: "c-a".into(),
        cursor: spool::Cursor { at: "2026-11-27T10:00:00.000000001".into(), n: 1 },
        line: line(LogSource::App, "from a container"),
    };
    tx.send(collected).await.unwrap();
    let writer = tokio::spawn(write(spool.clone(), rx, pushed, signals.clone(), Arc::new(Notify::new())));
    // Shutdown: the readers' sender goes; the writer finishes though `handle` still lives.
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), writer).await.expect("the writer ended").unwrap();
    handle.push(line(LogSource::Router, "after shutdown: nowhere, and no panic"));

    let sent = lock(&spool).batch(100, 1 << 20).unwrap().unwrap().batch();
    let mut texts: Vec<&str> = sent.lines.iter().map(|l| l.text.as_str()).collect();
    texts.sort_unstable();
    assert_eq!(texts, ["first", "from a container", "second"]);
    assert_eq!(sent.dropped, [Dropped { app: "a".into(), env: "production".into(), lines: 1 }]);
    assert!(handle.lost().is_empty());
    assert_eq!(lock(&spool).cursor("c-a").map(|c| c.n), Some(1));
}

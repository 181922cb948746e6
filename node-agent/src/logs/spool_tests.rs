//! Tests of the log spool on a temporary directory: numbering across reopening, the cap and
//! its drop counts, acknowledgement, and what a crash can leave behind.

use super::*;
use protocol::logs::{LogSource, LogStream};

fn line(app: &str, text: &str) -> Collected {
    Collected {
        container: format!("c-{app}"),
        cursor: Cursor { at: format!("2026-11-27T10:00:00.{:09}", text.len()), n: 1 },
        line: ShippedLine {
            seq: 0,
            at: "2026-11-27T10:00:00.000000000Z".into(),
            app: app.into(),
            env: "production".into(),
            source: LogSource::App,
            process: "web".into(),
            replica: 1,
            release: 3,
            stream: LogStream::Stdout,
            text: text.into(),
        },
    }
}

fn numbered(app: &str, i: usize) -> Collected {
    let mut c = line(app, &format!("line {i:06} {}", "x".repeat(150)));
    c.cursor = Cursor { at: format!("2026-11-27T10:00:00.{i:09}"), n: 1 };
    c
}

fn seqs(p: &Pending) -> Vec<u64> {
    p.batch().lines.iter().map(|l| l.seq).collect()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn numbers_go_on_across_reopening_and_after_everything_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    for i in 0..3 {
        assert_eq!(spool.append(numbered("a", i)).unwrap(), i as u64 + 1);
    }
    spool.close().unwrap();
    drop(spool);

    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.append(numbered("a", 3)).unwrap(), 4);
    let sent = spool.batch(100, 1 << 20).unwrap().unwrap();
    assert_eq!(seqs(&sent), [1, 2, 3, 4]);
    assert_eq!(sent.batch().lines[3].text, numbered("a", 3).line.text);
    spool.ack(&sent, 4).unwrap();
    assert!(spool.batch(100, 1 << 20).unwrap().is_none());
    // Every segment is gone; the numbering lives on in the state.
    assert_eq!(files(dir.path()), ["state.json"]);
    drop(spool);

    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert!(spool.batch(100, 1 << 20).unwrap().is_none());
    assert_eq!(spool.append(numbered("a", 4)).unwrap(), 5);
    // The cursor of a forgotten line is kept in the state.
    assert_eq!(spool.cursor("c-a"), Some(numbered("a", 4).cursor));
}

#[test]
fn cursors_come_back_from_the_records_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.append(numbered("a", 0)).unwrap();
    spool.append(numbered("b", 1)).unwrap();
    spool.append(numbered("a", 2)).unwrap();
    spool.flush().unwrap();
    // A crash: no state written, nothing closed.
    std::mem::forget(spool);

    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(spool.cursor("c-a"), Some(numbered("a", 2).cursor));
    assert_eq!(spool.cursor("c-b"), Some(numbered("b", 1).cursor));
    assert_eq!(spool.cursor("c-other"), None);
}

#[test]
fn lines_never_flushed_are_lost_with_their_cursor_and_their_numbers_were_never_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.append(numbered("a", 0)).unwrap();
    spool.append(numbered("a", 1)).unwrap();
    let sent = spool.batch(100, 1 << 20).unwrap().unwrap();
    assert_eq!(seqs(&sent), [1, 2]);
    // Buffered, not flushed, then a kill -9.
    spool.append(numbered("a", 2)).unwrap();
    std::mem::forget(spool);

    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    // The cursor says line 2 was not taken, so it is read from Docker again...
    assert_eq!(spool.cursor("c-a"), Some(numbered("a", 1).cursor));
    // ...and gets number 3, which nobody saw before.
    assert_eq!(spool.append(numbered("a", 2)).unwrap(), 3);
    assert_eq!(seqs(&spool.batch(100, 1 << 20).unwrap().unwrap()), [1, 2, 3]);
}

#[test]
fn a_torn_last_record_is_cut_off_on_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    for i in 0..3 {
        spool.append(numbered("a", i)).unwrap();
    }
    spool.close().unwrap();
    drop(spool);
    let segment = dir.path().join(files(dir.path()).into_iter().find(|f| f.ends_with(".log")).unwrap());
    let whole = std::fs::metadata(&segment).unwrap().len();
    // The fourth record, half written when the agent was killed.
    let mut torn = serde_json::to_vec(&Record {
        line: ShippedLine { seq: 4, ..numbered("a", 3).line },
        container: "c-a".into(),
        cursor: numbered("a", 3).cursor,
    })
    .unwrap();
    torn.truncate(torn.len() / 2);
    OpenOptions::new().append(true).open(&segment).unwrap().write_all(&torn).unwrap();

    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), whole);
    assert_eq!(spool.cursor("c-a"), Some(numbered("a", 2).cursor));
    assert_eq!(spool.append(numbered("a", 3)).unwrap(), 4);
    let sent = spool.batch(100, 1 << 20).unwrap().unwrap();
    assert_eq!(seqs(&sent), [1, 2, 3, 4]);
    assert!(sent.batch().lines.iter().all(|l| l.text.starts_with("line ")));

    // A whole record that does not parse (zeros a power cut left) is cut off too.
    drop(spool);
    let before = std::fs::metadata(&segment).unwrap().len();
    OpenOptions::new().append(true).open(&segment).unwrap().write_all(&[0; 100]).unwrap();
    OpenOptions::new().append(true).open(&segment).unwrap().write_all(b"\n").unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), before);
    assert_eq!(spool.append(numbered("a", 4)).unwrap(), 5);
}

#[test]
fn a_full_spool_drops_its_oldest_lines_and_counts_them_per_app_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 64 * 1024;
    let mut spool = Spool::open(dir.path(), cap).unwrap();
    let total = 2000;
    for i in 0..total {
        spool.append(numbered(if i % 2 == 0 { "a" } else { "b" }, i)).unwrap();
        assert!(spool.bytes() <= cap, "{} bytes held", spool.bytes());
    }
    let on_disk: u64 = files(dir.path())
        .iter()
        .filter(|f| f.ends_with(".log"))
        .map(|f| std::fs::metadata(dir.path().join(f)).unwrap().len())
        .sum();
    assert!(on_disk <= cap, "{on_disk} bytes on disk");

    let mut shipped = Vec::new();
    let mut dropped: HashMap<String, u64> = HashMap::new();
    let first = spool.batch(usize::MAX, u64::MAX).unwrap().unwrap();
    assert_eq!(first.batch().forgotten_through, first.batch().lines[0].seq - 1);
    for d in &first.batch().dropped {
        assert_eq!(d.env, "production");
        *dropped.entry(d.app.clone()).or_default() += d.lines;
    }
    shipped.extend(seqs(&first));
    spool.ack(&first, first.last_seq).unwrap();
    // Held and dropped lines add up: none lost silently, none twice.
    let held = shipped.len() as u64;
    assert!(held > 100 && held < total as u64, "{held} lines held");
    assert_eq!(held + dropped.values().sum::<u64>(), total as u64);
    // Half of each app's lines were written, in turn: the drops are split evenly.
    assert!(dropped["a"].abs_diff(dropped["b"]) <= 1, "{dropped:?}");
    assert_eq!(shipped, ((total as u64 - held + 1)..=total as u64).collect::<Vec<_>>());

    // Acknowledged drop counts are not sent again; new ones are.
    let after = spool.batch(usize::MAX, u64::MAX).unwrap();
    assert!(after.is_none(), "{after:?}");
    drop(spool);
    let spool = Spool::open(dir.path(), cap).unwrap();
    assert_eq!(spool.unacknowledged(), 0);
}

#[test]
fn drop_counts_survive_a_restart_until_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 64 * 1024;
    let mut spool = Spool::open(dir.path(), cap).unwrap();
    for i in 0..1000 {
        spool.append(numbered("a", i)).unwrap();
    }
    let counted = spool.batch(1, u64::MAX).unwrap().unwrap().batch().dropped;
    assert_eq!(counted.len(), 1);
    std::mem::forget(spool);
    let mut spool = Spool::open(dir.path(), cap).unwrap();
    let sent = spool.batch(1, u64::MAX).unwrap().unwrap();
    assert_eq!(sent.batch().dropped, counted);
    // New drops while the batch is on its way are kept when it is acknowledged.
    for i in 1000..1400 {
        spool.append(numbered("a", i)).unwrap();
    }
    spool.ack(&sent, sent.last_seq).unwrap();
    let next = spool.batch(1, u64::MAX).unwrap().unwrap();
    assert_eq!(next.batch().dropped.len(), 1);
    assert!(next.batch().dropped[0].lines > 0 && next.batch().dropped[0].lines < 1000);
}

#[test]
fn acknowledged_lines_are_forgotten_and_their_segments_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    // Segments of 64 KiB (a sixteenth of the cap): 1000 lines take a few.
    for i in 0..1000 {
        spool.append(numbered("a", i)).unwrap();
    }
    let segments = |d: &Path| files(d).iter().filter(|f| f.ends_with(".log")).count();
    let before = segments(dir.path());
    assert!(before >= 3, "{before} segments");

    // Batches are bounded by lines and by bytes.
    let sent = spool.batch(300, 1 << 20).unwrap().unwrap();
    assert_eq!(seqs(&sent), (1..=300).collect::<Vec<_>>());
    assert!(sent.full);
    let by_bytes = spool.batch(10_000, 10 * 1024).unwrap().unwrap();
    assert!(by_bytes.batch().lines.len() < 100, "{} lines", by_bytes.batch().lines.len());
    assert!(by_bytes.full);
    assert!(!spool.batch(10_000, 1 << 20).unwrap().unwrap().full);

    // Through a part of the batch only: the rest comes again.
    spool.ack(&sent, 250).unwrap();
    let sent = spool.batch(300, 1 << 20).unwrap().unwrap();
    assert_eq!(seqs(&sent), (251..=550).collect::<Vec<_>>());
    spool.ack(&sent, 550).unwrap();
    assert!(segments(dir.path()) < before);
    let sent = spool.batch(300, 1 << 20).unwrap().unwrap();
    assert_eq!(sent.batch().lines[0].seq, 551);

    // Reopened, the spool starts after what was acknowledged.
    drop(spool);
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let sent = spool.batch(usize::MAX, u64::MAX).unwrap().unwrap();
    assert_eq!(seqs(&sent), (551..=1000).collect::<Vec<_>>());
    spool.ack(&sent, 1000).unwrap();
    assert_eq!(segments(dir.path()), 0);
    assert_eq!(spool.bytes(), 0);
}

#[test]
fn a_failed_write_counts_what_it_lost_and_gives_its_numbers_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.append(numbered("a", 0)).unwrap();
    spool.append(numbered("a", 1)).unwrap();
    spool.flush().unwrap();
    // The disk fails: writes to the segment stop working (a read-only descriptor stands in).
    let segment = dir.path().join(files(dir.path()).into_iter().find(|f| f.ends_with(".log")).unwrap());
    spool.writer = Some(BufWriter::new(File::open(&segment).unwrap()));
    spool.append(numbered("b", 2)).unwrap();
    spool.append(numbered("b", 3)).unwrap();
    assert!(spool.flush().is_err());

    // The disk works again: numbering goes on where the file ends, in a new segment.
    assert_eq!(spool.append(numbered("a", 4)).unwrap(), 3);
    let sent = spool.batch(100, 1 << 20).unwrap().unwrap();
    assert_eq!(seqs(&sent), [1, 2, 3]);
    assert_eq!(sent.batch().lines[2].text, numbered("a", 4).line.text);
    assert_eq!(sent.batch().dropped, [Dropped { app: "b".into(), env: "production".into(), lines: 2 }]);
    drop(spool);
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let sent = spool.batch(100, 1 << 20).unwrap().unwrap();
    assert_eq!(seqs(&sent), [1, 2, 3]);
    assert_eq!(sent.batch().dropped.len(), 1);
}

#[test]
fn a_control_plane_ahead_of_the_counter_moves_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.append(numbered("a", 0)).unwrap();
    let sent = spool.batch(100, 1 << 20).unwrap().unwrap();
    spool.ack(&sent, 500).unwrap();
    assert_eq!(spool.append(numbered("a", 1)).unwrap(), 501);
    assert_eq!(seqs(&spool.batch(100, 1 << 20).unwrap().unwrap()), [501]);
}

#[cfg(unix)]
#[test]
fn files_are_the_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("logs");
    let mut spool = Spool::open(&spool_dir, 1 << 20).unwrap();
    spool.append(numbered("a", 0)).unwrap();
    spool.close().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&spool_dir), 0o700);
    for f in files(&spool_dir) {
        assert_eq!(mode(&spool_dir.join(&f)), 0o600, "{f}");
    }
}

#[test]
fn lines_from_no_container_are_spooled_beside_older_records_and_keep_no_cursor() {
    let dir = tempfile::tempdir().unwrap();
    // A segment as the previous version wrote it: every record with a container and cursor.
    let old = serde_json::json!({
        "line": numbered("a", 1).line,
        "container": "c-a",
        "cursor": {"at": "2026-11-27T10:00:00.000000001", "n": 1},
    });
    let mut old = serde_json::to_string(&old).unwrap().replace("\"seq\":0", "\"seq\":1");
    old.push('\n');
    std::fs::write(dir.path().join(format!("{:020}.log", 1)), old).unwrap();

    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let mut router = line("a", "at=info method=GET path=\"/\" status=200").line;
    router.source = LogSource::Router;
    assert_eq!(spool.append(Collected::containerless(router.clone())).unwrap(), 2);
    assert_eq!(spool.append(numbered("a", 3)).unwrap(), 3);
    let mut build = line("a", "Step 1/4 : FROM debian").line;
    (build.source, build.process, build.replica) = (LogSource::Build, "build".into(), 0);
    assert_eq!(spool.append(Collected::containerless(build)).unwrap(), 4);
    spool.close().unwrap();
    drop(spool);
    let on_disk = std::fs::read_to_string(dir.path().join(format!("{:020}.log", 1))).unwrap();
    let records: Vec<serde_json::Value> = on_disk.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 4);
    assert!(records[1].get("container").is_none() && records[1].get("cursor").is_none(), "{}", records[1]);
    assert_eq!(records[2]["container"], "c-a");

    // Reopened: every kind of record reads back, and only containers have cursors.
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let sent = spool.batch(100, 1 << 20).unwrap().unwrap();
    assert_eq!(seqs(&sent), [1, 2, 3, 4]);
    let sources: Vec<LogSource> = sent.batch().lines.iter().map(|l| l.source).collect();
    assert_eq!(sources, [LogSource::App, LogSource::Router, LogSource::App, LogSource::Build]);
    assert_eq!(sent.batch().lines[1].text, router.text);
    assert_eq!(spool.cursor("c-a"), Some(numbered("a", 3).cursor));
    assert_eq!(spool.cursor(""), None);
    assert_eq!(spool.append(Collected::containerless(router)).unwrap(), 5);
}

#[test]
fn lines_lost_before_the_spool_are_counted_and_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
    spool.count_lost("a", "production", 3);
    let sent = spool.batch(100, 1 << 20).unwrap().unwrap();
    assert!(sent.batch().lines.is_empty());
    assert_eq!(sent.batch().dropped, [Dropped { app: "a".into(), env: "production".into(), lines: 3 }]);
}

#[test]
fn a_batch_after_one_in_flight_starts_where_it_ended_and_carries_no_drop_counts() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 1 << 20;
    let mut spool = Spool::open(dir.path(), cap).unwrap();
    // More than the cap: the oldest are dropped and counted.
    for i in 0..10_000 {
        spool.append(numbered("a", i)).unwrap();
    }
    let first = spool.batch(300, u64::MAX).unwrap().unwrap();
    assert_eq!(first.batch().dropped.len(), 1, "the first batch carries the drop counts");
    let start = first.batch().lines[0].seq;
    let second = spool.batch_after(Some(&first), 300, u64::MAX).unwrap().unwrap();
    assert_eq!(seqs(&second), (start + 300..start + 600).collect::<Vec<_>>());
    assert!(second.batch().dropped.is_empty(), "{:?}", second.batch().dropped);
    // The one in flight may span segments; the next follows on across them.
    let third = spool.batch_after(Some(&second), 300, u64::MAX).unwrap().unwrap();
    assert_eq!(third.batch().lines[0].seq, start + 600);

    // Acknowledged in order, each moves the spool on; what comes next follows the newest.
    spool.ack(&first, first.last_seq).unwrap();
    spool.ack(&second, second.last_seq).unwrap();
    let next = spool.batch_after(Some(&third), 300, u64::MAX).unwrap().unwrap();
    assert_eq!(next.batch().lines[0].seq, start + 900);
    // Abandoned (the third failed): shipping starts again at the oldest unacknowledged line,
    // with the drop counts, which were acknowledged, not sent again.
    let again = spool.batch(300, u64::MAX).unwrap().unwrap();
    assert_eq!(seqs(&again), seqs(&third));
    assert!(again.batch().dropped.is_empty());

    // The segment a batch in flight ended in is dropped by the cap: the next batch starts at
    // the oldest line after it that the spool still holds.
    for i in 10_000..20_000 {
        spool.append(numbered("a", i)).unwrap();
    }
    let after = spool.batch_after(Some(&third), 300, u64::MAX).unwrap().unwrap();
    assert!(after.batch().lines[0].seq > third.last_seq);
    assert_eq!(after.batch().lines[0].seq, spool.batch(1, u64::MAX).unwrap().unwrap().batch().lines[0].seq);
    assert!(after.batch().dropped.is_empty());
}

#[test]
fn a_records_line_is_found_whatever_its_text_holds() {
    for text in ["plain", "quote \" brace } bracket ] backslash \\ end", "\\\"}", "ünï ✓ \u{1}", ""] {
        let mut line = numbered("a", 7).line;
        (line.seq, line.text) = (7, text.into());
        let record =
            Record { line: line.clone(), container: "c1".into(), cursor: Cursor { at: "t".into(), n: 2 } };
        let json = serde_json::to_vec(&record).unwrap();
        let (seq, raw) = super::record_line(&json).unwrap();
        assert_eq!(seq, 7);
        let back: protocol::logs::ShippedLine =
            serde_json::from_slice(raw.expect("laid out as written")).unwrap();
        assert_eq!(back, line, "{text:?}");
    }
    // A record laid out otherwise is parsed whole.
    let other = br#"{"container":"c","line":{"text":"x","seq":9,"at":"","app":"a","env":"e","source":"app","process":"web","replica":1,"release":1,"stream":"stdout"}}"#;
    assert_eq!(super::record_line(other).unwrap(), (9, None));
}

//! Output lines (build output, job output, log tails) on their way to the control plane, bounded
//! at every step: lines are cut at [`MAX_LINE_BYTES`], at most [`LINES_PER_SECOND`] are kept per
//! stream, and they wait in an outbox of fixed size while a batch is being sent, so neither a
//! chatty process nor a slow control plane makes the agent buffer without limit. What is left
//! out is counted and reported in the stream itself as `[paas] N lines dropped`, followed by
//! the last [`HELD_LINES`] lines of what was left out: the end of a burst (often the error a
//! failing command printed last) always gets through.
//!
//! Hand-written rather than a channel: a bounded channel counts items, not bytes, and cannot
//! put the count of what it refused back into the stream at the right place.

use protocol::agent::NodeReport;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Longest line passed on; the rest of a longer line is replaced by [`CUT_MARKER`].
pub const MAX_LINE_BYTES: usize = 4096;
/// Appended where a line was cut.
pub const CUT_MARKER: &str = " [paas] (line cut)";
/// Lines kept per second and stream; the rest of each second is dropped and counted.
pub const LINES_PER_SECOND: usize = 2000;
/// The outbox: lines waiting while a batch is on its way. Beyond it, lines are dropped.
const MAX_PENDING_LINES: usize = 5000;
const MAX_PENDING_BYTES: usize = 1 << 20;
/// One request carries at most this much.
const MAX_BATCH_LINES: usize = 200;
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Of the lines left out, the newest this many are held and sent after the count.
pub const HELD_LINES: usize = 20;
/// A batch the control plane did not take is retried this often, then counted as dropped.
const SEND_ATTEMPTS: u32 = 3;

/// `text` without terminal escape sequences (colours, cursor moves, titles), which build tools
/// print for a terminal: in a deploy's output and the logs they are noise, or lines of their own.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // CSI: parameters and intermediates up to a final byte in @..~.
            Some('[') => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            // OSC: up to BEL or ESC \.
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                        break;
                    }
                }
            }
            // Character set designations are three characters, any other escape two.
            Some('(' | ')') => {
                chars.next();
            }
            _ => {}
        }
    }
    out
}

/// `line` cut to at most `max` bytes (on a character boundary) plus [`CUT_MARKER`].
pub fn cut(mut line: String, max: usize) -> String {
    if line.len() <= max {
        return line;
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line.truncate(end);
    line.push_str(CUT_MARKER);
    line
}

/// The line that stands for `n` lines left out.
pub fn dropped_marker(n: u64) -> String {
    format!("[paas] {n} {} dropped", if n == 1 { "line" } else { "lines" })
}

/// Splits a byte stream into lines without holding more than `max` bytes of one (by default
/// [`MAX_LINE_BYTES`]): the rest of a longer line is skipped up to its newline.
pub struct Splitter {
    max: usize,
    pending: Vec<u8>,
    /// The current line was already cut and passed on; skip to its end.
    skipping: bool,
}

impl Default for Splitter {
    fn default() -> Self {
        Self::with_max(MAX_LINE_BYTES)
    }
}

impl Splitter {
    pub fn with_max(max: usize) -> Self {
        Self { max, pending: Vec::new(), skipping: false }
    }

    pub fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(String)) {
        while !bytes.is_empty() {
            let (chunk, ends_line) = match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => (&bytes[..i], Some(i + 1)),
                None => (bytes, None),
            };
            if !self.skipping {
                let room = self.max - self.pending.len();
                if chunk.len() > room {
                    self.pending.extend_from_slice(&chunk[..room]);
                    let mut line = self.take();
                    line.push_str(CUT_MARKER);
                    emit(line);
                    self.skipping = true;
                } else {
                    self.pending.extend_from_slice(chunk);
                    if ends_line.is_some() {
                        emit(self.take());
                    }
                }
            }
            match ends_line {
                Some(next) => {
                    self.skipping = false;
                    bytes = &bytes[next..];
                }
                None => bytes = &[],
            }
        }
    }

    /// Passes on a last line that had no newline.
    pub fn finish(&mut self, mut emit: impl FnMut(String)) {
        if !self.pending.is_empty() {
            emit(self.take());
        }
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.pending).trim_end_matches('\r').to_string();
        self.pending.clear();
        line
    }
}

/// Docker log entries read with timestamps (`<RFC 3339 time> <bytes>`) turned into lines, keeping
/// track of the last entry passed on, so a second read of the same log can pass on only what
/// the first missed (Docker 20.10's follow can end before a stopped container's last entries).
#[derive(Default)]
pub struct LogReader {
    split: Splitter,
    /// Sortable time of the last entry passed on, and how many entries had that time.
    last: Option<String>,
    at_last: usize,
    /// While reading again: entries at `last` skipped so far, and whether new ones started.
    replayed: usize,
    passing: bool,
}

impl LogReader {
    pub fn entry(&mut self, raw: &[u8], emit: impl FnMut(String)) {
        let (key, message) = log_entry(raw);
        if self.last.as_deref() == Some(key.as_str()) {
            self.at_last += 1;
        } else {
            self.last = Some(key);
            self.at_last = 1;
        }
        self.split.push(message, emit);
    }

    /// An entry of a second read of the log: passed on only when the first read did not.
    pub fn again(&mut self, raw: &[u8], emit: impl FnMut(String)) {
        if !self.passing {
            if let Some(last) = &self.last {
                let (key, _) = log_entry(raw);
                match key.as_str().cmp(last.as_str()) {
                    std::cmp::Ordering::Less => return,
                    std::cmp::Ordering::Equal if self.replayed < self.at_last => {
                        self.replayed += 1;
                        return;
                    }
                    _ => {}
                }
            }
            self.passing = true;
        }
        self.entry(raw, emit);
    }

    pub fn finish(mut self, emit: impl FnMut(String)) {
        self.split.finish(emit);
    }
}

/// Splits `<time> <message>` and makes the time sortable as text: Docker trims trailing zeros
/// from the fraction, so it is padded to nanoseconds.
pub fn log_entry(raw: &[u8]) -> (String, &[u8]) {
    let (time, message) = match raw.iter().position(|b| *b == b' ') {
        Some(i) => (&raw[..i], &raw[i + 1..]),
        None => (&raw[..0], raw),
    };
    (sortable_time(&String::from_utf8_lossy(time)), message)
}

/// Docker's RFC 3339 time (`2026-11-27T10:00:01.5Z`) with its fraction padded to nanoseconds
/// and without the `Z`, so that times sort as text.
pub fn sortable_time(time: &str) -> String {
    let time = time.trim_end_matches('Z');
    let (secs, frac) = time.split_once('.').unwrap_or((time, ""));
    format!("{secs}.{frac:0<9}")
}

#[derive(Default)]
struct State {
    lines: VecDeque<String>,
    bytes: usize,
    /// Lines left out since the last one kept, besides those held.
    dropped: u64,
    /// The newest lines left out, sent (after the count) once lines are taken again.
    held: VecDeque<String>,
    closed: bool,
    window_start: Option<Instant>,
    window_kept: usize,
}

impl State {
    fn push(&mut self, line: String) {
        self.bytes += line.len();
        self.lines.push_back(line);
    }

    fn hold(&mut self, line: String) {
        self.held.push_back(line);
        if self.held.len() > HELD_LINES {
            self.held.pop_front();
            self.dropped += 1;
        }
    }

    /// Queues the count of the lines left out, then the held ones.
    fn release_held(&mut self) {
        if self.dropped > 0 {
            let marker = dropped_marker(std::mem::take(&mut self.dropped));
            self.push(marker);
        }
        while let Some(line) = self.held.pop_front() {
            self.push(line);
        }
    }

    /// Starts a new one-second window when the current one is over; tells whether it did.
    fn roll_window(&mut self, now: Instant) -> bool {
        if self.window_start.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            self.window_start = Some(now);
            self.window_kept = 0;
            return true;
        }
        false
    }

    fn full(&self, more: usize) -> bool {
        self.lines.len() >= MAX_PENDING_LINES || self.bytes + more > MAX_PENDING_BYTES
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    ready: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A bounded outbox of lines: [`LineSender::send`] never blocks and never grows it past its
/// limits; [`ship`] empties it in batches.
pub fn outbox() -> (LineSender, LineReceiver) {
    let shared = Arc::new(Shared::default());
    (LineSender { shared: shared.clone() }, LineReceiver { shared })
}

/// The producing end; dropping it closes the stream.
pub struct LineSender {
    shared: Arc<Shared>,
}

impl LineSender {
    /// Queues `line` (cut to [`MAX_LINE_BYTES`]) unless this second's allowance is used up or
    /// the outbox is full; then it is held or counted, and goes out before the next line kept.
    pub fn send(&self, line: String) {
        let line = cut(line, MAX_LINE_BYTES);
        let mut s = self.shared.lock();
        s.roll_window(Instant::now());
        if s.full(line.len()) || s.window_kept >= LINES_PER_SECOND {
            s.hold(line);
            return;
        }
        s.window_kept += 1;
        s.release_held();
        s.push(line);
        drop(s);
        self.shared.ready.notify_one();
    }
}

impl Drop for LineSender {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.release_held();
        s.closed = true;
        drop(s);
        self.shared.ready.notify_one();
    }
}

/// The consuming end, read by [`ship`].
pub struct LineReceiver {
    shared: Arc<Shared>,
}

impl LineReceiver {
    /// The next batch (at most [`MAX_BATCH_LINES`] lines and about [`MAX_BATCH_BYTES`]); waits
    /// for lines, and answers `None` once the sender is gone and everything was taken.
    pub async fn next_batch(&mut self) -> Option<Vec<String>> {
        loop {
            let holding = {
                let mut s = self.shared.lock();
                // Lines held at the end of a burst go out once the next second starts, even
                // when nothing follows them.
                if s.lines.is_empty() && !s.held.is_empty() && s.roll_window(Instant::now()) {
                    s.release_held();
                }
                if !s.lines.is_empty() {
                    let (mut batch, mut bytes) = (Vec::new(), 0);
                    while let Some(line) = s.lines.front() {
                        if batch.len() >= MAX_BATCH_LINES
                            || (!batch.is_empty() && bytes + line.len() > MAX_BATCH_BYTES)
                        {
                            break;
                        }
                        bytes += line.len();
                        batch.extend(s.lines.pop_front());
                    }
                    s.bytes -= bytes;
                    return Some(batch);
                }
                if s.closed {
                    return None;
                }
                !s.held.is_empty()
            };
            if holding {
                let _ = tokio::time::timeout(Duration::from_millis(250), self.shared.ready.notified()).await;
            } else {
                self.shared.ready.notified().await;
            }
        }
    }
}

/// Sends everything `rx` receives in batches until the sender is dropped. A batch the control
/// plane does not take is retried a few times (not after a 4xx), then counted as dropped.
pub async fn ship<F, Fut>(mut rx: LineReceiver, send: F)
where
    F: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = Result<(), protocol::ClientError>>,
{
    while let Some(batch) = rx.next_batch().await {
        let n = batch.len() as u64;
        let mut delivered = false;
        for attempt in 1..=SEND_ATTEMPTS {
            match send(batch.clone()).await {
                Ok(()) => {
                    delivered = true;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "sending output lines failed");
                    if e.status.is_some_and(|s| (400..500).contains(&s)) || attempt == SEND_ATTEMPTS {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                }
            }
        }
        if !delivered {
            // The stream's sender may be gone already; the count then ends with this batch.
            let mut s = rx.shared.lock();
            s.dropped += n;
            if s.closed {
                s.release_held();
            }
        }
    }
}

/// Makes `report` serialize to at most `limit` bytes by leaving out log tails, largest first
/// (each replaced by one line saying so). Containers are never left out: the control plane
/// would take a missing one for a gone one. Returns whether it had to leave anything out.
pub fn fit_report(report: &mut NodeReport, limit: usize) -> bool {
    let size = |r: &NodeReport| serde_json::to_vec(r).map_or(usize::MAX, |v| v.len());
    let mut excess = size(report).saturating_sub(limit);
    if excess == 0 {
        return false;
    }
    let mut tails: Vec<(usize, &mut Vec<String>)> = report
        .containers
        .iter_mut()
        .chain(report.databases.iter_mut())
        .map(|c| (serde_json::to_vec(&c.log_tail).map_or(0, |v| v.len()), &mut c.log_tail))
        .collect();
    tails.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
    let note = "[paas] log lines left out: the report would exceed the size limit".to_string();
    for (len, tail) in tails {
        if excess == 0 || len <= note.len() + 4 {
            break;
        }
        *tail = vec![note.clone()];
        excess = excess.saturating_sub(len - note.len() - 4);
    }
    if size(report) > limit {
        tracing::warn!(
            containers = report.containers.len(),
            "the node report is too large even without log lines"
        );
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_drops_terminal_escapes_and_keeps_the_text() {
        assert_eq!(plain("\u{1b}[1m\u{1b}[32mStep 1/4\u{1b}[0m : FROM x"), "Step 1/4 : FROM x");
        assert_eq!(plain("\u{1b}[0m"), "");
        assert_eq!(plain("\u{1b}]0;title\u{7}done"), "done");
        assert_eq!(plain("\u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\"), "link");
        assert_eq!(plain("a\u{1b}(Bb\u{1b}=c"), "abc");
        assert_eq!(plain("tab\tstays, ünïcode too"), "tab\tstays, ünïcode too");
        assert_eq!(plain("cut \u{1b}["), "cut ");
    }

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = Splitter::default();
        for c in chunks {
            s.push(c, |l| out.push(l));
        }
        s.finish(|l| out.push(l));
        out
    }

    #[test]
    fn splits_lines_across_chunks_and_cuts_long_ones() {
        assert_eq!(split(&[b"a\r\nb", b"c\n", b"d"]), ["a", "bc", "d"]);
        let long = vec![b'x'; MAX_LINE_BYTES * 3];
        let out = split(&[b"start\n", &long, &long, b"\nafter\n"]);
        assert_eq!(out.len(), 3, "{:?}", out.iter().map(String::len).collect::<Vec<_>>());
        assert!(out[1].len() <= MAX_LINE_BYTES + CUT_MARKER.len() && out[1].ends_with(CUT_MARKER));
        assert_eq!((out[0].as_str(), out[2].as_str()), ("start", "after"));
        // A line of exactly the limit is whole.
        let exact = "y".repeat(MAX_LINE_BYTES);
        assert_eq!(split(&[exact.as_bytes(), b"\n"]), [exact]);
    }

    #[test]
    fn cuts_on_a_character_boundary() {
        let line = "é".repeat(10);
        let out = cut(line, 5);
        assert_eq!(out, format!("éé{CUT_MARKER}"));
    }

    #[test]
    fn a_second_read_of_a_log_passes_on_only_what_the_first_missed() {
        let log: Vec<&[u8]> = vec![
            b"2024-05-01T10:00:00Z one\n",
            b"2024-05-01T10:00:00.5Z two\n",
            b"2024-05-01T10:00:00.5Z three\n",
            b"2024-05-01T10:00:00.500000001Z four\n",
            b"2024-05-01T10:00:01.25Z fi",
            b"2024-05-01T10:00:01.25Z ve\n",
        ];
        for seen in 0..=log.len() {
            let (mut out, mut r) = (Vec::new(), LogReader::default());
            for e in &log[..seen] {
                r.entry(e, |l| out.push(l));
            }
            // The second read starts somewhere before where the first stopped.
            for e in &log[seen.saturating_sub(3)..] {
                r.again(e, |l| out.push(l));
            }
            r.finish(|l| out.push(l));
            assert_eq!(out, ["one", "two", "three", "four", "five"], "first read saw {seen}");
        }
    }

    #[tokio::test]
    async fn keeps_a_bounded_number_per_second_and_counts_the_rest() {
        let (tx, mut rx) = outbox();
        for i in 0..LINES_PER_SECOND + 500 {
            tx.send(format!("line {i}"));
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some(batch) = rx.next_batch().await {
            assert!(batch.len() <= MAX_BATCH_LINES);
            got.extend(batch);
        }
        // The allowance, the count of what was left out, and the last lines of the burst.
        assert_eq!(got.len(), LINES_PER_SECOND + 1 + HELD_LINES);
        assert_eq!(got[LINES_PER_SECOND - 1], format!("line {}", LINES_PER_SECOND - 1));
        assert_eq!(got[LINES_PER_SECOND], format!("[paas] {} lines dropped", 500 - HELD_LINES));
        assert_eq!(got.last().unwrap(), &format!("line {}", LINES_PER_SECOND + 499));
    }

    #[tokio::test]
    async fn a_slow_receiver_never_makes_the_outbox_grow_past_its_limits() {
        let (tx, mut rx) = outbox();
        let big = "z".repeat(MAX_LINE_BYTES * 2);
        for _ in 0..LINES_PER_SECOND {
            tx.send(big.clone());
            let s = tx.shared.lock();
            assert!(s.bytes <= MAX_PENDING_BYTES && s.lines.len() <= MAX_PENDING_LINES);
            assert!(s.held.len() <= HELD_LINES);
        }
        drop(tx);
        let (mut kept, mut dropped) = (0, 0);
        while let Some(batch) = rx.next_batch().await {
            for l in batch {
                match l.strip_prefix("[paas] ").and_then(|r| r.strip_suffix(" lines dropped")) {
                    Some(n) => dropped += n.parse::<usize>().unwrap(),
                    None => {
                        assert!(l.ends_with(CUT_MARKER) && l.len() <= MAX_LINE_BYTES + CUT_MARKER.len());
                        kept += 1;
                    }
                }
            }
        }
        assert!(kept > 0 && dropped > 0, "{kept} {dropped}");
        assert_eq!(kept + dropped, LINES_PER_SECOND, "every line is either delivered or counted");
    }

    #[test]
    fn reports_are_cut_to_the_size_limit_by_leaving_out_log_tails() {
        let container = |name: &str, lines: usize| protocol::agent::ContainerStatus {
            name: name.into(),
            state: "running".into(),
            healthy: false,
            host_port: None,
            restarts: 0,
            log_tail: vec!["\u{1}".repeat(1000); lines],
            db: None,
            exit_code: None,
        };
        let mut report = NodeReport {
            containers: (0..300).map(|i| container(&format!("c{i}"), 20)).collect(),
            ..Default::default()
        };
        report.databases.push(container("db", 10));
        let limit = protocol::agent::MAX_BODY_BYTES;
        assert!(serde_json::to_vec(&report).unwrap().len() > 5 * limit, "escaping makes it huge");
        assert!(fit_report(&mut report, limit));
        assert!(serde_json::to_vec(&report).unwrap().len() <= limit);
        assert_eq!(report.containers.len(), 300, "every container is still reported");
        assert!(report.containers.iter().any(|c| c.log_tail.len() == 20), "only what must go is left out");
        let mut small = NodeReport { containers: vec![container("a", 2)], ..Default::default() };
        let before = small.clone();
        assert!(!fit_report(&mut small, limit));
        assert_eq!(small, before);
    }

    #[tokio::test]
    async fn the_end_of_a_burst_goes_out_while_the_stream_stays_open() {
        let (tx, mut rx) = outbox();
        for i in 0..LINES_PER_SECOND + 30 {
            tx.send(format!("line {i}"));
        }
        let last = format!("line {}", LINES_PER_SECOND + 29);
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while got.last() != Some(&last) {
            let batch = tokio::time::timeout_at(deadline, rx.next_batch()).await;
            got.extend(batch.expect("the held lines went out").expect("the stream is open"));
        }
        assert_eq!(got[LINES_PER_SECOND], "[paas] 10 lines dropped");
        drop(tx);
    }

    #[tokio::test]
    async fn undelivered_batches_are_counted() {
        let (tx, rx) = outbox();
        for i in 0..10 {
            tx.send(format!("{i}"));
        }
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (d, c) = (delivered.clone(), calls.clone());
        let shipper = tokio::spawn(ship(rx, move |batch| {
            let (d, c) = (d.clone(), c.clone());
            async move {
                // The first batch never gets through; later ones do.
                if c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < SEND_ATTEMPTS as usize {
                    return Err(protocol::ClientError { status: Some(503), message: "busy".into() });
                }
                d.lock().unwrap().extend(batch);
                Ok(())
            }
        }));
        while tx.shared.lock().dropped < 10 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tx.send("after".into());
        drop(tx);
        shipper.await.unwrap();
        assert_eq!(*delivered.lock().unwrap(), ["[paas] 10 lines dropped", "after"]);
    }
}

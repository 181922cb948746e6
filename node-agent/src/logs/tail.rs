//! Reading one container's output for central logs: Docker's log entries, with their
//! timestamps, from the container's cursor on, cut into lines of at most [`MAX_LINE_BYTES`] and
//! labelled with the container's app, environment, process, release and replica.
//!
//! The entries come from the container's json-file log on disk (`jsonfile`) when this host has
//! it, else from Docker's log stream. The cursor (last timestamp taken, and how many entries at
//! exactly that time) is how a read resumes without losing or repeating an entry: a file is
//! read again from its start and Docker's `since` has whole seconds, so the entries up to the
//! cursor are skipped by hand.

use super::jsonfile::LogFiles;
use super::spool::{Collected, Cursor};
use super::wake::{DirWatch, Watcher};
use crate::docker::{DockerClient, LogSource};
use crate::lines::{log_entry, Splitter};
use futures_util::StreamExt;
use protocol::logs::{LogSource as Source, LogStream, ShippedLine};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Longest line kept; the rest of a longer one is replaced by `lines::CUT_MARKER`. Docker's
/// json-file driver splits longer lines into 16 KiB entries, which this joins up to the cut.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// A file at its end is looked at again after this, doubling up to [`IDLE_MAX`] while nothing
/// comes: new lines show within a fraction of a second, and hundreds of idle containers cost
/// little.
const IDLE_MIN: Duration = Duration::from_millis(20);
const IDLE_MAX: Duration = Duration::from_millis(250);
/// A watched file (see `wake`) is looked at again after this even when no change was
/// reported: a safety net, not the way new lines are found.
const IDLE_WATCHED: Duration = Duration::from_secs(2);

/// Reads `source`'s output from `cursor` on into `out` until the container stops (`stopped`
/// turns true, or Docker's stream ends), the log cannot be read, or `out` closes; answers
/// where it read up to.
pub async fn follow(
    docker: DockerClient,
    source: LogSource,
    cursor: Option<Cursor>,
    config: std::sync::Arc<std::collections::BTreeMap<String, String>>,
    out: mpsc::Sender<Collected>,
    stopped: watch::Receiver<bool>,
    watcher: Watcher,
) -> Option<Cursor> {
    let secrets = protocol::secrets::secret_texts(&config);
    let masked = |mut c: Collected| {
        if let std::borrow::Cow::Owned(masked) = protocol::secrets::mask_texts(&c.line.text, &secrets) {
            c.line.text = masked;
        }
        c
    };
    let mut reader = Reader::new(source, cursor);
    let files = match docker.log_path(&reader.source.id).await {
        Some(path) => {
            // Watched before the first read, so no change after that read goes unnoticed.
            let watch = path.parent().and_then(|dir| watcher.watch(dir));
            tokio::task::spawn_blocking(move || LogFiles::open(&path)).await.ok().map(|f| (f, watch))
        }
        None => None,
    };
    match files {
        Some((Ok(files), watch)) => return follow_files(files, reader, masked, out, stopped, watch).await,
        Some((Err(e), _)) => {
            tracing::debug!(container = %reader.source.name, error = %e, "the container's log file cannot be read; reading through Docker");
        }
        None => {}
    }
    // Docker 20.10's follow can end before a stopped container's last entries, so the log is
    // read once more after it: the cursor passes over what the follow already took.
    for follow in [true, false] {
        reader.restart();
        let since = reader.cursor.as_ref().and_then(|c| unix_secs(&c.at)).unwrap_or(0);
        let mut entries = std::pin::pin!(docker.log_entries(&reader.source.id, since, follow));
        let mut lines = Vec::new();
        while let Some(entry) = entries.next().await {
            match entry {
                Ok((stderr, raw)) => reader.entry(stderr, &raw, |c| lines.push(c)),
                Err(e) => {
                    tracing::debug!(container = %reader.source.name, error = %e, "reading the container's output stopped");
                    break;
                }
            }
            if !pass_on(&mut lines, &masked, &out).await {
                return reader.cursor;
            }
        }
    }
    let mut lines = Vec::new();
    reader.finish(|c| lines.push(c));
    pass_on(&mut lines, &masked, &out).await;
    reader.cursor
}

/// Reads the container's log files until it stopped and they are read to their end. At the
/// end of the files it waits for `watch` to report a change, or without one polls.
async fn follow_files(
    mut files: LogFiles,
    mut reader: Reader,
    masked: impl Fn(Collected) -> Collected,
    out: mpsc::Sender<Collected>,
    mut stopped: watch::Receiver<bool>,
    mut watch: Option<DirWatch>,
) -> Option<Cursor> {
    reader.restart();
    let mut idle = IDLE_MIN;
    let mut lines = Vec::new();
    loop {
        // Seen before the read: a container that had stopped has all of its output in the files.
        let done = *stopped.borrow_and_update() || stopped.has_changed().is_err();
        let read = tokio::task::spawn_blocking(move || {
            let chunk = files.next_chunk();
            (files, chunk)
        })
        .await;
        let chunk = match read {
            Ok((back, chunk)) => {
                files = back;
                chunk
            }
            Err(_) => break,
        };
        match chunk {
            Ok(Some(entries)) => {
                idle = IDLE_MIN;
                for e in entries {
                    reader.entry_at(e.stderr, e.at, e.log.as_bytes(), |c| lines.push(c));
                }
                if !pass_on(&mut lines, &masked, &out).await {
                    return reader.cursor;
                }
            }
            Ok(None) if done => break,
            Ok(None) => match &mut watch {
                Some(w) => {
                    let gone = tokio::select! {
                        _ = tokio::time::sleep(IDLE_WATCHED) => false,
                        changed = w.changed.changed() => changed.is_err(),
                        _ = stopped.changed() => false,
                    };
                    if gone {
                        watch = None;
                    }
                }
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(idle) => {}
                        _ = stopped.changed() => {}
                    }
                    idle = (idle * 2).min(IDLE_MAX);
                }
            },
            Err(e) => {
                tracing::debug!(container = %reader.source.name, error = %e, "reading the container's log file stopped");
                break;
            }
        }
    }
    reader.finish(|c| lines.push(c));
    pass_on(&mut lines, &masked, &out).await;
    reader.cursor
}

/// Sends `lines`, masked, to the writer; false once it is gone.
async fn pass_on(
    lines: &mut Vec<Collected>,
    masked: &impl Fn(Collected) -> Collected,
    out: &mpsc::Sender<Collected>,
) -> bool {
    for c in lines.drain(..) {
        if out.send(masked(c)).await.is_err() {
            return false;
        }
    }
    true
}

/// Turns one container's log entries into collected lines.
struct Reader {
    source: LogSource,
    /// The last entry taken.
    cursor: Option<Cursor>,
    /// While a new read passes over what was taken: the cursor it resumes from, and the entries
    /// at its exact time seen so far.
    skip: Option<Cursor>,
    seen: u32,
    /// stdout, stderr: partial lines wait per stream.
    split: [Splitter; 2],
}

impl Reader {
    fn new(source: LogSource, cursor: Option<Cursor>) -> Self {
        let split = [Splitter::with_max(MAX_LINE_BYTES), Splitter::with_max(MAX_LINE_BYTES)];
        Self { source, cursor, skip: None, seen: 0, split }
    }

    /// A new read of the log starts: it begins at or before the cursor.
    fn restart(&mut self) {
        self.skip = self.cursor.clone();
        self.seen = 0;
    }

    /// Whether the entry at `at` is new to this reader.
    fn is_new(&mut self, at: &str) -> bool {
        let Some(skip) = &self.skip else { return true };
        match at.cmp(skip.at.as_str()) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal if self.seen < skip.n => {
                self.seen += 1;
                false
            }
            _ => {
                self.skip = None;
                true
            }
        }
    }

    /// An entry of Docker's log stream: its time, a space, what was written.
    fn entry(&mut self, stderr: bool, raw: &[u8], emit: impl FnMut(Collected)) {
        let (at, message) = log_entry(raw);
        self.entry_at(stderr, at, message, emit);
    }

    fn entry_at(&mut self, stderr: bool, at: String, message: &[u8], mut emit: impl FnMut(Collected)) {
        if !self.is_new(&at) {
            return;
        }
        let cursor = match self.cursor.take() {
            Some(c) if c.at == at => Cursor { at, n: c.n + 1 },
            _ => Cursor { at, n: 1 },
        };
        self.cursor = Some(cursor.clone());
        let (source, stream) = (&self.source, if stderr { LogStream::Stderr } else { LogStream::Stdout });
        self.split[usize::from(stderr)].push(message, |text| emit(collected(source, &cursor, stream, text)));
    }

    /// Passes on lines that never got their newline.
    fn finish(&mut self, mut emit: impl FnMut(Collected)) {
        let Some(cursor) = self.cursor.clone() else { return };
        for (i, stream) in [LogStream::Stdout, LogStream::Stderr].into_iter().enumerate() {
            let source = &self.source;
            self.split[i].finish(|text| emit(collected(source, &cursor, stream, text)));
        }
    }
}

fn collected(source: &LogSource, cursor: &Cursor, stream: LogStream, text: String) -> Collected {
    Collected {
        container: source.id.clone(),
        cursor: cursor.clone(),
        line: ShippedLine {
            seq: 0,
            at: format!("{}Z", cursor.at),
            app: source.app.clone(),
            env: source.env.clone(),
            source: Source::App,
            process: source.process.clone(),
            replica: source.replica,
            release: source.release,
            stream,
            text,
        },
    }
}

/// Unix seconds of a sortable timestamp (`2026-11-27T10:00:01.000000000`, UTC).
pub fn unix_secs(at: &str) -> Option<i64> {
    let num = |range: std::ops::Range<usize>| at.get(range)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> LogSource {
        LogSource {
            id: "abc".into(),
            name: "paas-shop--production-web-1".into(),
            running: true,
            app: "shop".into(),
            env: "production".into(),
            process: "web".into(),
            release: 7,
            replica: 2,
        }
    }

    fn read(reader: &mut Reader, entries: &[(bool, &str)]) -> Vec<Collected> {
        let mut out = Vec::new();
        for (stderr, raw) in entries {
            reader.entry(*stderr, raw.as_bytes(), |c| out.push(c));
        }
        out
    }

    fn texts(lines: &[Collected]) -> Vec<&str> {
        lines.iter().map(|c| c.line.text.as_str()).collect()
    }

    const LOG: &[(bool, &str)] = &[
        (false, "2026-11-27T10:00:01.5Z one\n"),
        (true, "2026-11-27T10:00:02Z two\n"),
        (false, "2026-11-27T10:00:02Z three\n"),
        (false, "2026-11-27T10:00:02Z four\n"),
        (false, "2026-11-27T10:00:03.000000001Z five\n"),
    ];

    #[test]
    fn lines_carry_the_containers_labels_and_a_normalised_time() {
        let mut reader = Reader::new(source(), None);
        let lines = read(&mut reader, LOG);
        assert_eq!(texts(&lines), ["one", "two", "three", "four", "five"]);
        let first = &lines[0].line;
        assert_eq!(first.at, "2026-11-27T10:00:01.500000000Z");
        assert_eq!(
            (first.app.as_str(), first.env.as_str(), first.process.as_str()),
            ("shop", "production", "web")
        );
        assert_eq!(
            (first.release, first.replica, first.stream, first.source),
            (7, 2, LogStream::Stdout, Source::App)
        );
        assert_eq!(lines[1].line.stream, LogStream::Stderr);
        assert_eq!(lines[3].cursor, Cursor { at: "2026-11-27T10:00:02.000000000".into(), n: 3 });
        assert_eq!(lines[4].cursor, Cursor { at: "2026-11-27T10:00:03.000000001".into(), n: 1 });
    }

    #[test]
    fn a_new_read_resumes_after_the_cursor_even_within_one_timestamp() {
        for taken in 0..=LOG.len() {
            let mut first = Reader::new(source(), None);
            let lines = read(&mut first, &LOG[..taken]);
            // A restarted agent reads again from the whole second before its cursor.
            let cursor = lines.last().map(|c| c.cursor.clone());
            let mut again = Reader::new(source(), cursor);
            again.restart();
            let rest = read(&mut again, LOG);
            let all: Vec<&str> = texts(&lines).into_iter().chain(texts(&rest)).collect();
            assert_eq!(all, ["one", "two", "three", "four", "five"], "after {taken} entries");
        }
    }

    #[test]
    fn long_lines_are_joined_from_docker_entries_and_cut() {
        let mut reader = Reader::new(source(), None);
        let chunk = "x".repeat(MAX_LINE_BYTES);
        let lines = read(
            &mut reader,
            &[
                (false, &format!("2026-11-27T10:00:01Z {}", &chunk[..10_000])),
                (false, "2026-11-27T10:00:01Z end\n"),
                (false, &format!("2026-11-27T10:00:02Z {chunk}")),
                (false, &format!("2026-11-27T10:00:02Z {chunk}")),
                (false, "2026-11-27T10:00:02Z tail of the long one\n"),
                (false, "2026-11-27T10:00:03Z next\n"),
            ],
        );
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].line.text, format!("{}end", &chunk[..10_000]));
        assert_eq!(lines[1].line.text, format!("{chunk}{}", crate::lines::CUT_MARKER));
        assert_eq!(lines[2].line.text, "next");
    }

    #[test]
    fn unix_seconds_of_timestamps() {
        assert_eq!(unix_secs("1970-01-01T00:00:00.000000000"), Some(0));
        assert_eq!(unix_secs("2000-03-01T00:00:00.000000000"), Some(951_868_800));
        assert_eq!(unix_secs("2026-11-27T10:00:01.999999999"), Some(1_795_773_601));
        assert_eq!(unix_secs(""), None);
    }
}

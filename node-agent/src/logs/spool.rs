//! The log spool: collected lines on disk, each numbered with the node's next `seq`, kept until
//! the control plane acknowledges them, within a byte cap.
//!
//! Layout (a 0700 directory, 0600 files): segment files `<first seq>.log` of JSON records, one
//! per line, each carrying the shipped line and, for a container's line, the container and its
//! cursor (where its output was read up to); lines that come from no container (the ingress's
//! access log, build output) carry neither; and `state.json` (replaced atomically) with the next
//! `seq`, the `seq` up to which lines are forgotten (acknowledged or dropped), the cursors of
//! lines already forgotten, and the drop counts not yet acknowledged.
//!
//! Crash safety: a line and its cursor are one record, so whatever part of the file a crash
//! keeps, the cursor says exactly which lines were taken and the rest are read from Docker again.
//! Opening reads every segment, truncates a torn last record, and takes the next `seq` past
//! the last record and the state's; lines are shipped only once flushed to the file, so a `seq`
//! the control plane saw is never given again. The state is written before any segment is
//! deleted, so what a deleted segment held (its cursors, its drop counts) is never lost.

#[cfg(test)]
use protocol::logs::LogBatch;
use protocol::logs::{Dropped, ShippedLine};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a container's output was read up to: Docker's timestamp of the last entry taken (in
/// the sortable form of `lines::log_entry`) and how many entries with exactly that timestamp
/// were taken (several can share one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub at: String,
    pub n: u32,
}

/// A line to spool, before it has its `seq`.
#[derive(Debug, Clone)]
pub struct Collected {
    /// The id of the container it was read from; empty for a line from no container.
    pub container: String,
    /// Where the container's output is read up to once this line is taken.
    pub cursor: Cursor,
    pub line: ShippedLine,
}

impl Collected {
    /// A line that comes from no container, so has no cursor to keep.
    pub fn containerless(line: ShippedLine) -> Self {
        Self { container: String::new(), cursor: Cursor::default(), line }
    }
}

/// One line on disk. Records of containerless lines leave out `container` and `cursor`;
/// records of spools written before such lines existed always have both.
#[derive(Serialize, Deserialize)]
struct Record {
    line: ShippedLine,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    container: String,
    #[serde(default, skip_serializing_if = "is_unset")]
    cursor: Cursor,
}

fn is_unset(cursor: &Cursor) -> bool {
    *cursor == Cursor::default()
}

/// A container's cursor and the `seq` of the line that set it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    seq: u64,
    cursor: Cursor,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct State {
    next_seq: u64,
    forgotten_through: u64,
    cursors: HashMap<String, Kept>,
    dropped: Vec<Dropped>,
}

type AppEnv = Arc<(String, String)>;

struct Segment {
    first_seq: u64,
    /// `first_seq - 1` while empty.
    last_seq: u64,
    bytes: u64,
    /// Runs of consecutive lines of one app and environment: (last `seq` of the run, whose),
    /// so a dropped segment's lines are counted without reading it.
    runs: Vec<(u64, AppEnv)>,
}

impl Segment {
    fn new(first_seq: u64) -> Self {
        Self { first_seq, last_seq: first_seq - 1, bytes: 0, runs: Vec::new() }
    }

    fn add(&mut self, seq: u64, app: &str, env: &str, bytes: u64) {
        self.last_seq = seq;
        self.bytes += bytes;
        match self.runs.last_mut() {
            Some((last, who)) if who.0 == app && who.1 == env => *last = seq,
            _ => self.runs.push((seq, Arc::new((app.to_string(), env.to_string())))),
        }
    }

    /// Lines after `forgotten` per app and environment.
    fn unforgotten(&self, forgotten: u64) -> impl Iterator<Item = (&AppEnv, u64)> {
        let mut prev = self.first_seq - 1;
        self.runs.iter().filter_map(move |(last, who)| {
            let from = prev.max(forgotten);
            prev = *last;
            (*last > from).then(|| (who, *last - from))
        })
    }
}

/// A batch read from the spool, to be acknowledged with [`Spool::ack`].
#[derive(Debug)]
pub struct Pending {
    /// The batch as the request's JSON body (a [`protocol::logs::LogBatch`]), written from the
    /// records' bytes.
    pub body: bytes::Bytes,
    /// The drop counts it carries.
    pub dropped: Vec<Dropped>,
    /// `seq` of its last line; 0 when it carries only drop counts.
    pub last_seq: u64,
    /// It holds as much as a batch may: more may be waiting.
    pub full: bool,
    /// Where the record after its last line is: (segment, offset).
    end: (u64, u64),
}

pub struct Spool {
    dir: PathBuf,
    cap: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// Appends to the last segment.
    writer: Option<BufWriter<File>>,
    /// A record's JSON is written here first (one buffer for every record).
    scratch: Vec<u8>,
    total: u64,
    next_seq: u64,
    forgotten: u64,
    cursors: HashMap<String, Kept>,
    dropped: BTreeMap<(String, String), u64>,
    /// No line after `forgotten` lies before this (segment, offset).
    head: (u64, u64),
    last_saved: Instant,
    /// The last segment's bytes in its file, and the next `seq`, as of the last flush that
    /// worked: what a failed write goes back to.
    flushed: (u64, u64),
    /// Start a new segment rather than continue the last one (whose end a failed write left).
    sealed: bool,
}

/// An acknowledgement that deletes no segment writes the state at most this often: losing it
/// only means lines are sent again, which the control plane takes once.
const SAVE_EVERY: Duration = Duration::from_secs(1);

const STATE: &str = "state.json";

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, holding at most about `cap` bytes of lines.
    pub fn open(dir: &Path, cap: u64) -> anyhow::Result<Self> {
        use anyhow::Context;
        protocol::files::private_dir(dir)?;
        let state_path = dir.join(STATE);
        let state: State = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the log spool's state {} is unreadable; move the directory away to start an empty spool (the control plane then needs to forget this node's log numbers)",
                    state_path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", state_path.display())),
        };
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            cap,
            // Small against the cap, so a full spool drops a small part of its oldest lines.
            segment_bytes: (cap / 16).clamp(4096, 4 << 20),
            segments: VecDeque::new(),
            writer: None,
            scratch: Vec::new(),
            total: 0,
            next_seq: state.next_seq.max(1),
            forgotten: state.forgotten_through,
            cursors: state.cursors,
            dropped: state.dropped.into_iter().map(|d| ((d.app, d.env), d.lines)).collect(),
            head: (0, 0),
            last_saved: Instant::now(),
            flushed: (0, 1),
            sealed: false,
        };
        let mut firsts: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        firsts.sort_unstable();
        for first in firsts {
            let segment = spool.recover(first).with_context(|| {
                format!("reading the log spool segment {}", segment_path(dir, first).display())
            })?;
            spool.next_seq = spool.next_seq.max(segment.last_seq + 1);
            if segment.last_seq <= spool.forgotten {
                std::fs::remove_file(segment_path(dir, first))?;
            } else {
                spool.total += segment.bytes;
                spool.segments.push_back(segment);
            }
        }
        spool.head = (spool.segments.front().map_or(0, |s| s.first_seq), 0);
        Ok(spool)
    }

    /// Reads a segment back: its runs, and the cursors of its records. A record that does not
    /// end in a newline or does not parse was torn by a crash: the file is cut before it.
    fn recover(&mut self, first: u64) -> anyhow::Result<Segment> {
        let path = segment_path(&self.dir, first);
        let mut segment = Segment::new(first.max(1));
        let mut reader = BufReader::new(File::open(&path)?);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                break;
            }
            let record = match buf.last() {
                Some(b'\n') => serde_json::from_slice::<Record>(&buf).ok(),
                _ => None,
            };
            let Some(record) = record.filter(|r| r.line.seq > segment.last_seq) else {
                tracing::warn!(file = %path.display(), offset = segment.bytes, "cutting a torn record off the log spool");
                OpenOptions::new().write(true).open(&path)?.set_len(segment.bytes)?;
                break;
            };
            let seq = record.line.seq;
            segment.add(seq, &record.line.app, &record.line.env, n as u64);
            if !record.container.is_empty() && self.cursors.get(&record.container).is_none_or(|k| k.seq < seq)
            {
                self.cursors.insert(record.container, Kept { seq, cursor: record.cursor });
            }
        }
        Ok(segment)
    }

    /// Where `container`'s output was read up to, as far as the spool has it.
    pub fn cursor(&self, container: &str) -> Option<Cursor> {
        self.cursors.get(container).map(|k| k.cursor.clone())
    }

    /// Forgets the cursors of containers that no longer exist.
    pub fn retain_containers(&mut self, exists: impl Fn(&str) -> bool) {
        self.cursors.retain(|id, _| exists(id));
    }

    /// Bytes of lines held.
    pub fn bytes(&self) -> u64 {
        self.total
    }

    /// Lines not yet acknowledged (dropped ones aside).
    pub fn unacknowledged(&self) -> u64 {
        self.next_seq - 1 - self.forgotten.min(self.next_seq - 1)
    }

    /// Gives `c` the next `seq` and appends it (buffered: see [`Spool::flush`]); when the spool
    /// is full, its oldest lines are dropped and counted first. A line that cannot be written
    /// is counted as dropped too, so the loss shows.
    pub fn append(&mut self, c: Collected) -> anyhow::Result<u64> {
        let Collected { container, cursor, mut line } = c;
        let seq = self.next_seq;
        line.seq = seq;
        let record = Record { line, container, cursor };
        match self.write(&record) {
            Ok(len) => {
                let segment = self.segments.back_mut().expect("opened by write");
                segment.add(seq, &record.line.app, &record.line.env, len);
                self.total += len;
                self.next_seq += 1;
                if !record.container.is_empty() {
                    self.cursors.insert(record.container, Kept { seq, cursor: record.cursor });
                }
                Ok(seq)
            }
            Err(e) => {
                self.count_lost(&record.line.app, &record.line.env, 1);
                Err(e)
            }
        }
    }

    fn write(&mut self, record: &Record) -> anyhow::Result<u64> {
        let mut bytes = std::mem::take(&mut self.scratch);
        bytes.clear();
        serde_json::to_writer(&mut bytes, record)?;
        bytes.push(b'\n');
        let len = bytes.len() as u64;
        let written = self.write_bytes(&bytes, len);
        self.scratch = bytes;
        written
    }

    fn write_bytes(&mut self, bytes: &[u8], len: u64) -> anyhow::Result<u64> {
        if self.segments.back().is_none_or(|s| s.bytes >= self.segment_bytes) || self.writer.is_none() {
            self.open_writer()?;
        }
        while self.total + len > self.cap && self.segments.len() > 1 {
            self.drop_oldest()?;
        }
        if let Err(e) = self.writer.as_mut().expect("opened above").write_all(bytes) {
            self.roll_back();
            return Err(e.into());
        }
        Ok(len)
    }

    /// Continues the last segment when it has room, else starts a new one.
    fn open_writer(&mut self) -> anyhow::Result<()> {
        self.flush()?;
        self.writer = None;
        let reuse = !std::mem::take(&mut self.sealed)
            && self.segments.back().is_some_and(|s| s.bytes < self.segment_bytes);
        if !reuse {
            self.segments.push_back(Segment::new(self.next_seq));
        }
        let first = self.segments.back().expect("pushed above").first_seq;
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(segment_path(&self.dir, first))?;
        self.writer = Some(BufWriter::with_capacity(64 * 1024, file));
        self.flushed = (self.segments.back().expect("pushed above").bytes, self.next_seq);
        Ok(())
    }

    /// A write or flush failed (a full disk): what was buffered and did not reach the file
    /// whole is lost. The file is cut after its last whole record, the lost lines are counted
    /// as dropped, and their numbers are given again: no batch carried them, as only flushed
    /// lines are shipped. Writing goes on in a new segment.
    fn roll_back(&mut self) {
        if let Some(writer) = self.writer.take() {
            // Without flushing again what is still buffered.
            let _ = writer.into_parts();
        }
        self.sealed = true;
        let Some(segment) = self.segments.back_mut() else { return };
        let path = segment_path(&self.dir, segment.first_seq);
        let (mut bytes, mut last) = (self.flushed.0, self.flushed.1 - 1);
        if let Ok(mut file) = File::open(&path) {
            if file.seek(SeekFrom::Start(bytes)).is_ok() {
                let mut reader = BufReader::new(file);
                let mut buf = Vec::new();
                while let Ok(n @ 1..) = reader.read_until(b'\n', &mut buf) {
                    let whole = buf.last() == Some(&b'\n');
                    match serde_json::from_slice::<Record>(&buf).ok().filter(|r| whole && r.line.seq > last) {
                        Some(record) => (bytes, last) = (bytes + n as u64, record.line.seq),
                        None => break,
                    }
                    buf.clear();
                }
            }
        }
        if let Err(e) = OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(bytes)) {
            tracing::warn!(file = %path.display(), error = %e, "cutting a failed write off the log spool failed");
        }
        let mut lost = 0;
        for (who, n) in segment.unforgotten(last.max(self.forgotten)) {
            *self.dropped.entry((who.0.clone(), who.1.clone())).or_default() += n;
            lost += n;
        }
        let mut start = segment.first_seq;
        segment.runs.retain_mut(|(run_last, _)| {
            let keep = start <= last;
            start = *run_last + 1;
            *run_last = (*run_last).min(last);
            keep
        });
        self.total -= segment.bytes - bytes;
        segment.bytes = bytes;
        segment.last_seq = last;
        self.next_seq = last + 1;
        tracing::warn!(
            lines = lost,
            "writing the log spool failed; the lines not written are counted as dropped"
        );
        // Best effort: the disk may well refuse this too.
        let _ = self.save_state();
    }

    /// Drops the oldest segment (never the one being written): its lines not yet acknowledged
    /// are counted per app and environment, and the state says so before the file goes.
    fn drop_oldest(&mut self) -> anyhow::Result<()> {
        let Some(oldest) = self.segments.front() else { return Ok(()) };
        let mut lost = 0;
        for (who, n) in oldest.unforgotten(self.forgotten) {
            *self.dropped.entry((who.0.clone(), who.1.clone())).or_default() += n;
            lost += n;
        }
        if lost > 0 {
            tracing::warn!(lines = lost, "the log spool is full; dropping its oldest lines");
        }
        self.forgotten = self.forgotten.max(oldest.last_seq);
        self.save_state()?;
        self.remove_front()
    }

    fn remove_front(&mut self) -> anyhow::Result<()> {
        let Some(segment) = self.segments.pop_front() else { return Ok(()) };
        if self.segments.is_empty() {
            self.writer = None;
        }
        self.total -= segment.bytes;
        match std::fs::remove_file(segment_path(&self.dir, segment.first_seq)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        if self.head.0 == segment.first_seq {
            self.head = (self.segments.front().map_or(0, |s| s.first_seq), 0);
        }
        Ok(())
    }

    /// Counts `lines` of `app` and `env` that could not be spooled, like dropped ones.
    pub fn count_lost(&mut self, app: &str, env: &str, lines: u64) {
        *self.dropped.entry((app.to_string(), env.to_string())).or_default() += lines;
    }

    /// Writes buffered records to the file: only flushed lines may be shipped.
    pub fn flush(&mut self) -> std::io::Result<()> {
        let Some(writer) = &mut self.writer else { return Ok(()) };
        match writer.flush() {
            Ok(()) => {
                self.flushed = (self.segments.back().map_or(0, |s| s.bytes), self.next_seq);
                Ok(())
            }
            Err(e) => {
                self.roll_back();
                Err(e)
            }
        }
    }

    /// Writes the state, after the records it speaks of.
    fn save_state(&mut self) -> anyhow::Result<()> {
        self.flush()?;
        let state = State {
            next_seq: self.next_seq,
            forgotten_through: self.forgotten,
            cursors: self.cursors.clone(),
            dropped: self
                .dropped
                .iter()
                .map(|((app, env), n)| Dropped { app: app.clone(), env: env.clone(), lines: *n })
                .collect(),
        };
        protocol::files::write_private(&self.dir.join(STATE), &serde_json::to_vec(&state)?)?;
        self.last_saved = Instant::now();
        Ok(())
    }

    /// Writes everything down (at shutdown).
    pub fn close(&mut self) -> anyhow::Result<()> {
        self.save_state()
    }

    /// The oldest lines not yet acknowledged (at most `max_lines`, about `max_bytes`) and the
    /// drop counts not yet acknowledged; `None` when there is nothing to send.
    #[cfg(test)]
    pub fn batch(&mut self, max_lines: usize, max_bytes: u64) -> anyhow::Result<Option<Pending>> {
        self.batch_after(None, max_lines, max_bytes)
    }

    /// How many lines a [`Spool::batch_after`] of `sent` would find now (at most).
    pub fn lines_after(&self, sent: Option<&Pending>) -> u64 {
        let after = sent.map_or(self.forgotten, |p| p.last_seq.max(self.forgotten));
        (self.next_seq - 1).saturating_sub(after)
    }

    /// The lines after those of `sent` (a batch still on its way), so that several batches can
    /// be in flight; without `sent`, [`Spool::batch`]. Drop counts go only in a batch that
    /// follows none, so that no count is sent twice before it is acknowledged.
    pub fn batch_after(
        &mut self,
        sent: Option<&Pending>,
        max_lines: usize,
        max_bytes: u64,
    ) -> anyhow::Result<Option<Pending>> {
        self.flush()?;
        let dropped: Vec<Dropped> = match sent {
            Some(_) => Vec::new(),
            None => self
                .dropped
                .iter()
                .map(|((app, env), n)| Dropped { app: app.clone(), env: env.clone(), lines: *n })
                .collect(),
        };
        // A batch of drop counts only says nothing about where its successor starts.
        let sent = sent.filter(|p| p.last_seq > 0);
        let after = sent.map_or(self.forgotten, |p| p.last_seq.max(self.forgotten));
        // Where to start reading: only a hint, as lines at or before `after` are skipped anyway
        // (the spool may have dropped the segment it points into).
        let from = sent.map_or(self.head, |p| p.end);
        // The body is written as the records are read: each record's `line` object is already
        // the JSON of a shipped line, so it is copied, not parsed and written again.
        let mut body = Vec::with_capacity(64 << 10);
        body.extend_from_slice(b"{\"lines\":[");
        let (mut count, mut last_seq) = (0usize, 0u64);
        let mut end = from;
        let mut bytes = 0;
        let mut full = false;
        let start = self.segments.iter().position(|s| s.last_seq > after);
        'segments: for segment in self.segments.iter().skip(start.unwrap_or(self.segments.len())) {
            let offset = if from.0 == segment.first_seq { from.1 } else { 0 };
            let mut file = File::open(segment_path(&self.dir, segment.first_seq))?;
            file.seek(SeekFrom::Start(offset))?;
            let mut reader = BufReader::new(file.take(segment.bytes.saturating_sub(offset)));
            let mut at = offset;
            let mut buf = Vec::new();
            loop {
                if count >= max_lines || (bytes >= max_bytes && count > 0) {
                    full = true;
                    break 'segments;
                }
                buf.clear();
                let n = reader.read_until(b'\n', &mut buf)? as u64;
                if n == 0 {
                    break;
                }
                at += n;
                let (seq, line) = record_line(&buf)?;
                if seq > after {
                    bytes += n;
                    if count > 0 {
                        body.push(b',');
                    }
                    match line {
                        Some(raw) => body.extend_from_slice(raw),
                        None => {
                            let record: Record = serde_json::from_slice(&buf)?;
                            serde_json::to_writer(&mut body, &record.line)?;
                        }
                    }
                    count += 1;
                    last_seq = seq;
                }
                end = (segment.first_seq, at);
            }
        }
        if count == 0 && dropped.is_empty() {
            return Ok(None);
        }
        body.extend_from_slice(b"],\"dropped\":");
        serde_json::to_writer(&mut body, &dropped)?;
        body.extend_from_slice(format!(",\"forgotten_through\":{}}}", self.forgotten).as_bytes());
        let body = bytes::Bytes::from(body);
        Ok(Some(Pending { body, dropped, last_seq, full, end }))
    }

    /// The control plane has every line up to `through`: they are forgotten, and the drop
    /// counts `sent` carried are too.
    pub fn ack(&mut self, sent: &Pending, through: u64) -> anyhow::Result<()> {
        if through >= self.next_seq {
            // It has lines numbered past this node's counter: the spool was lost or replaced.
            // Numbering on from here at least keeps the lines to come from being taken for
            // lines it already has.
            tracing::warn!(
                through,
                next = self.next_seq,
                "the control plane has more of this node's log lines than its spool numbered; numbering on from there"
            );
            self.flush()?;
            self.next_seq = through + 1;
            self.writer = None;
        }
        let through = through.min(self.next_seq - 1);
        if sent.last_seq > 0 && through >= sent.last_seq && through > self.forgotten {
            self.head = sent.end;
        }
        self.forgotten = self.forgotten.max(through);
        for d in &sent.dropped {
            let key = (d.app.clone(), d.env.clone());
            if let Some(n) = self.dropped.get_mut(&key) {
                *n = n.saturating_sub(d.lines);
                if *n == 0 {
                    self.dropped.remove(&key);
                }
            }
        }
        let deleting = self.segments.front().is_some_and(|s| s.last_seq <= self.forgotten);
        if deleting || self.last_saved.elapsed() >= SAVE_EVERY {
            self.save_state()?;
        }
        while self.segments.front().is_some_and(|s| s.last_seq <= self.forgotten) {
            self.remove_front()?;
        }
        Ok(())
    }
}

/// A record's `seq` and, when it is laid out as this spool writes records (`{"line":{"seq":N,`
/// first), the bytes of its `line` object; otherwise only the `seq`, from a full parse.
fn record_line(record: &[u8]) -> anyhow::Result<(u64, Option<&[u8]>)> {
    const PREFIX: &[u8] = b"{\"line\":{\"seq\":";
    if let Some(rest) = record.strip_prefix(PREFIX) {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let seq = std::str::from_utf8(&rest[..digits]).ok().and_then(|d| d.parse::<u64>().ok());
        if let (Some(seq), Some(len)) = (seq, object_len(&record[8..])) {
            return Ok((seq, Some(&record[8..8 + len])));
        }
    }
    let record: Record = serde_json::from_slice(record)?;
    Ok((record.line.seq, None))
}

/// The length of the JSON object at the start of `b`: braces and brackets counted outside
/// strings, strings skipped to their closing quote. Only ever given the spool's own records,
/// which serde_json wrote; `None` when the object does not end in `b`.
fn object_len(b: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                // To the closing quote: past every escaped character.
                i += 1;
                loop {
                    i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
                    if b[i] == b'"' {
                        break;
                    }
                    i += 2;
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
impl Pending {
    /// The batch its body holds.
    pub fn batch(&self) -> LogBatch {
        serde_json::from_slice(&self.body).expect("a batch body")
    }
}

#[cfg(test)]
#[path = "spool_tests.rs"]
mod tests;

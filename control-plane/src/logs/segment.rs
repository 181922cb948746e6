//! The log store's file format: each app environment's lines are a chain of append-only
//! segment files, each a run of records, one record per shipped batch that held lines of that
//! environment. Written here rather than with a crate: logs are appended once, read newest
//! first or after a cursor, and dropped a whole file at a time, which no embedded database we
//! tried does at the rate agents ship (SQLite with its text index took 18 to 38 µs a line).
//!
//! A record: a 48-byte header (magic, payload length, CRC-32 of the payload, line count, first
//! and last line id, earliest and latest line time), the payload (the node's name, then each
//! line: id, time, replica, release, source, stream, process and text), and a 4-byte trailer
//! holding the record's whole length, so a reader walks a segment from its end as easily as
//! from its start. What is committed is said by the store's journal (`meta.rs`), not by the
//! files: bytes past a chain's committed end are cut off when the store opens.

#[cfg(test)]
use protocol::logs::ShippedLine;
use protocol::logs::{LogSource, LogStream, ShippedLineRef};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0x3147_4c50;
pub const HEADER: usize = 48;
const TRAILER: usize = 4;
/// Fixed part of a line in the payload: id, at, replica, release, source, stream, process
/// length, text length.
const LINE_FIXED: usize = 8 + 8 + 4 + 4 + 1 + 1 + 2 + 4;

/// A record's header, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: usize,
    pub count: u32,
    pub first_id: i64,
    pub last_id: i64,
    pub min_at: i64,
    pub max_at: i64,
}

/// One line as stored, borrowing the segment's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub id: i64,
    pub at: i64,
    pub replica: u32,
    pub release: u32,
    pub source: LogSource,
    pub stream: LogStream,
    pub process: &'a str,
    pub text: &'a [u8],
}

fn source_byte(s: LogSource) -> u8 {
    match s {
        LogSource::App => 0,
        LogSource::Build => 1,
        LogSource::Router => 2,
        LogSource::Platform => 3,
    }
}

fn source_of(b: u8) -> LogSource {
    match b {
        1 => LogSource::Build,
        2 => LogSource::Router,
        3 => LogSource::Platform,
        _ => LogSource::App,
    }
}

/// Appends one record of `lines` (each with its id and time) shipped by `node` to `buf`;
/// answers its header.
pub fn encode(buf: &mut Vec<u8>, node: &str, lines: &[(i64, i64, &ShippedLineRef<'_>)]) -> Header {
    let start = buf.len();
    buf.resize(start + HEADER, 0);
    let node = &node.as_bytes()[..node.len().min(u16::MAX as usize)];
    buf.extend_from_slice(&(node.len() as u16).to_le_bytes());
    buf.extend_from_slice(node);
    let (mut min_at, mut max_at) = (i64::MAX, i64::MIN);
    for (id, at, l) in lines {
        let process = &l.process.as_bytes()[..l.process.len().min(u16::MAX as usize)];
        let text = &l.text.as_bytes()[..l.text.len().min(u32::MAX as usize)];
        buf.reserve(LINE_FIXED + process.len() + text.len());
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(&at.to_le_bytes());
        buf.extend_from_slice(&l.replica.to_le_bytes());
        buf.extend_from_slice(&l.release.to_le_bytes());
        buf.push(source_byte(l.source));
        buf.push(u8::from(l.stream == LogStream::Stderr));
        buf.extend_from_slice(&(process.len() as u16).to_le_bytes());
        buf.extend_from_slice(&(text.len() as u32).to_le_bytes());
        buf.extend_from_slice(process);
        buf.extend_from_slice(text);
        min_at = min_at.min(*at);
        max_at = max_at.max(*at);
    }
    let payload_len = buf.len() - start - HEADER;
    let crc = crc32fast::hash(&buf[start + HEADER..]);
    let len = HEADER + payload_len + TRAILER;
    let h = Header {
        len,
        count: lines.len() as u32,
        first_id: lines.first().map_or(0, |l| l.0),
        last_id: lines.last().map_or(0, |l| l.0),
        min_at,
        max_at,
    };
    let head = &mut buf[start..start + HEADER];
    head[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    head[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    head[8..12].copy_from_slice(&crc.to_le_bytes());
    head[12..16].copy_from_slice(&h.count.to_le_bytes());
    head[16..24].copy_from_slice(&h.first_id.to_le_bytes());
    head[24..32].copy_from_slice(&h.last_id.to_le_bytes());
    head[32..40].copy_from_slice(&h.min_at.to_le_bytes());
    head[40..48].copy_from_slice(&h.max_at.to_le_bytes());
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    h
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

fn i64_at(b: &[u8], i: usize) -> i64 {
    i64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

/// The header of the record at the start of `b`, when a whole record is there (and, with
/// `check`, its payload matches its CRC).
pub fn header(b: &[u8], check: bool) -> Option<Header> {
    if b.len() < HEADER + TRAILER || u32_at(b, 0) != MAGIC {
        return None;
    }
    let payload = u32_at(b, 4) as usize;
    let len = HEADER + payload + TRAILER;
    if b.len() < len || u32_at(b, len - TRAILER) as usize != len {
        return None;
    }
    if check && crc32fast::hash(&b[HEADER..HEADER + payload]) != u32_at(b, 8) {
        return None;
    }
    Some(Header {
        len,
        count: u32_at(b, 12),
        first_id: i64_at(b, 16),
        last_id: i64_at(b, 24),
        min_at: i64_at(b, 32),
        max_at: i64_at(b, 40),
    })
}

/// The records of a segment's bytes, oldest first, as (offset, header); stops at the first
/// bytes that are not a whole record (with `check`, also at a payload that fails its CRC).
pub fn records(b: &[u8], check: bool) -> Vec<(usize, Header)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = header(&b[at..], check) {
        out.push((at, h));
        at += h.len;
    }
    out
}

/// The node that shipped the record at the start of `rec`, and its lines.
/// Bytes that do not hold what they say (a damaged file) give fewer lines, never a panic.
pub fn lines(rec: &[u8]) -> (&str, LineIter<'_>) {
    let Some(h) = header(rec, false) else { return ("", LineIter { b: &[] }) };
    let payload = &rec[HEADER..h.len - TRAILER];
    let node_len = payload.get(..2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let (Some(node), Some(rest)) = (payload.get(2..2 + node_len), payload.get(2 + node_len..)) else {
        return ("", LineIter { b: &[] });
    };
    (std::str::from_utf8(node).unwrap_or(""), LineIter { b: rest })
}

pub struct LineIter<'a> {
    b: &'a [u8],
}

impl<'a> Iterator for LineIter<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        let b = self.b;
        if b.len() < LINE_FIXED {
            return None;
        }
        let process_len = u16::from_le_bytes([b[26], b[27]]) as usize;
        let text_len = u32_at(b, 28) as usize;
        let end = LINE_FIXED + process_len + text_len;
        if b.len() < end {
            return None;
        }
        self.b = &b[end..];
        Some(Line {
            id: i64_at(b, 0),
            at: i64_at(b, 8),
            replica: u32_at(b, 16),
            release: u32_at(b, 20),
            source: source_of(b[24]),
            stream: if b[25] == 1 { LogStream::Stderr } else { LogStream::Stdout },
            process: std::str::from_utf8(&b[LINE_FIXED..LINE_FIXED + process_len]).unwrap_or(""),
            text: &b[LINE_FIXED + process_len..end],
        })
    }
}

/// A segment file of a chain, as the store keeps it in memory.
#[derive(Debug, Clone)]
pub struct Segment {
    pub first_id: i64,
    pub file: std::sync::Arc<File>,
    /// Committed bytes: readers read no further.
    pub len: u64,
    pub last_id: i64,
    pub lines: u64,
    pub min_at: i64,
    pub max_at: i64,
}

pub fn segment_path(chain: &Path, first_id: i64) -> PathBuf {
    chain.join(format!("{first_id:020}.seg"))
}

impl Segment {
    /// A new, empty segment file whose first line will be `first_id`.
    pub fn create(chain: &Path, first_id: i64) -> std::io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(segment_path(chain, first_id))?;
        file.set_len(0)?;
        Ok(Self::empty(first_id, file))
    }

    /// `file` as a segment holding nothing yet; [`Segment::note`] counts its records.
    fn empty(first_id: i64, file: File) -> Self {
        Self {
            first_id,
            file: std::sync::Arc::new(file),
            len: 0,
            last_id: first_id - 1,
            lines: 0,
            min_at: i64::MAX,
            max_at: i64::MIN,
        }
    }

    /// An existing segment cut to its committed `len` (`None`: its whole records), with what
    /// its records say.
    pub fn open(path: &Path, first_id: i64, len: Option<u64>) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().read(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        let want = len.unwrap_or(size).min(size);
        let mut buf = vec![0; want as usize];
        file.read_exact_at(&mut buf, 0)?;
        let mut seg = Self::empty(first_id, file);
        // Only whole records that pass their CRC count: a machine that lost power may have
        // kept the journal's word but not all of the file's bytes.
        for (_, h) in records(&buf, true) {
            seg.note(&h);
        }
        if seg.len < size {
            seg.file.set_len(seg.len)?;
        }
        Ok(seg)
    }

    /// Counts a record appended to the file.
    pub fn note(&mut self, h: &Header) {
        self.len += h.len as u64;
        self.last_id = self.last_id.max(h.last_id);
        self.lines += u64::from(h.count);
        self.min_at = self.min_at.min(h.min_at);
        self.max_at = self.max_at.max(h.max_at);
    }

    /// The segment's committed bytes, into `buf` (reused from segment to segment, so a scan
    /// allocates and clears memory once).
    pub fn read_into(&self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        buf.resize(self.len as usize, 0);
        self.file.read_exact_at(buf, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(text: &str, source: LogSource) -> ShippedLine {
        ShippedLine {
            seq: 1,
            at: String::new(),
            app: "a".into(),
            env: "e".into(),
            source,
            process: "web".into(),
            replica: 2,
            release: 7,
            stream: LogStream::Stderr,
            text: text.into(),
        }
    }

    #[test]
    fn records_read_back_forward_and_a_torn_or_corrupt_tail_is_not_a_record() {
        let a = shipped("first ✓", LogSource::App);
        let b = shipped("", LogSource::Router);
        let mut buf = Vec::new();
        let (a, b) = (a.borrowed(), b.borrowed());
        let h1 = encode(&mut buf, "node-1", &[(5, 100, &a), (9, 50, &b)]);
        let h2 = encode(&mut buf, "n2", &[(12, 300, &b)]);
        assert_eq!((h1.first_id, h1.last_id, h1.min_at, h1.max_at, h1.count), (5, 9, 50, 100, 2));
        let recs = records(&buf, true);
        assert_eq!(recs.iter().map(|r| r.1).collect::<Vec<_>>(), [h1, h2]);
        let (node, lines) = lines(&buf[recs[0].0..]);
        let lines: Vec<_> = lines.collect();
        assert_eq!(node, "node-1");
        assert_eq!(lines[0].text, "first ✓".as_bytes());
        assert_eq!((lines[0].id, lines[0].at, lines[0].replica, lines[0].release), (5, 100, 2, 7));
        assert_eq!((lines[0].process, lines[0].stream), ("web", LogStream::Stderr));
        assert_eq!((lines[1].source, lines[1].text.len()), (LogSource::Router, 0));
        // A torn tail and a flipped payload byte end the records there.
        assert_eq!(records(&buf[..buf.len() - 1], true).len(), 1);
        let mut bad = buf.clone();
        bad[h1.len + HEADER + 1] ^= 1;
        assert_eq!(records(&bad, true).len(), 1);
        assert_eq!(records(&bad, false).len(), 2, "reads of committed bytes skip the CRC");
        // A record whose node length points past its payload gives no lines, not a panic.
        let mut damaged = buf[..h1.len].to_vec();
        damaged[HEADER..HEADER + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(super::lines(&damaged).1.count(), 0);
        assert_eq!(super::lines(b"not a record").1.count(), 0);
    }
}

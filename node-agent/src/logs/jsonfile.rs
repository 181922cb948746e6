//! Reading a container's json-file log straight from disk (the `LogPath` Docker reports), as
//! Fluent Bit and Vector do, instead of through dockerd's log stream: for every follower dockerd
//! decodes that same file and frames each entry again, which on a small machine cost as much CPU
//! as the rest of the log pipeline. No crate reads Docker's json-file with its rotation, so
//! this does.
//!
//! Docker rotates by renaming `<path>` to `<path>.1` (and `.1` to `.2`, ...) and creating a new
//! `<path>`. Files are told apart by inode: [`LogFiles`] holds the files still to read, oldest
//! first, and when the one it follows is at its end and `<path>` is another file, it queues the
//! files that came after it (more than one when rotation was quicker than the reader). An open
//! file keeps its content after being renamed or deleted, so what was written before a rotation
//! is always read to its end.

use serde::Deserialize;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Rotated files looked for (`<path>.1` ..); Docker keeps `max-file - 1` of them.
const MAX_ROTATED: usize = 32;
/// Bytes read at once.
const CHUNK: usize = 256 * 1024;
/// A "line" longer than this is not Docker's (its entries are at most 16 KiB, escaped): it is
/// dropped rather than held in memory.
const MAX_PENDING: usize = 1 << 20;

/// One entry of the log: a write of the container (Docker splits a long line into entries of
/// 16 KiB without a newline).
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub stderr: bool,
    /// Docker's time in the sortable form of [`crate::lines::sortable_time`].
    pub at: String,
    pub log: String,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow, default)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

struct Open {
    file: File,
    ino: u64,
}

impl Open {
    fn new(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let ino = file.metadata()?.ino();
        Ok(Self { file, ino })
    }
}

/// A container's log files, read oldest first and followed across rotations.
pub struct LogFiles {
    path: PathBuf,
    /// Files still to read, oldest first; the last one is `<path>` as last seen.
    queue: VecDeque<Open>,
    /// Bytes read from the front file and not yet a whole line.
    buf: Vec<u8>,
}

impl LogFiles {
    /// Opens the log at `path` with every rotated file still kept, to be read from the oldest.
    pub fn open(path: &Path) -> io::Result<Self> {
        let queue = after(path, None)?.into();
        Ok(Self { path: path.to_path_buf(), queue, buf: Vec::new() })
    }

    /// The entries of the next chunk; `None` when the newest file is read to its end.
    /// Blocking (it reads files).
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<Entry>>> {
        loop {
            let Some(front) = self.queue.front_mut() else { return Ok(None) };
            let start = self.buf.len();
            self.buf.resize(start + CHUNK, 0);
            let n = read_some(&mut front.file, &mut self.buf[start..]);
            self.buf.truncate(start + n.as_ref().map_or(0, |n| *n));
            let n = n?;
            if n > 0 {
                let entries = self.take_lines();
                if !entries.is_empty() {
                    return Ok(Some(entries));
                }
                if self.buf.len() > MAX_PENDING {
                    self.buf.clear();
                }
                continue;
            }
            if self.queue.len() > 1 {
                // A rotated file is complete: Docker writes whole entries, so a partial line
                // left at its end is a torn write that will not be finished.
                self.queue.pop_front();
                self.buf.clear();
                continue;
            }
            if !self.rotated()? {
                return Ok(None);
            }
        }
    }

    /// Whether `<path>` is no longer the file followed; if so the files after it are queued.
    fn rotated(&mut self) -> io::Result<bool> {
        let Some(last) = self.queue.back() else { return Ok(false) };
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.ino() == last.ino => return Ok(false),
            Ok(_) => {}
            // Between Docker's rename and its create: the next look finds the new file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        let newer = after(&self.path, Some(last.ino))?;
        let rotated = !newer.is_empty();
        self.queue.extend(newer);
        Ok(rotated)
    }

    /// Whole lines at the start of the buffer, parsed; unparsable lines are skipped.
    fn take_lines(&mut self) -> Vec<Entry> {
        let Some(end) = self.buf.iter().rposition(|b| *b == b'\n') else { return Vec::new() };
        let entries = self.buf[..end].split(|b| *b == b'\n').filter_map(parse).collect();
        self.buf.drain(..=end);
        entries
    }
}

fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// One json-file line: `{"log":"...\n","stream":"stdout","time":"2026-...Z"}`.
fn parse(line: &[u8]) -> Option<Entry> {
    let raw: Raw = serde_json::from_slice(line).ok()?;
    Some(Entry {
        stderr: raw.stream == "stderr",
        at: crate::lines::sortable_time(&raw.time),
        log: raw.log.into_owned(),
    })
}

/// The files of the log at `path` newer than the file with inode `seen` (all of them when
/// `None`, or when that file is no longer among them), oldest first, ending with `<path>`.
fn after(path: &Path, seen: Option<u64>) -> io::Result<Vec<Open>> {
    let current = Open::new(path)?;
    if seen == Some(current.ino) {
        return Ok(Vec::new());
    }
    // Newest first: `.1`, `.2`, ...
    let mut rotated = Vec::new();
    for i in 1..=MAX_ROTATED {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{i}"));
        match Open::new(Path::new(&name)) {
            Ok(open) => rotated.push(open),
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
    }
    // Rotated after `current` was opened: `current` is read instead.
    if let Some(i) = rotated.iter().position(|o| o.ino == current.ino) {
        rotated.drain(..=i);
    }
    // Read already: it and everything older.
    if let Some(i) = seen.and_then(|seen| rotated.iter().position(|o| o.ino == seen)) {
        rotated.truncate(i);
    }
    rotated.reverse();
    rotated.push(current);
    Ok(rotated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(n: usize) -> String {
        format!("{{\"log\":\"line {n}\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-27T10:00:01.{n}Z\"}}\n")
    }

    fn append(path: &Path, from: usize, to: usize) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        for n in from..to {
            f.write_all(line(n).as_bytes()).unwrap();
        }
    }

    /// Docker's rotation with `max-file=3`: `.2` goes, `.1` → `.2`, the current file → `.1`,
    /// a new current file.
    fn rotate(path: &Path) {
        let name = |i: usize| PathBuf::from(format!("{}.{i}", path.display()));
        let _ = std::fs::remove_file(name(2));
        let _ = std::fs::rename(name(1), name(2));
        std::fs::rename(path, name(1)).unwrap();
        std::fs::File::create(path).unwrap();
    }

    fn drain(files: &mut LogFiles) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(entries) = files.next_chunk().unwrap() {
            out.extend(entries.into_iter().map(|e| e.log.trim_end().to_string()));
        }
        out
    }

    fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|n| format!("line {n}")).collect()
    }

    #[test]
    fn entries_are_parsed_with_stream_and_sortable_time() {
        let e = parse(br#"{"log":"a \"q\"\n","stream":"stderr","time":"2026-11-27T10:00:01.5Z"}"#).unwrap();
        assert_eq!(
            e,
            Entry { stderr: true, at: "2026-11-27T10:00:01.500000000".into(), log: "a \"q\"\n".into() }
        );
        assert_eq!(parse(b"{\"log\":\"torn"), None);
    }

    #[test]
    fn reads_rotated_files_oldest_first_then_follows_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        append(&path, 0, 3);
        rotate(&path);
        append(&path, 3, 5);
        let mut files = LogFiles::open(&path).unwrap();
        assert_eq!(drain(&mut files), numbered(0..5));
        // A partial line waits for its end.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        let half = line(5);
        f.write_all(&half.as_bytes()[..10]).unwrap();
        assert_eq!(drain(&mut files), Vec::<String>::new());
        f.write_all(&half.as_bytes()[10..]).unwrap();
        append(&path, 6, 8);
        assert_eq!(drain(&mut files), numbered(5..8));
        // Written, then rotated twice before the reader looked again: nothing is missed.
        append(&path, 8, 10);
        rotate(&path);
        append(&path, 10, 12);
        rotate(&path);
        append(&path, 12, 13);
        assert_eq!(drain(&mut files), numbered(8..13));
        // Rotated past what Docker keeps: the open file is still read to its end.
        append(&path, 13, 14);
        rotate(&path);
        rotate(&path);
        rotate(&path);
        append(&path, 14, 15);
        assert_eq!(drain(&mut files), numbered(13..15));
    }

    #[test]
    fn a_missing_log_is_an_error_to_fall_back_on() {
        let dir = tempfile::tempdir().unwrap();
        assert!(LogFiles::open(&dir.path().join("none")).is_err());
    }
}

//! Reads of one app environment's chain, outside the store's lock: a snapshot of its segments
//! (their files stay readable while retention deletes them) walked newest first for pages,
//! oldest first after a cursor, or counted by id range for drains. Segment and record headers
//! (id and time bounds) skip what cannot match without reading its lines, and a search first
//! looks for its text anywhere in a record before looking line by line.

use super::segment::{self, Header, Line, Segment};
use super::store::{format_time, Filter};
use protocol::logs::LogEntry;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ops::ControlFlow;

/// A chain as a reader sees it: lines below `floor` are gone (retention raised it).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub floor: i64,
    pub segs: Vec<Segment>,
}

/// A text search: ASCII letters match either case, like `grep -i` for English text.
pub struct Matcher(aho_corasick::AhoCorasick);

impl Matcher {
    pub fn new(text: &str) -> anyhow::Result<Self> {
        Ok(Self(aho_corasick::AhoCorasick::builder().ascii_case_insensitive(true).build([text])?))
    }

    fn is_match(&self, b: &[u8]) -> bool {
        self.0.is_match(b)
    }
}

/// Ids a walk covers: above `after`, up to `upto`, and from the chain's floor on.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub after: i64,
    pub upto: i64,
}

/// Walks the lines of `snap` in `span` (and in `[since, until]` when given), newest first when
/// `backward`, calling `f` with the line's node and the line until it breaks. `text` skips
/// records that do not hold it anywhere.
pub fn walk<'m>(
    snap: &Snapshot,
    span: Span,
    times: (Option<i64>, Option<i64>),
    backward: bool,
    text: Option<&'m Matcher>,
    keep: &dyn Fn(&Header) -> bool,
    mut f: impl FnMut(&str, &Line<'_>) -> ControlFlow<()>,
) -> anyhow::Result<()> {
    let after = span.after.max(snap.floor - 1);
    let (since, until) = (times.0.unwrap_or(i64::MIN), times.1.unwrap_or(i64::MAX));
    let segs: Box<dyn Iterator<Item = &Segment>> =
        if backward { Box::new(snap.segs.iter().rev()) } else { Box::new(snap.segs.iter()) };
    let mut buf = Vec::new();
    for seg in segs {
        if seg.lines == 0 || seg.last_id <= after || seg.first_id > span.upto {
            continue;
        }
        if seg.max_at < since || seg.min_at > until {
            continue;
        }
        // The snapshot holds the file open: a segment retention deletes meanwhile stays readable.
        seg.read_into(&mut buf)?;
        let mut recs = segment::records(&buf, false);
        if backward {
            recs.reverse();
        }
        for (off, h) in recs {
            if h.last_id <= after
                || h.first_id > span.upto
                || h.max_at < since
                || h.min_at > until
                || !keep(&h)
            {
                continue;
            }
            let rec = &buf[off..off + h.len];
            if text.is_some_and(|m| !m.is_match(&rec[segment::HEADER..])) {
                continue;
            }
            let (node, lines) = segment::lines(rec);
            let mut in_span =
                lines.filter(|l| l.id > after && l.id <= span.upto && l.at >= since && l.at <= until);
            if backward {
                let all: Vec<_> = in_span.collect();
                for l in all.iter().rev() {
                    if f(node, l).is_break() {
                        return Ok(());
                    }
                }
            } else {
                for l in &mut in_span {
                    if f(node, &l).is_break() {
                        return Ok(());
                    }
                }
            }
        }
    }
    Ok(())
}

fn entry(node: &str, l: &Line<'_>) -> LogEntry {
    LogEntry {
        id: l.id,
        at: format_time(l.at),
        source: l.source,
        process: l.process.to_string(),
        replica: l.replica,
        release: l.release,
        node: node.to_string(),
        stream: l.stream,
        text: String::from_utf8_lossy(l.text).into_owned(),
    }
}

fn wanted(f: &Filter, text: Option<&Matcher>, l: &Line<'_>) -> bool {
    f.process.as_deref().is_none_or(|p| p == l.process)
        && f.source.is_none_or(|s| s == l.source)
        && text.is_none_or(|m| m.is_match(l.text))
}

/// The newest `f.n` lines matching `f`, in time order (then id). Lines are stored close to
/// time order, so once `n` are held, records and segments wholly older than the oldest held
/// are skipped by their headers.
pub fn newest(snap: &Snapshot, f: &Filter) -> anyhow::Result<Vec<LogEntry>> {
    let text = f.grep.as_deref().map(Matcher::new).transpose()?;
    let n = f.n as usize;
    // The n newest by (at, id), oldest on top; `oldest` is its time once n are held.
    let mut held: BinaryHeap<Reverse<(i64, i64, usize)>> = BinaryHeap::new();
    let mut entries: Vec<Option<LogEntry>> = Vec::new();
    let oldest = std::cell::Cell::new(i64::MIN);
    let after = snap.floor - 1;
    for seg in snap.segs.iter().rev() {
        if seg.max_at < oldest.get() {
            continue;
        }
        let one = Snapshot { floor: snap.floor, segs: vec![seg.clone()] };
        let keep = |h: &Header| h.max_at >= oldest.get();
        let span = Span { after, upto: i64::MAX };
        walk(&one, span, (f.since, f.until), true, text.as_ref(), &keep, |node, l| {
            let key = (l.at, l.id);
            if !wanted(f, text.as_ref(), l)
                || (held.len() >= n && held.peek().is_some_and(|t| (t.0 .0, t.0 .1) >= key))
            {
                return ControlFlow::Continue(());
            }
            if held.len() >= n {
                let Reverse(out) = held.pop().expect("n held");
                entries[out.2] = None;
            }
            entries.push(Some(entry(node, l)));
            held.push(Reverse((key.0, key.1, entries.len() - 1)));
            if held.len() >= n {
                oldest.set(held.peek().map_or(i64::MIN, |t| t.0 .0));
            }
            ControlFlow::Continue(())
        })?;
    }
    let mut out: Vec<(i64, i64, LogEntry)> =
        held.into_iter().filter_map(|Reverse((at, id, i))| entries[i].take().map(|e| (at, id, e))).collect();
    out.sort_by_key(|(at, id, _)| (*at, *id));
    Ok(out.into_iter().map(|(_, _, e)| e).collect())
}

/// The first `f.n` lines matching `f` stored after id `after`, in store order.
pub fn after(snap: &Snapshot, f: &Filter, after: i64) -> anyhow::Result<Vec<LogEntry>> {
    after_map(snap, f, after, entry)
}

/// [`after`], each line made into a `T` by `map` (from its node and the line).
pub fn after_map<T>(
    snap: &Snapshot,
    f: &Filter,
    after: i64,
    map: impl Fn(&str, &Line<'_>) -> T,
) -> anyhow::Result<Vec<T>> {
    let text = f.grep.as_deref().map(Matcher::new).transpose()?;
    let mut out = Vec::new();
    let span = Span { after, upto: i64::MAX };
    walk(snap, span, (f.since, f.until), false, text.as_ref(), &|_| true, |node, l| {
        if wanted(f, text.as_ref(), l) {
            out.push(map(node, l));
        }
        if out.len() >= f.n as usize {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(out)
}

/// Lines in `span`, counting at most `cap`; whole records inside the span count by header.
pub fn count(snap: &Snapshot, span: Span, cap: u64) -> anyhow::Result<u64> {
    let lo = span.after.max(snap.floor - 1);
    let mut n = 0u64;
    let mut buf = Vec::new();
    for seg in &snap.segs {
        if n >= cap {
            break;
        }
        if seg.lines == 0 || seg.last_id <= lo || seg.first_id > span.upto {
            continue;
        }
        if seg.first_id > lo && seg.last_id <= span.upto {
            n += seg.lines;
            continue;
        }
        seg.read_into(&mut buf)?;
        for (off, h) in segment::records(&buf, false) {
            if h.last_id <= lo || h.first_id > span.upto {
                continue;
            }
            if h.first_id > lo && h.last_id <= span.upto {
                n += u64::from(h.count);
            } else {
                let (_, lines) = segment::lines(&buf[off..off + h.len]);
                n += lines.filter(|l| l.id > lo && l.id <= span.upto).count() as u64;
            }
        }
    }
    Ok(n.min(cap))
}

/// The ids of the newest `n` lines in `span`, newest first.
pub fn newest_ids(snap: &Snapshot, span: Span, n: usize) -> anyhow::Result<Vec<i64>> {
    let mut ids = Vec::new();
    if n == 0 {
        return Ok(ids);
    }
    walk(snap, span, (None, None), true, None, &|_| true, |_, l| {
        ids.push(l.id);
        if ids.len() >= n {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(ids)
}

//! The log store: shipped lines in append-only segment files, one chain per app environment
//! (`<data dir>/logs/chains/<app>/<env>/`), with a journal (`meta.rs`) of what is committed,
//! each node's position (every (node, seq) stored once), per-app limits and the lines lost to
//! caps. Writes take a short lock; reads take a snapshot of one chain under it and scan
//! outside it. Retention raises a chain's floor (the lowest id still shown) and deletes the
//! segments wholly below it.

use super::meta::{self, chain_key, DropRec, End, Entry, Journal};
use super::scan::{self, Snapshot};
use super::segment::{self, Segment};
use anyhow::Context;
use protocol::logs::{LogBatch, LogBatchRef, LogEntry, LogSource, ShippedLineRef};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const MINUTE_NS: i64 = 60_000_000_000;
/// A segment is closed once it holds this much; retention frees space a segment at a time.
const SEGMENT_BYTES: u64 = 1 << 20;
/// Stored seqs kept past a gap in a node's lines, at most (an agent sends in order, so a gap
/// is rare and short).
const MAX_ABOVE: usize = 100_000;

/// What a read asks for.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub process: Option<String>,
    pub source: Option<LogSource>,
    /// Unix nanoseconds, inclusive.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Text the line holds (ASCII letters in either case).
    pub grep: Option<String>,
    pub n: u32,
    /// Only lines stored after this id, oldest first (follow mode); otherwise the newest `n`.
    pub after: Option<i64>,
}

/// A page as the store read it, in time order (follow pages: in store order).
#[derive(Debug, Clone)]
pub struct Page {
    pub lines: Vec<LogEntry>,
    pub cursor: i64,
    pub dropped: u64,
}

/// What retention removed in one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub by_age: u64,
    pub by_size: u64,
}

#[derive(Clone)]
pub struct LogStore {
    pub(super) inner: Arc<Mutex<Inner>>,
    /// Per `app/env`, the highest line id stored: follow-mode readers wait on it.
    stored: Arc<watch::Sender<HashMap<String, i64>>>,
    /// Bytes stored since retention last ran, and the amount that wakes it early: a flood must
    /// not run past the size cap until the next scheduled run.
    growth: Arc<Growth>,
}

#[derive(Default)]
struct Growth {
    bytes: std::sync::atomic::AtomicU64,
    limit: std::sync::atomic::AtomicU64,
    wake: tokio::sync::Notify,
}

pub(crate) struct Inner {
    dir: PathBuf,
    /// A store for tests in a temporary directory, removed with it.
    ephemeral: bool,
    segment_bytes: u64,
    journal: Journal,
    pub(crate) state: meta::State,
    /// Per chain key, its segments oldest first.
    pub(super) chains: BTreeMap<String, Vec<Segment>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.ephemeral {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Unix nanoseconds of an RFC 3339 time.
pub fn parse_time(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// RFC 3339 in UTC with all nine digits of the fraction: the same width for every line, so
/// times line up in a terminal and sort as text.
pub fn format_time(ns: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(ns.into())
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

pub fn now_ns() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

pub(super) fn minute(t: i64) -> i64 {
    t.saturating_sub(t.rem_euclid(MINUTE_NS))
}

fn chain_dir(dir: &Path, key: &str) -> PathBuf {
    dir.join("chains").join(key)
}

/// Reads a chain's segment files against what the journal committed: bytes past the committed
/// end and segments after it are cut off (a batch a crash interrupted), segments wholly below
/// the floor deleted.
fn open_chain(dir: &Path, floor: i64, end: End) -> anyhow::Result<Vec<Segment>> {
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(first) = name.strip_suffix(".seg").and_then(|n| n.parse::<i64>().ok()) {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    let mut segs = Vec::new();
    for first in firsts {
        let path = segment::segment_path(dir, first);
        if first > end.seg {
            std::fs::remove_file(&path)?;
            continue;
        }
        let seg = Segment::open(&path, first, (first == end.seg).then_some(end.len))?;
        if (seg.lines == 0 || seg.last_id < floor) && first != end.seg {
            std::fs::remove_file(&path)?;
            continue;
        }
        segs.push(seg);
    }
    Ok(segs)
}

impl Inner {
    fn open(dir: &Path, ephemeral: bool, segment_bytes: u64) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir.join("chains"))?;
        let (journal, mut state) = Journal::open(&dir.join("meta.jsonl"))?;
        let mut chains = BTreeMap::new();
        for app in std::fs::read_dir(dir.join("chains"))? {
            let app = app?;
            for env in std::fs::read_dir(app.path())? {
                let env = env?;
                let key = chain_key(&app.file_name().to_string_lossy(), &env.file_name().to_string_lossy());
                match state.chains.get(&key).and_then(|c| c.end.map(|e| (c.floor, e))) {
                    Some((floor, end)) => {
                        let segs = open_chain(&env.path(), floor, end)
                            .with_context(|| format!("reading the log segments of {key}"))?;
                        chains.insert(key, segs);
                    }
                    // Never committed (a crash during its first batch) or forgotten.
                    None => std::fs::remove_dir_all(env.path())?,
                }
            }
            let _ = std::fs::remove_dir(app.path()); // only when empty
        }
        state.chains.retain(|k, _| chains.contains_key(k));
        let mut inner = Self { dir: dir.to_path_buf(), ephemeral, segment_bytes, journal, state, chains };
        let snapshot = inner.state.clone();
        inner.journal.compact(&snapshot)?;
        Ok(inner)
    }

    pub(super) fn record(&mut self, e: Entry) -> anyhow::Result<()> {
        self.journal.append(&e)?;
        self.state.apply(e);
        if self.journal.wants_compaction() {
            // The entry is in: a failed rewrite (a full disk) only leaves the journal long.
            let snapshot = self.state.clone();
            if let Err(e) = self.journal.compact(&snapshot) {
                tracing::warn!(error = %format!("{e:#}"), "rewriting the log store's journal failed; it is tried again later");
            }
        }
        Ok(())
    }

    fn floor(&self, key: &str) -> i64 {
        self.state.chains.get(key).map_or(0, |c| c.floor)
    }

    pub(crate) fn snapshot(&self, key: &str) -> Snapshot {
        Snapshot { floor: self.floor(key), segs: self.chains.get(key).cloned().unwrap_or_default() }
    }

    /// Appends one record per chain; answers the chains' new ends and what undoes the append.
    /// On failure every file is cut back to its committed end.
    fn append(
        &mut self,
        node: &str,
        groups: &Groups<'_, '_>,
    ) -> anyhow::Result<(Vec<(String, End)>, Touched)> {
        let mut ends = Vec::new();
        let mut touched: Touched = Vec::new();
        let mut buf = Vec::new();
        let result = (|| -> anyhow::Result<()> {
            for (key, lines) in groups {
                let segs = self.chains.entry(key.clone()).or_default();
                if segs.last().is_none_or(|s| s.len >= self.segment_bytes) {
                    let dir = chain_dir(&self.dir, key);
                    std::fs::create_dir_all(&dir)?;
                    segs.push(Segment::create(&dir, lines[0].0)?);
                }
                let last = segs.len() - 1;
                let seg = &mut segs[last];
                touched.push((key.clone(), last, seg.clone()));
                buf.clear();
                let h = segment::encode(&mut buf, node, lines);
                use std::io::Write;
                (&*seg.file).write_all(&buf)?;
                seg.note(&h);
                ends.push((key.clone(), End { seg: seg.first_id, len: seg.len }));
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.undo(touched);
            return Err(e);
        }
        Ok((ends, touched))
    }

    /// Appends lines that already have their ids (an earlier store's, imported), committed
    /// in one journal entry; they must come after every line stored.
    pub(super) fn append_with_ids(&mut self, node: &str, groups: &Groups<'_, '_>) -> anyhow::Result<()> {
        let last = groups.values().flat_map(|l| l.iter().map(|x| x.0)).max().unwrap_or(0);
        anyhow::ensure!(
            groups.values().flatten().all(|l| l.0 > self.state.last_id),
            "imported lines must come after every stored line"
        );
        let (ends, touched) = self.append(node, groups)?;
        if let Err(e) = self.record(Entry::Ends { last_id: last, ends }) {
            self.undo(touched);
            return Err(e);
        }
        Ok(())
    }

    /// Cuts appended records off again (their commit could not be written).
    fn undo(&mut self, touched: Touched) {
        for (key, i, before) in touched {
            if let Some(seg) = self.chains.get_mut(&key).and_then(|s| s.get_mut(i)) {
                let _ = seg.file.set_len(before.len);
                *seg = before;
            }
        }
    }

    fn insert(
        &mut self,
        node: &str,
        batch: &LogBatchRef<'_>,
        now: i64,
        known: Option<&HashSet<(String, String)>>,
    ) -> anyhow::Result<Inserted> {
        let mark = self.state.last_id;
        let mut pos = self.state.nodes.get(node).cloned().unwrap_or_default();
        let old = pos.through;
        let mut seen = HashSet::new();
        let mut id = mark;
        let mut bytes = 0u64;
        // Per app environment of the batch (a few at most): whether it is stored, and its lines.
        let mut envs: Vec<(&str, &str, bool, Lines<'_, '_>)> = Vec::new();
        for line in &batch.lines {
            let Ok(seq) = i64::try_from(line.seq) else { continue };
            if seq <= old || pos.above.contains(&seq) || !seen.insert(seq) {
                continue;
            }
            let (app, env) = (&*line.app, &*line.env);
            let i = match envs.iter().position(|e| e.0 == app && e.1 == env) {
                Some(i) => i,
                None => {
                    let named = protocol::AppName::new(app).is_ok() && protocol::EnvName::new(env).is_ok();
                    let ok = named && known.is_none_or(|k| k.contains(&(app.to_string(), env.to_string())));
                    envs.push((app, env, ok, Vec::new()));
                    envs.len() - 1
                }
            };
            // Lines of environments left out count as stored (in `seen`), with no id.
            if envs[i].2 {
                id += 1;
                // What the line takes in its segment.
                bytes += (line.text.len() + line.process.len() + 32) as u64;
                envs[i].3.push((id, parse_time(&line.at).unwrap_or(now), line));
            }
        }
        let groups: Groups<'_, '_> = envs
            .into_iter()
            .filter(|e| !e.3.is_empty())
            .map(|(app, env, _, lines)| (chain_key(app, env), lines))
            .collect();
        let (ends, touched) = self.append(node, &groups)?;
        // An agent sends its oldest unacknowledged line first: a batch that starts past the gap
        // means the agent no longer holds the lines in it (its spool dropped them and counted
        // them as dropped). Waiting for them would stall the node's shipping for good.
        let first = batch.lines.iter().map(|l| l.seq).min().and_then(|s| i64::try_from(s).ok());
        if let Some(first) = first.filter(|f| *f > pos.through + 1) {
            pos.through = first - 1;
        }
        // The agent says so itself when its spool dropped lines: none up to here will come.
        pos.through = pos.through.max(i64::try_from(batch.forgotten_through).unwrap_or(0));
        pos.above.extend(seen.iter().copied().filter(|s| *s > pos.through));
        while pos.above.first().is_some_and(|s| *s <= pos.through + 1) {
            let s = pos.above.pop_first().expect("looked at");
            pos.through = pos.through.max(s);
        }
        while pos.above.len() > MAX_ABOVE {
            pos.above.pop_first();
        }
        let new = id - mark;
        let changed = new > 0 || self.state.nodes.get(node) != Some(&pos);
        if changed {
            let commit = Entry::Batch { node: node.to_string(), pos: pos.clone(), last_id: id, ends };
            if let Err(e) = self.record(commit) {
                self.undo(touched);
                return Err(e);
            }
        }
        // A resent batch (every line stored before) does not count its losses twice.
        if batch.lines.is_empty() || new > 0 {
            for d in batch.dropped.iter().filter(|d| d.lines > 0) {
                let (app, env) = (d.app.clone(), d.env.clone());
                self.record(Entry::Drop(DropRec {
                    app,
                    env,
                    at: now,
                    mark,
                    lines: d.lines,
                    why: "agent".into(),
                }))?;
            }
        }
        let newest = groups.iter().filter_map(|(k, l)| Some((k.clone(), l.last()?.0))).collect();
        Ok(Inserted { through: pos.through, bytes, newest })
    }

    /// Raises `key`'s floor to `floor`, recording the lines it hides as lost for `why` (per
    /// minute they were written), and deletes the segments wholly below it. Answers how many.
    pub(super) fn raise_floor(&mut self, key: &str, floor: i64, why: &str) -> anyhow::Result<u64> {
        let old = self.floor(key);
        if floor <= old {
            return Ok(0);
        }
        let snap = Snapshot { floor: old, segs: self.chains.get(key).cloned().unwrap_or_default() };
        let mut per_minute: BTreeMap<i64, u64> = BTreeMap::new();
        let span = scan::Span { after: old - 1, upto: floor - 1 };
        scan::walk(&snap, span, (None, None), false, None, &|_| true, |_, l| {
            *per_minute.entry(minute(l.at)).or_default() += 1;
            std::ops::ControlFlow::Continue(())
        })?;
        self.record(Entry::Floor { chain: key.to_string(), floor })?;
        let (app, env) = key.split_once('/').unwrap_or((key, ""));
        let mark = self.state.last_id;
        for (at, lines) in &per_minute {
            let d =
                DropRec { app: app.into(), env: env.into(), at: *at, mark, lines: *lines, why: why.into() };
            self.record(Entry::Drop(d))?;
        }
        if let Some(segs) = self.chains.get_mut(key) {
            let dir = chain_dir(&self.dir, key);
            while segs.first().is_some_and(|s| s.last_id < floor) {
                let seg = segs.remove(0);
                std::fs::remove_file(segment::segment_path(&dir, seg.first_id))?;
            }
        }
        Ok(per_minute.values().sum())
    }

    /// The floor that hides `key`'s lines written before `cutoff`: the first line at or after
    /// it, in store order (lines come close to time order; a late one behind it stays).
    pub(super) fn age_floor(&self, key: &str, cutoff: i64) -> anyhow::Result<i64> {
        let snap = self.snapshot(key);
        let mut floor = snap.floor;
        for seg in &snap.segs {
            if seg.max_at < cutoff {
                floor = floor.max(seg.last_id + 1);
                continue;
            }
            let one = Snapshot { floor: snap.floor, segs: vec![seg.clone()] };
            let mut first = None;
            scan::walk(
                &one,
                scan::Span { after: floor - 1, upto: i64::MAX },
                (None, None),
                false,
                None,
                &|_| true,
                |_, l| {
                    if l.at >= cutoff {
                        first = Some(l.id);
                        std::ops::ControlFlow::Break(())
                    } else {
                        std::ops::ControlFlow::Continue(())
                    }
                },
            )?;
            return Ok(first.unwrap_or(seg.last_id + 1));
        }
        Ok(floor)
    }

    /// Lines of `key` still shown.
    pub(super) fn count(&self, key: &str) -> anyhow::Result<u64> {
        scan::count(&self.snapshot(key), scan::Span { after: i64::MIN, upto: i64::MAX }, u64::MAX)
    }

    pub(super) fn bytes(&self, keys: impl Fn(&str) -> bool) -> u64 {
        self.chains.iter().filter(|(k, _)| keys(k)).flat_map(|(_, s)| s.iter()).map(|s| s.len).sum()
    }

    /// Removes the oldest segment among the chains `keys` picks, counting its lines as lost to
    /// size; answers its bytes and lines (`None`: nothing left).
    pub(super) fn drop_oldest(&mut self, keys: impl Fn(&str) -> bool) -> anyhow::Result<Option<(u64, u64)>> {
        let oldest = self
            .chains
            .iter()
            .filter(|(k, s)| keys(k) && !s.is_empty())
            .min_by_key(|(_, s)| s[0].first_id)
            .map(|(k, s)| (k.clone(), s[0].last_id, s[0].len));
        let Some((key, last, len)) = oldest else { return Ok(None) };
        let lines = self.raise_floor(&key, last + 1, "size")?;
        // An empty segment raises no floor: it goes all the same, so each call frees one.
        if let Some(segs) = self.chains.get_mut(&key).filter(|s| s.first().is_some_and(|s| s.last_id <= last))
        {
            let seg = segs.remove(0);
            std::fs::remove_file(segment::segment_path(&chain_dir(&self.dir, &key), seg.first_id))?;
        }
        Ok(Some((len, lines)))
    }

    pub(super) fn forget(&mut self, app: &str, env: Option<&str>) -> anyhow::Result<u64> {
        let keys: Vec<String> = self
            .chains
            .keys()
            .filter(|k| k.split_once('/').is_some_and(|(a, e)| a == app && env.is_none_or(|env| env == e)))
            .cloned()
            .collect();
        let mut gone = 0;
        for k in &keys {
            gone += self.count(k)?;
        }
        self.record(Entry::Forget { app: app.to_string(), env: env.map(str::to_string) })?;
        for k in keys {
            self.chains.remove(&k);
            std::fs::remove_dir_all(chain_dir(&self.dir, &k))?;
        }
        Ok(gone)
    }
}

/// Lines of one chain, each with its id and time.
type Lines<'a, 'b> = Vec<(i64, i64, &'a ShippedLineRef<'b>)>;
/// A batch's lines per chain.
pub(super) type Groups<'a, 'b> = BTreeMap<String, Lines<'a, 'b>>;
/// Segments an append changed, as they were before it.
type Touched = Vec<(String, usize, Segment)>;

struct Inserted {
    through: i64,
    bytes: u64,
    newest: HashMap<String, i64>,
}

static EPHEMERAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl LogStore {
    /// Opens (or makes) the store in `dir`.
    pub async fn open(dir: &Path) -> anyhow::Result<Self> {
        Self::open_with(dir, false, SEGMENT_BYTES).await
    }

    /// A store of its own in a temporary directory, removed when the last handle goes: for tests.
    pub async fn open_in_memory() -> anyhow::Result<Self> {
        Self::open_small(1 << 20).await
    }

    /// [`LogStore::open_in_memory`] with segments of `segment_bytes`, so tests see several.
    pub async fn open_small(segment_bytes: u64) -> anyhow::Result<Self> {
        let n = EPHEMERAL.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("paas-logs-{}-{n}-{}", std::process::id(), now_ns()));
        Self::open_with(&dir, true, segment_bytes).await
    }

    async fn open_with(dir: &Path, ephemeral: bool, segment_bytes: u64) -> anyhow::Result<Self> {
        let owned = dir.to_path_buf();
        let inner = tokio::task::spawn_blocking(move || Inner::open(&owned, ephemeral, segment_bytes))
            .await?
            .with_context(|| format!("opening the log store {}", dir.display()))?;
        let newest = inner.chains.iter().filter_map(|(k, s)| Some((k.clone(), s.last()?.last_id))).collect();
        let stored = Arc::new(watch::channel(newest).0);
        let growth = Arc::new(Growth { limit: u64::MAX.into(), ..Default::default() });
        Ok(Self { inner: Arc::new(Mutex::new(inner)), stored, growth })
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the store off the async runtime (it reads or deletes files).
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut inner.lock().unwrap_or_else(|e| e.into_inner()))).await?
    }

    pub async fn close(&self) {}

    /// Stores a node's batch: each (node, seq) once, however often it comes. Answers the
    /// node's new `through`. Lines whose time cannot be read are stored at `now`.
    pub async fn insert(&self, node: &str, batch: &LogBatch, now: i64) -> anyhow::Result<u64> {
        self.insert_known(node, &batch.borrowed(), now, None).await
    }

    /// [`LogStore::insert`], leaving out lines of environments not in `known` (deleted while
    /// their last lines were on the way: a new app of the same name must not show them);
    /// they count as stored, so the node's position moves past them.
    pub async fn insert_known(
        &self,
        node: &str,
        batch: &LogBatchRef<'_>,
        now: i64,
        known: Option<&HashSet<(String, String)>>,
    ) -> anyhow::Result<u64> {
        // Appends to the page cache: short enough to do under the lock on the runtime's thread.
        let done = self.lock().insert(node, batch, now, known)?;
        if !done.newest.is_empty() {
            self.stored.send_modify(|m| m.extend(done.newest));
        }
        let g = &self.growth;
        let grown = g.bytes.fetch_add(done.bytes, Ordering::Relaxed) + done.bytes;
        if done.bytes > 0 && grown >= g.limit.load(Ordering::Relaxed) {
            g.wake.notify_one();
        }
        Ok(u64::try_from(done.through).unwrap_or(0))
    }

    /// Deletes every line of `app` (of its environment `env` when given) and its loss records:
    /// the app or environment was deleted, and a new one of the same name must start with an
    /// empty log.
    pub async fn forget(&self, app: &str, env: Option<&str>) -> anyhow::Result<u64> {
        let (app, env) = (app.to_string(), env.map(str::to_string));
        self.blocking(move |s| s.forget(&app, env.as_deref())).await
    }

    /// Waits until `bytes` of text were stored since the previous call, or `wait` passes;
    /// retention calls it between runs so that a flood is trimmed as it comes.
    pub async fn wait_for_growth(&self, bytes: u64, wait: Duration) {
        let g = &self.growth;
        g.limit.store(bytes.max(1), Ordering::Relaxed);
        if g.bytes.load(Ordering::Relaxed) < bytes {
            let _ = tokio::time::timeout(wait, g.wake.notified()).await;
        }
        g.bytes.store(0, Ordering::Relaxed);
    }

    /// Waits until a line of `app`/`env` with an id above `after` is stored, or `wait` passes.
    pub async fn wait_for_lines(&self, app: &str, env: &str, after: i64, wait: Duration) {
        let mut rx = self.stored.subscribe();
        let key = chain_key(app, env);
        let _ = tokio::time::timeout(wait, rx.wait_for(|m| m.get(&key).is_some_and(|id| *id > after))).await;
    }

    /// A page of `app`/`env`'s lines: the newest `n` matching in time order, or in follow mode
    /// the first `n` stored after `after`; with the lines lost in the span the page covers.
    pub async fn read(&self, app: &str, env: &str, f: &Filter) -> anyhow::Result<Page> {
        let key = chain_key(app, env);
        // The cursor, the chain and the losses come from one moment.
        let (snap, newest, dropped) = {
            let s = self.lock();
            let dropped: Vec<DropRec> =
                s.state.dropped.iter().filter(|d| d.app == app && d.env == env).cloned().collect();
            (s.snapshot(&key), s.state.last_id, dropped)
        };
        let filter = f.clone();
        let lines = tokio::task::spawn_blocking(move || match filter.after {
            Some(after) => scan::after(&snap, &filter, after),
            None => scan::newest(&snap, &filter),
        })
        .await??;
        let full = lines.len() as u64 >= u64::from(f.n);
        let cursor = match (f.after, full) {
            // More are waiting: continue after the last one read.
            (Some(_), true) => lines.last().map_or(newest, |l| l.id),
            (Some(after), false) => newest.max(after),
            (None, _) => newest,
        };
        let lost = match f.after {
            // Follow pages: losses recorded since the previous page, each seen once. Lines aged
            // out long ago are not news to a follower.
            Some(after) => dropped
                .iter()
                .filter(|d| d.mark >= after && d.mark < cursor && d.why != "age")
                .map(|d| d.lines)
                .sum(),
            None => {
                // The span: what was asked for, narrowed to the lines shown when there are more.
                let first = lines.first().filter(|_| full).map(|l| parse_time(&l.at).unwrap_or(i64::MIN));
                // Losses are recorded per minute: a span takes in the minute it starts in.
                let lo = minute(f.since.unwrap_or(i64::MIN).max(first.unwrap_or(i64::MIN)));
                let hi = f.until.unwrap_or(i64::MAX);
                // Lines aged out count only when the caller asked for a time reaching back.
                let age = f.since.is_some();
                dropped
                    .iter()
                    .filter(|d| d.at >= lo && d.at <= hi && (age || d.why != "age"))
                    .map(|d| d.lines)
                    .sum()
            }
        };
        Ok(Page { lines, cursor, dropped: lost })
    }

    /// The node's acknowledged position.
    pub async fn through(&self, node: &str) -> anyhow::Result<u64> {
        let t = self.lock().state.nodes.get(node).map_or(0, |p| p.through);
        Ok(u64::try_from(t).unwrap_or(0))
    }

    /// Bytes the store's segments hold.
    pub async fn used_bytes(&self) -> anyhow::Result<u64> {
        Ok(self.lock().bytes(|_| true))
    }

    /// Lines still shown, in every chain.
    pub async fn count(&self) -> anyhow::Result<u64> {
        self.blocking(|s| {
            let keys: Vec<String> = s.chains.keys().cloned().collect();
            keys.iter().map(|k| s.count(k)).sum()
        })
        .await
    }

    /// Hides lines written before `cutoff` (unix ns), then drops the oldest segments until
    /// the store holds at most `max_bytes`; what goes is recorded as dropped, per app, env and
    /// minute.
    pub async fn trim(&self, cutoff: i64, max_bytes: u64) -> anyhow::Result<Trimmed> {
        self.blocking(move |s| {
            let mut trimmed = Trimmed::default();
            let keys: Vec<String> = s.chains.keys().cloned().collect();
            for k in keys {
                let floor = s.age_floor(&k, cutoff)?;
                trimmed.by_age += s.raise_floor(&k, floor, "age")?;
            }
            trimmed.by_size += trim_size(s, max_bytes, |_| true)?;
            // Losses are kept four times as long as lines, then forgotten too.
            let before = cutoff.saturating_sub(now_ns().saturating_sub(cutoff).saturating_mul(3));
            if s.state.dropped.iter().any(|d| d.at < before) {
                s.record(Entry::Prune { before })?;
            }
            Ok(trimmed)
        })
        .await
    }
}

/// Drops the oldest segments of the chains `keys` picks while they hold more than `max`, down
/// to 90% of it (so a store at its cap is not trimmed on every run); answers the lines gone.
pub(super) fn trim_size(s: &mut Inner, max: u64, keys: impl Fn(&str) -> bool + Copy) -> anyhow::Result<u64> {
    let used = s.bytes(keys);
    if used <= max {
        return Ok(0);
    }
    let mut over = used - max * 9 / 10;
    let mut lines = 0;
    while over > 0 {
        let Some((bytes, n)) = s.drop_oldest(keys)? else { break };
        lines += n;
        over = over.saturating_sub(bytes);
    }
    Ok(lines)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

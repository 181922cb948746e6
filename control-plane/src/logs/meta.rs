//! The log store's journal (`meta.jsonl`): one JSON line per change that is not a line's bytes
//! (each batch's commit with the chains' new ends and the node's position, floors raised by
//! retention, environments forgotten, losses, per-app limits). The segment files hold only
//! lines; on open the journal says how much of each file is committed, so a batch cut short by
//! a crash is cut off and sent again by its agent, never stored twice. The journal is
//! rewritten as one snapshot line at open and whenever it has grown large.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Past this many bytes the journal is rewritten as a snapshot.
const COMPACT_AT: u64 = 8 << 20;

/// Lines lost for one app environment: to an agent's full spool (`agent`), the store's size
/// cap (`size`) or age limit (`age`). `at` is the minute the lines were written (for `agent`:
/// when the loss was heard of), `mark` the highest line id when it was recorded (followers see
/// each loss once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRec {
    pub app: String,
    pub env: String,
    pub at: i64,
    pub mark: i64,
    pub lines: u64,
    pub why: String,
}

/// Where a chain's committed bytes end: its newest segment and that segment's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    pub seg: i64,
    pub len: u64,
}

/// A node's position: every `seq` up to `through` is stored (or will never come), and the
/// ones in `above` are stored past a gap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePos {
    pub through: i64,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub above: BTreeSet<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub age_secs: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// A chain as the journal knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainMeta {
    /// The lowest line id still shown (retention raised it past older ones).
    pub floor: i64,
    pub end: Option<End>,
}

/// Everything the journal says, replayed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub last_id: i64,
    pub nodes: HashMap<String, NodePos>,
    pub chains: BTreeMap<String, ChainMeta>,
    pub dropped: Vec<DropRec>,
    pub limits: BTreeMap<String, Limits>,
}

/// The chains' map key (names are checked app and environment names, without `/`).
pub fn chain_key(app: &str, env: &str) -> String {
    format!("{app}/{env}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Entry {
    /// Lines committed without a node's position (an earlier store's lines, imported).
    Ends {
        last_id: i64,
        ends: Vec<(String, End)>,
    },
    Batch {
        node: String,
        pos: NodePos,
        last_id: i64,
        ends: Vec<(String, End)>,
    },
    Floor {
        chain: String,
        floor: i64,
    },
    /// An app (`env: None`) or one environment deleted: its lines, losses (and an app's
    /// limits) go.
    Forget {
        app: String,
        env: Option<String>,
    },
    Drop(DropRec),
    Prune {
        before: i64,
    },
    Limits {
        app: String,
        limits: Limits,
    },
    Snapshot(State),
}

impl State {
    pub fn apply(&mut self, e: Entry) {
        match e {
            Entry::Batch { node, pos, last_id, ends } => {
                self.last_id = self.last_id.max(last_id);
                self.nodes.insert(node, pos);
                for (chain, end) in ends {
                    self.chains.entry(chain).or_default().end = Some(end);
                }
            }
            Entry::Ends { last_id, ends } => {
                self.last_id = self.last_id.max(last_id);
                for (chain, end) in ends {
                    self.chains.entry(chain).or_default().end = Some(end);
                }
            }
            Entry::Floor { chain, floor } => {
                let c = self.chains.entry(chain).or_default();
                c.floor = c.floor.max(floor);
            }
            Entry::Forget { app, env } => {
                let hit = |a: &str, e: &str| a == app && env.as_deref().is_none_or(|env| env == e);
                self.chains.retain(|k, _| !k.split_once('/').is_some_and(|(a, e)| hit(a, e)));
                self.dropped.retain(|d| !hit(&d.app, &d.env));
                if env.is_none() {
                    self.limits.remove(&app);
                }
            }
            Entry::Drop(d) => self.dropped.push(d),
            Entry::Prune { before } => self.dropped.retain(|d| d.at >= before),
            Entry::Limits { app, limits } => {
                if limits == Limits::default() {
                    self.limits.remove(&app);
                } else {
                    self.limits.insert(app, limits);
                }
            }
            Entry::Snapshot(s) => *self = s,
        }
    }
}

/// The open journal, appended to.
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
    bytes: u64,
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)
}

impl Journal {
    /// Replays the journal at `path` (a torn last line, from a crash mid-write, is left out);
    /// the caller rewrites it as a snapshot once it has checked the files against it.
    pub fn open(path: &Path) -> anyhow::Result<(Self, State)> {
        let mut state = State::default();
        match std::fs::read(path) {
            Ok(text) => {
                for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    match serde_json::from_slice::<Entry>(line) {
                        Ok(e) => state.apply(e),
                        // Only a torn last line is expected; anything after it is not trusted.
                        Err(_) => break,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
        let j = Self { path: path.to_path_buf(), file: open_append(path)?, bytes: 0 };
        Ok((j, state))
    }

    /// Appends one entry. Not synced: a crash of the process loses nothing the kernel has, and
    /// a lost commit after a power cut is sent again by the agent.
    pub fn append(&mut self, e: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.bytes += line.len() as u64;
        Ok(())
    }

    pub fn wants_compaction(&self) -> bool {
        self.bytes > COMPACT_AT
    }

    /// Replaces the journal with one snapshot of `state` (written aside, then renamed over).
    pub fn compact(&mut self, state: &State) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("tmp");
        let mut line = serde_json::to_vec(&Entry::Snapshot(state.clone()))?;
        line.push(b'\n');
        {
            let _ = std::fs::remove_file(&tmp);
            let mut f = open_append(&tmp)?;
            f.write_all(&line)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        self.file = open_append(&self.path)?;
        self.bytes = line.len() as u64;
        Ok(())
    }
}

//! Central logs, the node's side: what every app and job container of this node writes is
//! followed (`tail`), numbered and kept on disk (`spool`), and shipped to the control plane in
//! batches until it acknowledges them; lines from no container (the ingress's access log, build
//! output) are handed in with [`LogHandle::push`]. Three parts run as one task:
//!
//! - the collector lists this node's containers every second (or at once when the reconcile
//!   loop or the job runner starts one) and keeps one reader on each, resuming at the cursor
//!   the spool keeps for it; a container about to be removed is first read to its end
//!   ([`LogHandle::drained`]); a reader at the end of its container's log file waits for
//!   `wake` (inotify) to report a change;
//! - the writer appends what the readers collected and what was pushed to the spool, which
//!   numbers it;
//! - the shipper (`ship`) sends the oldest unacknowledged lines (and the spool's drop counts),
//!   up to `ship::IN_FLIGHT` batches on their way at once, and makes the spool forget what the
//!   control plane acknowledged; while it cannot, it retries with backoff and the spool keeps filling up to
//!   its cap.

mod jsonfile;
mod ship;
mod spool;
mod tail;
mod wake;

use crate::docker::DockerClient;
pub use tail::MAX_LINE_BYTES;

use protocol::logs::ShippedLine;
use protocol::Client;
use spool::{Collected, Cursor, Spool};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The spool's cap unless configured (`--log-spool-mib`).
pub const DEFAULT_SPOOL_BYTES: u64 = 64 << 20;
/// How often the collector looks for containers nobody told it about.
const POLL: Duration = Duration::from_secs(1);
/// A batch carries at most this many lines, of about this many bytes.
const BATCH_LINES: usize = 5000;
const BATCH_BYTES: u64 = 1 << 20;
/// How long removing a container waits for its output to be read.
const DRAIN_WAIT: Duration = Duration::from_secs(5);
/// Lines between a reader and the writer; a full channel holds readers back (Docker keeps the
/// rest in its log files).
const CHANNEL_LINES: usize = 10_000;
/// Pushed lines waiting for the writer; beyond this they are dropped (and counted), as whoever
/// pushes (the ingress) must never wait for logging.
const PUSHED_LINES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Settings {
    /// Cap of the spool on disk; when full, its oldest lines are dropped and counted.
    pub spool_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { spool_bytes: DEFAULT_SPOOL_BYTES }
    }
}

/// What the reconcile loop and the job runner tell the collector, and how the ingress and the
/// builder hand it their lines.
#[derive(Clone)]
pub struct LogHandle {
    inner: Arc<Signals>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogHandle")
    }
}

struct Signals {
    started: Notify,
    drains: mpsc::UnboundedSender<(String, oneshot::Sender<()>)>,
    /// Each container's config values (by container name), masked in its lines: an app that
    /// prints its secrets must not put them in plain text into the spool and the store.
    configs: std::sync::Mutex<HashMap<String, Arc<Config>>>,
    /// Lines from no container, on their way to the writer.
    pushed: mpsc::Sender<ShippedLine>,
    /// Pushed lines that found the queue full, per app and environment, until the writer
    /// counts them in the spool.
    lost: std::sync::Mutex<HashMap<(String, String), u64>>,
}

type Config = std::collections::BTreeMap<String, String>;

impl Signals {
    fn new(
        drains: mpsc::UnboundedSender<(String, oneshot::Sender<()>)>,
        pushed: mpsc::Sender<ShippedLine>,
    ) -> Self {
        Self { started: Notify::new(), drains, configs: Default::default(), pushed, lost: Default::default() }
    }

    fn take_lost(&self) -> HashMap<(String, String), u64> {
        std::mem::take(&mut *self.lost.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn config(&self, name: &str) -> Option<Arc<Config>> {
        self.configs.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }
}

impl LogHandle {
    /// A container was just started: the collector looks now rather than at its next poll.
    pub fn started(&self) {
        self.inner.started.notify_one();
    }

    /// The config of container `name`, whose values its lines are masked of. A container's
    /// output is read only once its config is known (its cursor keeps what waits).
    pub fn config(&self, name: &str, config: &Config) {
        let mut configs = self.inner.configs.lock().unwrap_or_else(|p| p.into_inner());
        if configs.get(name).is_none_or(|c| **c != *config) {
            configs.insert(name.to_string(), Arc::new(config.clone()));
        }
    }

    /// Hands in a line that comes from no container (its `seq` is given by the spool). Never
    /// waits: when the writer is that far behind, the line is dropped and counted for its app
    /// and environment, so the loss shows. Without a running collector it goes nowhere.
    pub fn push(&self, line: ShippedLine) {
        match self.inner.pushed.try_send(line) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(line)) => {
                let mut lost = self.inner.lost.lock().unwrap_or_else(|p| p.into_inner());
                *lost.entry((line.app, line.env)).or_default() += 1;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// A handle whose pushed lines land in the returned receiver (at most `cap` waiting).
    #[cfg(test)]
    pub(crate) fn pushed_to(cap: usize) -> (Self, mpsc::Receiver<ShippedLine>) {
        let (drains, _) = mpsc::unbounded_channel();
        let (pushed, rx) = mpsc::channel(cap);
        (Self { inner: Arc::new(Signals::new(drains, pushed)) }, rx)
    }

    /// Lines pushed but dropped on a full queue and not yet counted in the spool.
    #[cfg(test)]
    pub(crate) fn lost(&self) -> HashMap<(String, String), u64> {
        self.inner.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until the output of stopped container `name` has been read to its end (a few
    /// seconds at most), so removing it next loses none of its lines.
    pub async fn drained(&self, name: &str) {
        let (tx, rx) = oneshot::channel();
        if self.inner.drains.send((name.to_string(), tx)).is_ok() {
            let _ = tokio::time::timeout(DRAIN_WAIT, rx).await;
        }
    }
}

/// A handle no collector listens to: telling it does nothing, and nothing is waited for.
impl Default for LogHandle {
    fn default() -> Self {
        let (drains, _) = mpsc::unbounded_channel();
        let (pushed, _) = mpsc::channel(1);
        Self { inner: Arc::new(Signals::new(drains, pushed)) }
    }
}

/// Now, as a line's `at`: RFC 3339 with nanoseconds, UTC, like Docker's timestamps.
pub fn now() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// The task that collects, spools and ships this node's app output.
pub struct Collector {
    docker: DockerClient,
    client: Client,
    node: String,
    spool: Arc<Mutex<Spool>>,
    signals: Arc<Signals>,
    drains: mpsc::UnboundedReceiver<(String, oneshot::Sender<()>)>,
    pushed: mpsc::Receiver<ShippedLine>,
}

fn lock(spool: &Mutex<Spool>) -> MutexGuard<'_, Spool> {
    spool.lock().unwrap_or_else(|p| p.into_inner())
}

impl Collector {
    /// Opens the spool in `dir`; the collector runs once [`Collector::run`] is spawned.
    pub fn new(
        settings: &Settings,
        dir: &Path,
        node: &str,
        docker: DockerClient,
        client: Client,
    ) -> anyhow::Result<(Self, LogHandle)> {
        let spool = Spool::open(dir, settings.spool_bytes)?;
        let (drains_tx, drains) = mpsc::unbounded_channel();
        let (pushed_tx, pushed) = mpsc::channel(PUSHED_LINES);
        let signals = Arc::new(Signals::new(drains_tx, pushed_tx));
        let handle = LogHandle { inner: signals.clone() };
        let spool = Arc::new(Mutex::new(spool));
        let node = node.to_string();
        let collector = Self { docker, client, node, spool, signals, drains, pushed };
        Ok((collector, handle))
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let (tx, rx) = mpsc::channel(CHANNEL_LINES);
        let ready = Arc::new(Notify::new());
        let shipper = ship::ship(self.spool.clone(), self.client, self.node, ready.clone(), shutdown.clone());
        let writer = write(self.spool.clone(), rx, self.pushed, self.signals.clone(), ready);
        let watcher = wake::Watcher::new();
        let waker = watcher.run(shutdown.clone());
        let readers = Readers {
            watcher: watcher.clone(),
            docker: self.docker,
            spool: self.spool,
            out: tx,
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
            active: HashMap::new(),
            stopped: HashMap::new(),
            ended: HashMap::new(),
            names: HashMap::new(),
        };
        let collector = readers.run(self.signals, self.drains, shutdown);
        tokio::join!(collector, writer, shipper, waker);
    }
}

/// One reader per container, and what ended readers left off at.
struct Readers {
    docker: DockerClient,
    /// Wakes readers at the end of their files when the files change.
    watcher: wake::Watcher,
    spool: Arc<Mutex<Spool>>,
    out: mpsc::Sender<Collected>,
    /// Readers, each answering where it left off.
    tasks: JoinSet<Option<Cursor>>,
    /// The container each reader task reads, to clean up after one that panicked.
    task_ids: HashMap<tokio::task::Id, String>,
    /// Containers (by id) being read, with who waits for their reader to end.
    active: HashMap<String, Vec<oneshot::Sender<()>>>,
    /// Tells the reader of a container (by id) that it stopped: a reader of its files then
    /// reads them to their end and ends.
    stopped: HashMap<String, watch::Sender<bool>>,
    /// Containers whose reader ended (they stopped), with where it left off: it is ahead of
    /// the spool's cursor while its last lines wait for the writer.
    ended: HashMap<String, Option<Cursor>>,
    /// Container names to ids, as last listed.
    names: HashMap<String, String>,
}

impl Readers {
    async fn run(
        mut self,
        signals: Arc<Signals>,
        mut drains: mpsc::UnboundedReceiver<(String, oneshot::Sender<()>)>,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut waiting: Vec<(String, oneshot::Sender<()>)> = Vec::new();
        loop {
            let look = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => true,
                _ = signals.started.notified() => true,
                Some(drain) = drains.recv() => {
                    waiting.push(drain);
                    true
                }
                Some(done) = self.tasks.join_next_with_id() => {
                    let (task, cursor) = match done {
                        Ok((task, cursor)) => (task, cursor),
                        Err(e) => (e.id(), None),
                    };
                    if let Some(id) = self.task_ids.remove(&task) {
                        self.stopped.remove(&id);
                        for waiter in self.active.remove(&id).unwrap_or_default() {
                            let _ = waiter.send(());
                        }
                        self.ended.insert(id, cursor);
                    }
                    false
                }
            };
            if look {
                self.look(&signals, &mut waiting).await;
            }
        }
        // Dropping the readers and the sender lets the writer finish what is queued.
        self.tasks.abort_all();
    }

    fn stop(&self, id: &str) {
        if let Some(stop) = self.stopped.get(id) {
            stop.send_replace(true);
        }
    }

    /// Starts a reader on every container that has none and may have output not read yet; a
    /// container someone is waiting to remove gets one whatever happened before, as it may
    /// have run again since its last reader ended.
    async fn look(&mut self, signals: &Signals, waiting: &mut Vec<(String, oneshot::Sender<()>)>) {
        let sources = match self.docker.log_sources().await {
            Ok(sources) => sources,
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "listing containers for their logs failed");
                return;
            }
        };
        let drained: HashSet<&str> = waiting.iter().map(|(name, _)| name.as_str()).collect();
        let mut live = HashSet::new();
        for source in sources {
            live.insert(source.id.clone());
            self.names.insert(source.name.clone(), source.id.clone());
            if self.active.contains_key(&source.id) {
                if !source.running {
                    self.stop(&source.id);
                }
                continue;
            }
            let Some(config) = signals.config(&source.name) else { continue };
            let ended = self.ended.get(&source.id);
            if !source.running && ended.is_some() && !drained.contains(source.name.as_str()) {
                continue;
            }
            let cursor = match ended {
                Some(Some(cursor)) => Some(cursor.clone()),
                _ => lock(&self.spool).cursor(&source.id),
            };
            self.ended.remove(&source.id);
            self.active.insert(source.id.clone(), Vec::new());
            let (docker, out, id) = (self.docker.clone(), self.out.clone(), source.id.clone());
            let (stop, stopped) = watch::channel(!source.running);
            self.stopped.insert(id.clone(), stop);
            let watcher = self.watcher.clone();
            let task = self.tasks.spawn(tail::follow(docker, source, cursor, config, out, stopped, watcher));
            self.task_ids.insert(task.id(), id);
        }
        for (name, waiter) in waiting.drain(..) {
            match self.names.get(&name).and_then(|id| self.active.get_mut(id)) {
                Some(waiters) => waiters.push(waiter),
                None => drop(waiter),
            }
        }
        let gone: Vec<String> = self.active.keys().filter(|id| !live.contains(*id)).cloned().collect();
        for id in gone {
            self.stop(&id);
        }
        self.ended.retain(|id, _| live.contains(id));
        self.names.retain(|_, id| live.contains(id));
        let active = &self.active;
        lock(&self.spool).retain_containers(|id| live.contains(id) || active.contains_key(id));
    }
}

/// Appends what the readers collected and what was pushed, flushing after each burst, and
/// tells the shipper. It ends once the readers are gone (at shutdown), after the lines pushed
/// until then: handles (and so the pushed queue's senders) may outlive the collector.
async fn write(
    spool: Arc<Mutex<Spool>>,
    mut rx: mpsc::Receiver<Collected>,
    mut pushed: mpsc::Receiver<ShippedLine>,
    signals: Arc<Signals>,
    ready: Arc<Notify>,
) {
    /// Lines appended under one lock, so the shipper gets its turn in a flood.
    const BURST: usize = 1000;
    let mut failing = false;
    let mut append = |spool: &mut Spool, c: Collected| match spool.append(c) {
        Ok(_) => failing = false,
        Err(e) => {
            if !failing {
                tracing::warn!(error = %format!("{e:#}"), "writing a log line to the spool failed; it is dropped");
                failing = true;
            }
        }
    };
    loop {
        let first = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => c,
                None => break,
            },
            Some(line) = pushed.recv() => Collected::containerless(line),
        };
        let mut spool = lock(&spool);
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(c) = next {
            append(&mut spool, c);
            taken += 1;
            next = if taken < BURST {
                rx.try_recv().ok().or_else(|| pushed.try_recv().ok().map(Collected::containerless))
            } else {
                None
            };
        }
        count_lost(&mut spool, &signals);
        if let Err(e) = spool.flush() {
            tracing::warn!(error = %e, "flushing the log spool failed");
        }
        drop(spool);
        ready.notify_one();
    }
    pushed.close();
    let mut spool = lock(&spool);
    while let Ok(line) = pushed.try_recv() {
        append(&mut spool, Collected::containerless(line));
    }
    count_lost(&mut spool, &signals);
    if let Err(e) = spool.close() {
        tracing::warn!(error = %format!("{e:#}"), "closing the log spool failed");
    }
}

/// Moves the counts of pushed lines dropped on a full queue into the spool, which ships them.
fn count_lost(spool: &mut Spool, signals: &Signals) {
    for ((app, env), n) in signals.take_lost() {
        tracing::warn!(app = %app, env = %env, lines = n, "the log queue was full; lines were dropped");
        spool.count_lost(&app, &env, n);
    }
}

#[cfg(test)]
mod docker_tests;
#[cfg(test)]
mod push_tests;

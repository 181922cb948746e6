//! Wakes a container's log reader when its json-file log changes: one inotify instance for the
//! node's readers, a watch on each followed log's directory (which also sees Docker's rotation:
//! a rename and a new file). A reader at the end of its file then waits for a change instead of
//! polling, so new output is read within milliseconds and hundreds of idle containers cost
//! nothing. Written over rustix's inotify calls (already in the tree) and tokio's `AsyncFd`;
//! the inotify crates would add a dependency for these few calls.
//!
//! A busy log changes on every write: the dispatcher reads the queued events, wakes their
//! readers, then pauses [`SETTLE`] before reading again, so the kernel folds a burst of writes
//! into one event and a flood costs a wake-up per pause, not per line.

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Pause between two reads of the events: the most a change waits before its reader wakes.
const SETTLE: Duration = Duration::from_millis(10);

/// The node's inotify instance; inert (every [`Watcher::watch`] answers `None`, so readers
/// poll) where inotify cannot be had.
#[derive(Clone, Default)]
pub struct Watcher {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    fd: AsyncFd<OwnedFd>,
    /// Watch descriptor to (its change counter, how many readers share it): two paths of one
    /// directory get the same descriptor.
    watches: Mutex<HashMap<i32, (watch::Sender<u64>, usize)>>,
}

/// A watch on one directory, removed when the last reader holding it drops it.
pub struct DirWatch {
    inner: Arc<Inner>,
    wd: i32,
    /// Changes when something in the directory changed since it was last looked at.
    pub changed: watch::Receiver<u64>,
}

impl Watcher {
    pub fn new() -> Self {
        // `AsyncFd::new` is deprecated for types whose descriptor could change or close under
        // it; an `OwnedFd` owns its descriptor for as long as the `AsyncFd` holds it (what
        // `register`, which needs `unsafe`, would have us promise).
        #[allow(deprecated)]
        let made = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)
            .map_err(std::io::Error::from)
            .and_then(AsyncFd::new);
        match made {
            Ok(fd) => Self { inner: Some(Arc::new(Inner { fd, watches: Mutex::default() })) },
            Err(e) => {
                tracing::debug!(error = %e, "inotify is not available; log readers poll their files");
                Self::default()
            }
        }
    }

    /// Watches `dir` for files written, created or renamed into it; `None` when it cannot (the
    /// system's watch limit, say): the reader polls instead.
    pub fn watch(&self, dir: &Path) -> Option<DirWatch> {
        let inner = self.inner.clone()?;
        let flags = WatchFlags::MODIFY | WatchFlags::CREATE | WatchFlags::MOVED_TO | WatchFlags::MOVED_FROM;
        let wd = match inotify::add_watch(inner.fd.get_ref(), dir, flags) {
            Ok(wd) => wd,
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot watch a log directory; its reader polls");
                return None;
            }
        };
        let changed = {
            let mut watches = lock(&inner.watches);
            let (sender, holders) = watches.entry(wd).or_insert_with(|| (watch::channel(0).0, 0));
            *holders += 1;
            sender.subscribe()
        };
        Some(DirWatch { inner, wd, changed })
    }

    /// Reads events and wakes the readers they concern, until `shutdown`.
    pub async fn run(&self, shutdown: CancellationToken) {
        let Some(inner) = &self.inner else { return };
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 16 * 1024];
        loop {
            let mut ready = tokio::select! {
                _ = shutdown.cancelled() => return,
                ready = inner.fd.readable() => match ready {
                    Ok(ready) => ready,
                    Err(e) => {
                        tracing::warn!(error = %e, "watching log files failed; log readers poll their files");
                        return;
                    }
                },
            };
            let mut woken: Vec<i32> = Vec::new();
            let mut everyone = false;
            let mut events = inotify::Reader::new(inner.fd.get_ref(), &mut buf);
            loop {
                match events.next() {
                    Ok(event) => {
                        // The queue overflowed: which logs changed is lost, so all are looked at.
                        everyone |= event.events().contains(ReadFlags::QUEUE_OVERFLOW);
                        if !woken.contains(&event.wd()) {
                            woken.push(event.wd());
                        }
                    }
                    Err(rustix::io::Errno::AGAIN) => {
                        ready.clear_ready();
                        break;
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "reading log file events failed; log readers poll their files");
                        return;
                    }
                }
            }
            drop(ready);
            {
                let watches = lock(&inner.watches);
                for (wd, (sender, _)) in watches.iter() {
                    if everyone || woken.contains(wd) {
                        sender.send_modify(|n| *n += 1);
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(SETTLE) => {}
            }
        }
    }
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        let mut watches = lock(&self.inner.watches);
        let Some((_, holders)) = watches.get_mut(&self.wd) else { return };
        *holders -= 1;
        if *holders == 0 {
            watches.remove(&self.wd);
            // Fails when the directory went with its container, which removed the watch.
            let _ = inotify::remove_watch(self.inner.fd.get_ref(), self.wd);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn a_write_rename_or_new_file_wakes_the_watch_and_dropping_it_unwatches() {
        let watcher = Watcher::new();
        assert!(watcher.inner.is_some(), "inotify is available on Linux");
        let shutdown = CancellationToken::new();
        let run = tokio::spawn({
            let (w, s) = (watcher.clone(), shutdown.clone());
            async move { w.run(s).await }
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        std::fs::write(&path, b"").unwrap();
        let mut w = watcher.watch(dir.path()).unwrap();
        let mut again = watcher.watch(dir.path()).unwrap();
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"x\n").unwrap();
        assert!(wait(&mut w.changed).await, "a write wakes");
        assert!(wait(&mut again.changed).await, "both holders of one directory wake");
        std::fs::rename(&path, dir.path().join("c-json.log.1")).unwrap();
        std::fs::write(&path, b"").unwrap();
        assert!(wait(&mut w.changed).await, "a rotation wakes");
        drop(again);
        assert_eq!(lock(&watcher.inner.as_ref().unwrap().watches).len(), 1, "still held once");
        drop(w);
        assert!(lock(&watcher.inner.as_ref().unwrap().watches).is_empty());
        shutdown.cancel();
        run.await.unwrap();
    }

    async fn wait(rx: &mut watch::Receiver<u64>) -> bool {
        tokio::time::timeout(Duration::from_secs(5), rx.changed()).await.is_ok()
    }

    #[test]
    fn a_missing_directory_is_not_watched() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            assert!(Watcher::new().watch(&dir.path().join("gone")).is_none());
        });
    }
}

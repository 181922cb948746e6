//! The log store's reads for drains: an app's lines after a drain's position in store order
//! (each environment's chain read from the position), how far behind a drain is, where to
//! skip to when it is too far behind, and how many of its unsent lines retention removed.

use super::format::DrainLine;
use crate::logs::meta::chain_key;
use crate::logs::scan::{self, Snapshot, Span};
use crate::logs::store::Filter;
use crate::logs::LogStore;

/// What a drain's read found.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    /// In store order (line id).
    pub lines: Vec<DrainLine>,
    /// The highest line id in the store when read: no line of these environments is between
    /// the drain's position and it but those read.
    pub newest: i64,
}

impl LogStore {
    /// The newest line id: where a new drain starts.
    pub(crate) async fn drain_start(&self) -> anyhow::Result<i64> {
        Ok(self.lock().state.last_id)
    }

    /// The chains of `app`'s `envs` as of now, and the newest line id.
    fn drain_snapshots(&self, app: &str, envs: &[String]) -> (Vec<(String, Snapshot)>, i64) {
        let s = self.lock();
        (envs.iter().map(|e| (e.clone(), s.snapshot(&chain_key(app, e)))).collect(), s.state.last_id)
    }

    /// Up to `n` lines of `app`'s `envs` stored after line `after`, oldest first.
    pub(crate) async fn drain_lines(
        &self,
        app: &str,
        envs: &[String],
        after: i64,
        n: u32,
    ) -> anyhow::Result<Lines> {
        let (snaps, newest) = self.drain_snapshots(app, envs);
        let app = app.to_string();
        tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            let filter = Filter { n, ..Filter::default() };
            for (env, snap) in &snaps {
                lines.extend(scan::after_map(snap, &filter, after, |node, l| DrainLine {
                    id: l.id,
                    at: l.at,
                    app: app.clone(),
                    env: env.clone(),
                    source: l.source,
                    process: l.process.to_string(),
                    replica: l.replica,
                    release: l.release,
                    node: node.to_string(),
                    stream: l.stream,
                    text: String::from_utf8_lossy(l.text).into_owned(),
                })?);
            }
            lines.sort_by_key(|l| l.id);
            lines.truncate(n as usize);
            Ok(Lines { lines, newest })
        })
        .await?
    }

    /// Lines of `app`'s `envs` stored after `after`, counting at most `cap` per environment.
    pub(crate) async fn drain_backlog(
        &self,
        app: &str,
        envs: &[String],
        after: i64,
        cap: u64,
    ) -> anyhow::Result<u64> {
        self.drain_count_capped(app, envs, Span { after, upto: i64::MAX }, cap).await
    }

    async fn drain_count_capped(
        &self,
        app: &str,
        envs: &[String],
        span: Span,
        cap: u64,
    ) -> anyhow::Result<u64> {
        let (snaps, _) = self.drain_snapshots(app, envs);
        tokio::task::spawn_blocking(move || snaps.iter().map(|(_, s)| scan::count(s, span, cap)).sum())
            .await?
    }

    /// When more than `keep` lines of `app`'s `envs` are stored after `after`: the position
    /// that leaves the newest `keep`, and how many lines it skips.
    pub(crate) async fn drain_skip(
        &self,
        app: &str,
        envs: &[String],
        after: i64,
        keep: u64,
    ) -> anyhow::Result<Option<(i64, u64)>> {
        let (snaps, _) = self.drain_snapshots(app, envs);
        let keep = usize::try_from(keep).unwrap_or(usize::MAX - 1);
        tokio::task::spawn_blocking(move || {
            // The (keep+1)-th newest line across the environments: each gives its newest keep+1.
            let span = Span { after, upto: i64::MAX };
            let mut ids = Vec::new();
            for (_, snap) in &snaps {
                ids.extend(scan::newest_ids(snap, span, keep + 1)?);
            }
            ids.sort_unstable_by(|a, b| b.cmp(a));
            let Some(cut) = ids.get(keep).copied() else { return Ok(None) };
            let upto = Span { after, upto: cut };
            let skipped =
                snaps.iter().map(|(_, s)| scan::count(s, upto, u64::MAX)).sum::<anyhow::Result<u64>>()?;
            Ok(Some((cut, skipped)))
        })
        .await?
    }

    /// Lines of `app`'s `envs` with ids in `(after, upto]`. Between two counts of the same
    /// range only retention can change it (new lines get higher ids): the difference is what it
    /// removed.
    pub(crate) async fn drain_count(
        &self,
        app: &str,
        envs: &[String],
        after: i64,
        upto: i64,
    ) -> anyhow::Result<u64> {
        self.drain_count_capped(app, envs, Span { after, upto }, u64::MAX).await
    }
}

#[cfg(test)]
mod tests {
    use crate::logs::store::{format_time, now_ns};
    use crate::logs::LogStore;
    use protocol::logs::{LogBatch, LogSource, LogStream, ShippedLine};

    fn line(seq: u64, env: &str, at: i64) -> ShippedLine {
        ShippedLine {
            seq,
            at: format_time(at),
            app: "shop".into(),
            env: env.into(),
            source: LogSource::App,
            process: "web".into(),
            replica: 1,
            release: 1,
            stream: LogStream::Stdout,
            text: format!("line {seq}"),
        }
    }

    /// Stores lines 1..=n, alternating production and staging (odd seqs production).
    async fn store(n: u64, at: impl Fn(u64) -> i64) -> LogStore {
        let s = LogStore::open_in_memory().await.unwrap();
        let lines =
            (1..=n).map(|i| line(i, if i % 2 == 1 { "production" } else { "staging" }, at(i))).collect();
        s.insert("n1", &LogBatch { lines, ..Default::default() }, now_ns()).await.unwrap();
        s
    }

    fn envs(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn lines_come_in_store_order_across_environments_from_the_position() {
        let s = store(10, |_| now_ns()).await;
        let both = envs(&["production", "staging"]);
        let read = s.drain_lines("shop", &both, 3, 4).await.unwrap();
        assert_eq!(read.lines.iter().map(|l| l.id).collect::<Vec<_>>(), [4, 5, 6, 7]);
        assert_eq!(read.newest, 10);
        assert_eq!(read.lines[0].env, "staging");
        let prod = s.drain_lines("shop", &envs(&["production"]), 0, 100).await.unwrap();
        assert_eq!(prod.lines.iter().map(|l| l.id).collect::<Vec<_>>(), [1, 3, 5, 7, 9]);
        assert!(s.drain_lines("shop", &both, 10, 100).await.unwrap().lines.is_empty());
        assert_eq!(s.drain_backlog("shop", &both, 2, 100).await.unwrap(), 8);
        assert_eq!(
            s.drain_backlog("shop", &both, 2, 3).await.unwrap(),
            6,
            "counted up to the cap per environment"
        );
        assert_eq!(s.drain_start().await.unwrap(), 10);
    }

    #[tokio::test]
    async fn a_drain_too_far_behind_skips_to_its_newest_lines_counting_the_rest() {
        let s = store(20, |_| now_ns()).await;
        let both = envs(&["production", "staging"]);
        // 18 lines after 2: keeping 5 skips 13, to line 15.
        assert_eq!(s.drain_skip("shop", &both, 2, 5).await.unwrap(), Some((15, 13)));
        assert_eq!(s.drain_skip("shop", &both, 2, 18).await.unwrap(), None);
        // One environment: 10 production lines, keep 4 (13, 15, 17, 19).
        assert_eq!(s.drain_skip("shop", &envs(&["production"]), 0, 4).await.unwrap(), Some((11, 6)));
        assert_eq!(s.drain_skip("shop", &[], 0, 4).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_range_counted_again_after_retention_shows_what_it_removed() {
        let old = now_ns() - 3_600_000_000_000;
        // Lines 1..=6 an hour old, 7..=10 new.
        let s = store(10, |i| if i <= 6 { old } else { now_ns() }).await;
        let prod = envs(&["production"]);
        // A drain at 1 with production's 3, 5, 7, 9 unsent.
        assert_eq!(s.drain_count("shop", &prod, 1, 10).await.unwrap(), 4);
        s.trim(now_ns() - 60_000_000_000, u64::MAX).await.unwrap();
        // Retention took 3 and 5 of them (and 1, which the drain had sent).
        assert_eq!(s.drain_count("shop", &prod, 1, 10).await.unwrap(), 2);
        assert_eq!(s.drain_count("shop", &envs(&["production", "staging"]), 0, 10).await.unwrap(), 4);
    }
}

//! The shipper: sends the spool's oldest unacknowledged lines to the control plane, keeping up
//! to [`IN_FLIGHT`] batches on their way (so that reading the next batch, the network and the
//! store's insert can overlap), and applies their acknowledgements in the order they were sent.
//!
//! Order matters: the spool forgets every line up to an acknowledged `seq`, so a later batch's
//! acknowledgement counts only once every batch before it was acknowledged too. When one
//! fails, the ones behind it are abandoned (whatever of them was stored is taken once when
//! resent) and shipping starts again from the oldest unacknowledged line after a backoff.

use super::spool::{Pending, Spool};
use super::{lock, BATCH_BYTES, BATCH_LINES};
use futures_util::stream::{FuturesOrdered, StreamExt};
use protocol::Client;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Batches on their way at once. Two overlap the agent's reading with the control plane's
/// insert, but measured on 2 cores they gained little (the platform is bound by CPU per line)
/// and cost about 20 MiB more peak memory under a flood (tests/tests/bounds.rs), so one for
/// now; the pipelining stays, ready for when per-line CPU is cut.
pub(super) const IN_FLIGHT: usize = 1;
/// Lines wait at most this long for the next batch; batches go no more often, unless full.
const SHIP_EVERY: Duration = Duration::from_millis(250);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A failing shipper says so again this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Sends batches of the oldest unacknowledged lines until shutdown.
pub(super) async fn ship(
    spool: Arc<Mutex<Spool>>,
    client: Client,
    node: String,
    ready: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    let mut failing_since: Option<Instant> = None;
    let mut warned_at: Option<Instant> = None;
    let pause = |d: Duration| {
        let shutdown = shutdown.clone();
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => false,
                _ = tokio::time::sleep(d) => true,
            }
        }
    };
    let mut in_flight = FuturesOrdered::new();
    // The newest batch sent (the next one starts after it), and when it went.
    let mut newest: Option<(Arc<Pending>, Instant)> = None;
    loop {
        // A batch that was not full is followed by another at most every SHIP_EVERY, so a
        // trickle of lines is sent in a few batches rather than one each, unless a full
        // batch is waiting already (a flood must not wait).
        let may_send = newest.as_ref().is_none_or(|(p, at)| {
            p.full || at.elapsed() >= SHIP_EVERY || lock(&spool).lines_after(Some(p)) >= BATCH_LINES as u64
        });
        if in_flight.len() < IN_FLIGHT && may_send {
            let sent = newest.as_ref().map(|(p, _)| p.as_ref());
            let next = lock(&spool).batch_after(sent, BATCH_LINES, BATCH_BYTES);
            match next {
                Ok(Some(pending)) => {
                    let pending = Arc::new(pending);
                    newest = Some((pending.clone(), Instant::now()));
                    let (client, node) = (client.clone(), node.clone());
                    in_flight.push_back(async move {
                        let result = client.ship_log_body(&node, pending.body.clone()).await;
                        (pending, result)
                    });
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "reading the log spool failed");
                    if !pause(MAX_BACKOFF).await {
                        return;
                    }
                    continue;
                }
            }
        }
        if in_flight.is_empty() {
            let wait =
                newest.as_ref().map_or(Duration::MAX, |(_, at)| SHIP_EVERY.saturating_sub(at.elapsed()));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ready.notified() => {}
                _ = tokio::time::sleep(wait), if !may_send => {}
            }
            continue;
        }
        let (pending, result) = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(done) = in_flight.next() => done,
        };
        let problem = match result {
            Ok(ack) => {
                if let Err(e) = lock(&spool).ack(&pending, ack.through) {
                    tracing::warn!(error = %format!("{e:#}"), "recording acknowledged log lines failed");
                }
                (ack.through < pending.last_seq).then(|| {
                    format!(
                        "the control plane acknowledged log lines through {} of {}",
                        ack.through, pending.last_seq
                    )
                })
            }
            Err(e) => Some(e.to_string()),
        };
        let Some(problem) = problem else {
            if let Some(since) = failing_since.take() {
                tracing::info!(after_secs = since.elapsed().as_secs(), "shipping logs works again");
            }
            warned_at = None;
            backoff = MIN_BACKOFF;
            continue;
        };
        // The batches behind it are abandoned: shipping starts again at the oldest line not
        // acknowledged.
        in_flight = FuturesOrdered::new();
        newest = None;
        failing_since.get_or_insert_with(Instant::now);
        if warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            let (lines, bytes) = {
                let spool = lock(&spool);
                (spool.unacknowledged(), spool.bytes())
            };
            tracing::warn!(error = %problem, lines_held = lines, bytes_held = bytes, "shipping logs failed; retrying, the spool keeps them meanwhile");
            warned_at = Some(Instant::now());
        }
        if !pause(backoff).await {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

//! Work the control plane hands this agent in its assignment (builds, jobs, database tasks):
//! each item is started once, and its result is offered back until the control plane takes it.

use protocol::agent::Assignment;
use protocol::client::ClientError;
use std::collections::HashSet;
use std::future::Future;
use std::hash::Hash;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Calls `start` once for every item that `items` finds in the assignment (one per `key`, for
/// the life of the agent), until shutdown.
pub async fn start_each_once<T, K: Eq + Hash>(
    mut assignment: watch::Receiver<Option<Assignment>>,
    shutdown: CancellationToken,
    items: impl Fn(&Assignment) -> Vec<T>,
    key: impl Fn(&T) -> K,
    mut start: impl FnMut(T),
) {
    let mut started = HashSet::new();
    loop {
        let list = assignment.borrow_and_update().as_ref().map(&items).unwrap_or_default();
        for item in list {
            if started.insert(key(&item)) {
                start(item);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = assignment.changed() => if changed.is_err() { return },
        }
    }
}

/// Offers a result (`what`, for the log) with `send` until the control plane takes it, refuses
/// it (a 4xx answer: sending it again changes nothing) or `for_at_most` has passed. Waits 1 s
/// between attempts, doubling up to 10 s.
pub async fn deliver<R, Fut>(what: &str, for_at_most: Duration, mut send: impl FnMut() -> Fut)
where
    Fut: Future<Output = Result<R, ClientError>>,
{
    let deadline = Instant::now() + for_at_most;
    let mut wait = Duration::from_secs(1);
    loop {
        match send().await {
            Ok(_) => return,
            Err(e) if e.status.is_some_and(|s| (400..500).contains(&s)) => {
                tracing::warn!(error = %e, "the control plane refused the {what}");
                return;
            }
            Err(e) if Instant::now() >= deadline => {
                tracing::warn!(error = %e, "the control plane did not take the {what}; giving up");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "sending the {what} failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}

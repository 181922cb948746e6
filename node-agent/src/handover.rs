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

/// Calls `start` once for every item that `items` finds in the assignment (one per `key` while
/// the assignment holds it), until shutdown.
pub async fn start_each_once<T, K: Eq + Hash>(
    mut assignment: watch::Receiver<Option<Assignment>>,
    shutdown: CancellationToken,
    items: impl Fn(&Assignment) -> Vec<T>,
    key: impl Fn(&T) -> K,
    mut start: impl FnMut(T),
) {
    let mut started = HashSet::new();
    loop {
        let Some(list) = assignment.borrow_and_update().as_ref().map(&items) else {
            // No assignment yet (or none since a restart of the control plane): nothing to
            // start, and nothing to forget.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = assignment.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let mut current = HashSet::new();
        for item in list {
            let k = key(&item);
            if !started.contains(&k) {
                started.insert(key(&item));
                start(item);
            }
            current.insert(k);
        }
        // An item the assignment no longer holds is done; one with the same key later is new
        // work (a build of release 1 of an app deleted and created again).
        started.retain(|k| current.contains(k));
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

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::agent::{BuildKind, BuildTask};

    fn with_builds(releases: &[u32]) -> Option<Assignment> {
        let builds = releases
            .iter()
            .map(|r| BuildTask {
                app: "shop".into(),
                env: "production".into(),
                release: *r,
                tag: format!("paas/shop--production:v{r}"),
                kind: BuildKind::Dockerfile,
            })
            .collect();
        Some(Assignment { builds, ..Default::default() })
    }

    #[tokio::test]
    async fn an_item_starts_once_while_assigned_and_again_when_it_comes_back() {
        let (tx, rx) = watch::channel(None);
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let key = |t: &BuildTask| (t.app.clone(), t.env.clone(), t.release);
        let run = tokio::spawn(start_each_once(
            rx,
            stop.clone(),
            |a| a.builds.clone(),
            key,
            move |t: BuildTask| {
                let _ = started_tx.send(t.release);
            },
        ));
        let next = |tx: &watch::Sender<Option<Assignment>>, a| tx.send(a).unwrap();
        next(&tx, with_builds(&[1]));
        assert_eq!(started.recv().await, Some(1));
        next(&tx, with_builds(&[1, 2]));
        assert_eq!(started.recv().await, Some(2), "release 1 is not started again while assigned");
        // The app is deleted and created again: its release 1 is a new build.
        next(&tx, with_builds(&[]));
        tokio::task::yield_now().await;
        next(&tx, with_builds(&[1]));
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), started.recv()).await.unwrap(), Some(1));
        stop.cancel();
        run.await.unwrap();
    }
}

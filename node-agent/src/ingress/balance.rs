//! Which replica gets a request: the one with the fewest requests in flight from this ingress
//! (least outstanding requests), rotating among equals so an idle app still spreads its
//! requests; a replica whose last [`EJECT_AFTER`] attempts failed (no connection, a broken
//! exchange, no response head in time) is ejected for a while (passive health checking, as
//! Envoy's outlier detection does) and is tried only after every other replica.
//!
//! An ejected replica comes back on its own when its time is up; the time doubles with each
//! ejection in a row, from [`EJECT_MIN`] up to [`EJECT_MAX`], and one answer resets it. An ingress
//! never refuses a request because of ejections: with every replica ejected, all are tried.

use super::inflight::InFlight;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures in a row that eject a replica.
pub(crate) const EJECT_AFTER: u32 = 3;
const EJECT_MIN: Duration = Duration::from_secs(5);
const EJECT_MAX: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Failing {
    in_a_row: u32,
    ejections: u32,
    until: Option<Instant>,
}

/// Failures per backend (`addr:port`), shared by every route.
#[derive(Default)]
pub(crate) struct Health {
    failing: Mutex<HashMap<String, Failing>>,
}

impl Health {
    /// The order in which to try `backends` for one request: not ejected before ejected, then
    /// fewest requests in flight, then the rotation that starts at `start`.
    pub(crate) fn order(&self, backends: &[String], start: usize, inflight: &InFlight) -> Vec<usize> {
        let len = backends.len();
        let now = Instant::now();
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let mut keyed: Vec<(bool, usize, usize, usize)> = backends
            .iter()
            .enumerate()
            .map(|(i, backend)| {
                let ejected = failing.get(backend).and_then(|f| f.until).is_some_and(|until| until > now);
                (ejected, inflight.get(backend), (i + len - start % len) % len, i)
            })
            .collect();
        drop(failing);
        keyed.sort_unstable();
        keyed.into_iter().map(|(.., i)| i).collect()
    }

    /// `backend` answered (a response head, whatever its status): it is healthy again.
    pub(crate) fn answered(&self, backend: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        if failing.remove(backend).is_some() {
            tracing::debug!(backend, "replica answers again");
        }
    }

    /// An attempt on `backend` failed; the [`EJECT_AFTER`]th in a row ejects it.
    pub(crate) fn failed(&self, backend: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let f = failing.entry(backend.to_string()).or_default();
        f.in_a_row += 1;
        if f.in_a_row >= EJECT_AFTER {
            let time = EJECT_MIN.saturating_mul(1 << f.ejections.min(8)).min(EJECT_MAX);
            f.until = Some(Instant::now() + time);
            f.ejections += 1;
            f.in_a_row = 0;
            tracing::warn!(
                backend,
                secs = time.as_secs(),
                "replica keeps failing; ejected from balancing for a while"
            );
        }
    }

    /// Forgets backends no route names any more, so the map does not grow with every replica
    /// ever seen.
    pub(crate) fn retain(&self, live: impl Fn(&str) -> bool) {
        self.failing.lock().unwrap_or_else(|p| p.into_inner()).retain(|b, _| live(b));
    }

    #[cfg(test)]
    pub(crate) fn is_ejected(&self, backend: &str) -> bool {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing.get(backend).and_then(|f| f.until).is_some_and(|u| u > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    #[test]
    fn fewest_in_flight_first_then_rotation() {
        let (health, inflight, b) = (Health::default(), InFlight::default(), names(3));
        assert_eq!(health.order(&b, 0, &inflight), [0, 1, 2]);
        assert_eq!(health.order(&b, 4, &inflight), [1, 2, 0]);
        let _busy = [inflight.enter(&b[1]), inflight.enter(&b[1]), inflight.enter(&b[0])];
        assert_eq!(health.order(&b, 1, &inflight), [2, 0, 1]);
        assert_eq!(health.order(&b, 0, &inflight), [2, 0, 1]);
    }

    #[test]
    fn a_replica_failing_in_a_row_goes_last_until_it_answers() {
        let (health, inflight, b) = (Health::default(), InFlight::default(), names(2));
        for _ in 0..EJECT_AFTER - 1 {
            health.failed(&b[0]);
        }
        assert!(!health.is_ejected(&b[0]));
        health.failed(&b[0]);
        assert!(health.is_ejected(&b[0]));
        // Even while the other has requests in flight.
        let _busy = inflight.enter(&b[1]);
        assert_eq!(health.order(&b, 0, &inflight), [1, 0]);
        health.answered(&b[0]);
        assert!(!health.is_ejected(&b[0]));
        assert_eq!(health.order(&b, 0, &inflight), [0, 1]);
    }

    #[test]
    fn an_answer_between_failures_starts_the_count_again() {
        let (health, b) = (Health::default(), names(1));
        for _ in 0..5 {
            health.failed(&b[0]);
            health.failed(&b[0]);
            health.answered(&b[0]);
        }
        assert!(!health.is_ejected(&b[0]));
    }
}

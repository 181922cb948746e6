//! The ingress's request counts per app environment, for metrics: responses by status class,
//! body bytes sent and a latency histogram, counted with atomics as each access line is
//! written and taken (reset) by the agent's sampler every 10 s.

use protocol::metrics::{TrafficFigures, LATENCY_BOUNDS_MS};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

#[derive(Default)]
pub(crate) struct Traffic {
    responses: [AtomicU64; 5],
    bytes_out: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    /// Microseconds, summed.
    duration_us: AtomicU64,
}

impl Traffic {
    /// One response of `status` that sent `bytes` of body and took `took` in all.
    pub(crate) fn record(&self, status: u16, bytes: u64, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Relaxed);
        self.bytes_out.fetch_add(bytes, Relaxed);
        let ms = took.as_secs_f64() * 1000.0;
        let bucket = LATENCY_BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.duration_us.fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// The counts since the last take, for `app`/`env`; the counters start again from zero.
    pub(crate) fn take(&self, app: &str, env: &str) -> TrafficFigures {
        TrafficFigures {
            app: app.to_string(),
            env: env.to_string(),
            responses: std::array::from_fn(|i| self.responses[i].swap(0, Relaxed)),
            bytes_out: self.bytes_out.swap(0, Relaxed),
            latency_buckets: self.buckets.iter().map(|b| b.swap(0, Relaxed)).collect(),
            latency_sum_ms: self.duration_us.swap(0, Relaxed) as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_class_and_latency_then_starts_again() {
        let t = Traffic::default();
        t.record(200, 100, Duration::from_millis(3));
        t.record(204, 0, Duration::from_millis(7));
        t.record(503, 50, Duration::from_secs(30));
        t.record(99, 0, Duration::ZERO);
        let f = t.take("shop", "production");
        assert_eq!(f.responses, [1, 2, 0, 0, 1]);
        assert_eq!(f.bytes_out, 150);
        assert_eq!((f.latency_buckets[0], f.latency_buckets[1], f.latency_buckets[BUCKETS - 1]), (2, 1, 1));
        assert_eq!(f.latency_sum_ms, 30_010.0);
        assert_eq!(t.take("shop", "production").requests(), 0);
    }
}

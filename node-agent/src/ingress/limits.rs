//! The per-app protections of the ingress: the cap on requests in flight to an environment and
//! the per-client-address rate limit (a token bucket per client, in a table of bounded size).
//! Each environment has one [`Guards`], shared by all its hostnames and kept across route table
//! swaps, so a deploy or a new custom domain neither resets the counts nor doubles the cap. The
//! body size limit is enforced while the body streams, in `proxy`.

use protocol::manifest::IngressLimits;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Clients one environment's rate limiter remembers. A bucket costs ~100 bytes, so the table
/// stays within about a megabyte per environment even when a flood of spoofed or distinct
/// addresses (IPv6 gives a client plenty) arrives.
pub(crate) const MAX_CLIENTS: usize = 10_000;
/// Longest client key kept; a trusted proxy's `X-Real-IP` is not necessarily an address.
const MAX_KEY: usize = 64;

/// What the ingress keeps per environment.
pub(crate) struct Guards {
    /// Requests in flight to the app right now.
    active: Arc<AtomicUsize>,
    pub(crate) rate: RateLimiter,
    /// What the environment's requests got, for metrics.
    pub(crate) traffic: super::traffic::Traffic,
}

impl Default for Guards {
    fn default() -> Self {
        Self { active: Arc::default(), rate: RateLimiter::new(MAX_CLIENTS), traffic: Default::default() }
    }
}

impl Guards {
    /// A slot for one more request to the app, or `None` when `max` are in flight already.
    pub(crate) fn enter(&self, max: u32) -> Option<Slot> {
        let before = self.active.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.active.clone());
        // Over the cap: the slot is dropped at once, which gives the count back.
        (before < max as usize).then_some(slot)
    }

    #[cfg(test)]
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

/// One request counted against the concurrency cap; the count drops when this does.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Token buckets per client: `burst` requests at once, then `rate` per second.
pub(crate) struct RateLimiter {
    clients: Mutex<HashMap<String, Bucket>>,
    max_clients: usize,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// Tokens now, after refilling since `last` (at most `burst`).
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        (self.tokens + elapsed * rate).min(burst)
    }
}

impl RateLimiter {
    pub(crate) fn new(max_clients: usize) -> Self {
        Self { clients: Mutex::default(), max_clients: max_clients.max(1) }
    }

    /// Takes one request of `client` under `limits`: `Ok` when it may go on, else how long
    /// until it may (the `Retry-After`). With no rate limit set, always `Ok`.
    pub(crate) fn check(&self, client: &str, limits: &IngressLimits) -> Result<(), Duration> {
        self.check_at(client, limits, Instant::now())
    }

    fn check_at(&self, client: &str, limits: &IngressLimits, now: Instant) -> Result<(), Duration> {
        if limits.rate_per_sec == 0 {
            return Ok(());
        }
        let rate = f64::from(limits.rate_per_sec);
        let burst = f64::from(limits.rate_burst.max(1));
        let key = truncate(client);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if !clients.contains_key(key) && clients.len() >= self.max_clients {
            evict(&mut clients, self.max_clients, now, rate, burst);
        }
        let bucket = clients.entry(key.to_string()).or_insert(Bucket { tokens: burst, last: now });
        let tokens = bucket.refilled(now, rate, burst);
        bucket.last = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(Duration::from_secs_f64((1.0 - tokens) / rate))
        }
    }

    /// Clients remembered now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Makes room in a full table. Idle clients (whose bucket has refilled) go first: forgetting them
/// changes nothing, a new bucket starts full too. When a flood keeps every bucket busy, the
/// eighth least recently seen go, so the cost of the scan is shared by the next inserts and the
/// table never grows past its cap.
fn evict(clients: &mut HashMap<String, Bucket>, max: usize, now: Instant, rate: f64, burst: f64) {
    clients.retain(|_, b| b.refilled(now, rate, burst) < burst);
    if clients.len() < max {
        return;
    }
    let mut by_age: Vec<(Instant, String)> = clients.iter().map(|(k, b)| (b.last, k.clone())).collect();
    let oldest = (by_age.len() / 8).max(1);
    by_age.select_nth_unstable_by_key(oldest - 1, |(last, _)| *last);
    for (_, key) in &by_age[..oldest] {
        clients.remove(key);
    }
}

fn truncate(client: &str) -> &str {
    if client.len() <= MAX_KEY {
        return client;
    }
    let mut end = MAX_KEY;
    while !client.is_char_boundary(end) {
        end -= 1;
    }
    &client[..end]
}

/// Whole seconds to put in `Retry-After` (at least 1: `0` would invite an immediate retry).
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(rate: u32, burst: u32) -> IngressLimits {
        IngressLimits { rate_per_sec: rate, rate_burst: burst, ..IngressLimits::default() }
    }

    #[test]
    fn a_client_gets_its_burst_then_the_rate() {
        let limiter = RateLimiter::new(100);
        let limits = limited(2, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("1.2.3.4", &limits, t0).is_ok());
        }
        let wait = limiter.check_at("1.2.3.4", &limits, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        // Another client has its own bucket.
        assert!(limiter.check_at("5.6.7.8", &limits, t0).is_ok());
        // Half a second later one request's worth has come back, and no more.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.check_at("1.2.3.4", &limits, t1).is_ok());
        assert!(limiter.check_at("1.2.3.4", &limits, t1).is_err());
        // Without a limit nothing is counted or remembered.
        let other = RateLimiter::new(100);
        for _ in 0..1000 {
            assert!(other.check_at("1.2.3.4", &IngressLimits::default(), t0).is_ok());
        }
        assert_eq!(other.len(), 0);
    }

    #[test]
    fn the_client_table_stays_bounded_under_a_flood_of_addresses() {
        let limiter = RateLimiter::new(1000);
        let limits = limited(1, 5);
        let t0 = Instant::now();
        // A flood of distinct addresses, each busy (its bucket not refilled), never grows the
        // table past its cap.
        for i in 0..20_000u32 {
            let at = t0 + Duration::from_micros(u64::from(i));
            assert!(limiter
                .check_at(&format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), &limits, at)
                .is_ok());
            assert!(limiter.len() <= 1000, "{} clients after {i}", limiter.len());
        }
        // A client seen recently is still limited across the flood: its bucket was kept.
        let recent = "10.0.78.31"; // i = 19999
        for _ in 0..4 {
            let _ = limiter.check_at(recent, &limits, t0 + Duration::from_millis(20));
        }
        assert!(limiter.check_at(recent, &limits, t0 + Duration::from_millis(20)).is_err());
        // Once the flood is idle, new clients make room by dropping its buckets, not each other's.
        let later = t0 + Duration::from_secs(60);
        for i in 0..1000 {
            assert!(limiter.check_at(&format!("192.0.{}.{}", i >> 8, i & 255), &limits, later).is_ok());
            assert!(limiter.len() <= 1000);
        }
        let clients = limiter.clients.lock().unwrap();
        assert!(clients.keys().all(|k| k.starts_with("192.0.")), "the idle flood was kept");
        assert_eq!(clients.len(), 1000);
        drop(clients);
        // Keys are capped in length.
        let long = "x".repeat(1000);
        assert!(limiter.check_at(&long, &limits, later).is_ok());
        let longest = limiter.clients.lock().unwrap().keys().map(String::len).max().unwrap();
        assert_eq!(longest, MAX_KEY);
    }

    #[test]
    fn the_concurrency_cap_counts_slots_until_they_drop() {
        let guards = Guards::default();
        let a = guards.enter(2).unwrap();
        let _b = guards.enter(2).unwrap();
        assert!(guards.enter(2).is_none());
        assert_eq!(guards.active(), 2);
        drop(a);
        assert!(guards.enter(2).is_some());
        assert_eq!(guards.active(), 1);
    }
}

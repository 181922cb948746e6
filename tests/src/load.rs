//! A load generator for zero-downtime tests: threads sending GETs over keep-alive connections
//! through the ingress, recording every request's start, end, status and which container
//! (hostname) answered.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Sample {
    pub start: Instant,
    pub end: Instant,
    /// 0 when the request failed below HTTP (reset, refused, truncated).
    pub status: u16,
    /// The `served by <hostname>` of the hello example, or the error.
    pub served_by: String,
}

/// A keep-alive HTTP/1.1 connection; reconnects after the server closes it.
pub struct KeepAlive {
    addr: String,
    host: String,
    conn: Option<BufReader<TcpStream>>,
}

impl KeepAlive {
    pub fn new(addr: &str, host: &str) -> Self {
        Self { addr: addr.into(), host: host.into(), conn: None }
    }

    /// GET `path`; `Err` for anything below HTTP.
    pub fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.addr).map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(30))).ok();
            s.set_nodelay(true).ok();
            self.conn = Some(BufReader::new(s));
        }
        let result = self.exchange(path);
        if result.as_ref().map_or(true, |(_, _, close)| *close) {
            self.conn = None;
        }
        result.map(|(status, body, _)| (status, body))
    }

    fn exchange(&mut self, path: &str) -> Result<(u16, String, bool), String> {
        let conn = self.conn.as_mut().expect("connected");
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        conn.get_mut().write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
        let mut line = String::new();
        conn.read_line(&mut line).map_err(|e| format!("read status: {e}"))?;
        if line.is_empty() {
            return Err("connection closed before a response".into());
        }
        let status: u16 =
            line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
        let (mut length, mut close) = (0usize, false);
        loop {
            line.clear();
            conn.read_line(&mut line).map_err(|e| format!("read header: {e}"))?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().map_err(|_| "bad content-length")?;
            } else if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body).map_err(|e| format!("read body: {e}"))?;
        Ok((status, String::from_utf8_lossy(&body).into_owned(), close))
    }
}

/// The hostname in a hello response (`served by <host>`), if any.
pub fn served_by(body: &str) -> String {
    body.lines().find_map(|l| l.strip_prefix("served by ")).unwrap_or("").trim().to_string()
}

pub struct Load {
    stop: Arc<AtomicBool>,
    /// Requests answered with 200 so far, across the threads.
    ok: Arc<AtomicU64>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `threads` clients, each sending GET / back to back on its own connection.
    pub fn start(addr: &str, host: &str, threads: usize) -> Self {
        Self::start_paced(addr, host, threads, None)
    }

    /// Like [`Load::start`], but all threads together send about `rate` requests per second.
    pub fn start_paced(addr: &str, host: &str, threads: usize, rate: Option<f64>) -> Self {
        let gap = rate.map(|r| Duration::from_secs_f64(threads as f64 / r));
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, samples, ok) = (stop.clone(), samples.clone(), ok.clone());
                let mut client = KeepAlive::new(addr, host);
                std::thread::spawn(move || {
                    let mut local = Vec::new();
                    // Bounded: stops when told, or after 10 minutes at the latest.
                    let deadline = Instant::now() + Duration::from_secs(600);
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        if let Some(gap) = gap {
                            std::thread::sleep(next.saturating_duration_since(Instant::now()));
                            next += gap;
                        }
                        let start = Instant::now();
                        let (status, served) = match client.get("/") {
                            Ok((status, body)) => (status, served_by(&body)),
                            Err(e) => (0, e),
                        };
                        if status == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        local.push(Sample { start, end: Instant::now(), status, served_by: served });
                    }
                    samples.lock().unwrap().extend(local);
                })
            })
            .collect();
        Self { stop, ok, samples, threads }
    }

    /// Waits until `n` more requests than now were answered with 200 (at most `timeout`).
    #[track_caller]
    pub fn wait_for_answers(&self, n: u64, timeout: Duration) {
        let (start, deadline) = (self.ok.load(Ordering::Relaxed), Instant::now() + timeout);
        while self.ok.load(Ordering::Relaxed) < start + n {
            assert!(Instant::now() < deadline, "the load got fewer than {n} answers in {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients and returns every sample, in start order.
    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
        let mut all = std::mem::take(&mut *self.samples.lock().unwrap());
        all.sort_by_key(|s| s.start);
        all
    }
}

//! The machine's own figures for metrics: CPU busy time and network bytes from `/proc` (as
//! deltas between two samples), memory from `/proc/meminfo`, space on the file systems that
//! hold the platform's data (`statvfs`). Read by hand: each is one small text file or call,
//! and the system-information crates read far more than this needs.

use protocol::metrics::{DiskFigures, HostFigures};
use std::path::PathBuf;
use std::time::Instant;

/// Keeps the previous sample's counters, which the next one's rates are taken against.
#[derive(Default)]
pub struct HostReader {
    /// (busy, total) jiffies of all cores.
    cpu: Option<(u64, u64)>,
    /// (received, sent) bytes, and when.
    net: Option<(u64, u64, Instant)>,
}

impl HostReader {
    /// The machine's figures now; the disks are those holding `paths` (each file system once).
    pub fn sample(&mut self, paths: &[PathBuf]) -> HostFigures {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu_now = cpu_times(&stat);
        let cpu_percent = match (self.cpu, cpu_now) {
            (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                Some(100.0 * busy1.saturating_sub(busy0) as f64 / (total1 - total0) as f64)
            }
            _ => None,
        };
        self.cpu = cpu_now;
        let cpus = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        let (memory_used_bytes, memory_total_bytes) =
            meminfo(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
        let now = Instant::now();
        let (mut rx_rate, mut tx_rate) = (None, None);
        if let Some((rx, tx)) = net_bytes(&std::fs::read_to_string("/proc/net/dev").unwrap_or_default()) {
            if let Some((rx0, tx0, at)) = self.net {
                let secs = now.duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    rx_rate = Some(rx.saturating_sub(rx0) as f64 / secs);
                    tx_rate = Some(tx.saturating_sub(tx0) as f64 / secs);
                }
            }
            self.net = Some((rx, tx, now));
        }
        HostFigures {
            cpu_percent,
            cpus: cpus as u32,
            memory_used_bytes,
            memory_total_bytes,
            disks: disks(paths),
            net_rx_bytes_per_sec: rx_rate,
            net_tx_bytes_per_sec: tx_rate,
        }
    }
}

/// (busy, total) jiffies from `/proc/stat`'s first line: idle and iowait are not busy.
fn cpu_times(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// (used, total) bytes: used is what is not available (`MemTotal - MemAvailable`).
fn meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    let total = field("MemTotal").unwrap_or(0);
    let available = field("MemAvailable").unwrap_or(total);
    (total.saturating_sub(available), total)
}

/// Bytes (received, sent) over every interface but loopback.
fn net_bytes(text: &str) -> Option<(u64, u64)> {
    let mut sums = None;
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else { continue };
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = rest.split_whitespace().filter_map(|f| f.parse().ok()).collect();
        if fields.len() >= 9 {
            let (rx, tx) = sums.unwrap_or((0, 0));
            sums = Some((rx + fields[0], tx + fields[8]));
        }
    }
    sums
}

/// Space on the file systems holding `paths`, each file system once (by its id).
fn disks(paths: &[PathBuf]) -> Vec<DiskFigures> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for path in paths {
        let Ok(st) = rustix::fs::statvfs(path) else { continue };
        if seen.contains(&st.f_fsid) {
            continue;
        }
        seen.push(st.f_fsid);
        let total = st.f_blocks * st.f_frsize;
        let used = st.f_blocks.saturating_sub(st.f_bfree) * st.f_frsize;
        out.push(DiskFigures { path: path.display().to_string(), used_bytes: used, total_bytes: total });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let stat =
            "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\ncpu1 50 0 25 400 25 0 0 0 0 0\n";
        assert_eq!(cpu_times(stat), Some((150, 1000)));
        let mem = "MemTotal:        4000 kB\nMemFree:          100 kB\nMemAvailable:     1000 kB\n";
        assert_eq!(meminfo(mem), (3000 * 1024, 4000 * 1024));
        let dev = "Inter-|   Receive |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes\n    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n  eth0: 100 1 0 0 0 0 0 0 200 1 0 0 0 0 0 0\n  eth1: 10 1 0 0 0 0 0 0 20 1 0 0 0 0 0 0\n";
        assert_eq!(net_bytes(dev), Some((110, 220)));
    }

    #[test]
    fn a_sample_of_this_machine() {
        let mut reader = HostReader::default();
        let dir = std::env::temp_dir();
        let first = reader.sample(&[dir.clone(), dir.clone()]);
        assert_eq!(first.cpu_percent, None, "no rate from one sample");
        assert!(first.cpus >= 1 && first.memory_total_bytes > first.memory_used_bytes);
        assert_eq!(first.disks.len(), 1, "one file system, once");
        assert!(first.disks[0].total_bytes >= first.disks[0].used_bytes && first.disks[0].used_bytes > 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = reader.sample(&[dir]);
        assert!(second.cpu_percent.is_some_and(|c| (0.0..=100.0).contains(&c)));
    }
}

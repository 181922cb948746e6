//! Helpers for tests and benchmarks of databases across nodes: host addresses containers can
//! reach (a node's private address), and a writer that commits rows one at a time and remembers
//! which ones the server acknowledged.

use crate::{docker, Platform};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The host's address on Docker's default bridge: private, and unlike loopback reachable from
/// containers, as a machine's private address is from containers on the other machines.
pub fn bridge_address() -> String {
    let out =
        std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "docker0"]).output().expect("ip");
    let text = String::from_utf8_lossy(&out.stdout);
    let cidr =
        text.split_whitespace().skip_while(|w| *w != "inet").nth(1).expect("docker0 has an IPv4 address");
    cidr.split('/').next().unwrap().to_string()
}

/// A second private address of this host that containers reach: the gateway of a Docker
/// network made for the test (removed when dropped).
pub struct SecondAddress {
    network: String,
    pub addr: String,
}

impl SecondAddress {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let network = format!("paas-test-addr-{}", crate::rand_suffix());
        docker(&["network", "create", "--label", "paas.test=failover", &network]);
        let addr = docker(&["network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", &network]);
        let addr = addr.trim().to_string();
        assert!(!addr.is_empty(), "network {network} has no gateway");
        Self { network, addr }
    }
}

impl Drop for SecondAddress {
    fn drop(&mut self) {
        docker(&["network", "rm", &self.network]);
    }
}

/// A writer committing rows `1, 2, ...` into table `t` one at a time through `paas db psql`,
/// remembering which ones the server acknowledged.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u32>>>,
    failed: Arc<Mutex<u32>>,
    handle: std::thread::JoinHandle<()>,
}

impl Writer {
    pub fn start(p: &Platform, app: &str) -> Self {
        let (stop, acked, failed) = (Arc::new(AtomicBool::new(false)), Arc::default(), Arc::default());
        let handle = {
            let (stop, acked, failed, app): (_, Arc<Mutex<Vec<u32>>>, Arc<Mutex<u32>>, _) =
                (stop.clone(), Arc::clone(&acked), Arc::clone(&failed), app.to_string());
            let bin = crate::paas_bin().to_path_buf();
            let config = p.config_home();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let sql = format!("INSERT INTO t (n) VALUES ({n})");
                    let out = std::process::Command::new(&bin)
                        .args(["db", "psql", "--app", &app, "--", "-tAc", &sql])
                        .env("XDG_CONFIG_HOME", &config)
                        .env_remove("PAAS_TOKEN")
                        .output()
                        .unwrap();
                    if out.status.success() {
                        acked.lock().unwrap().push(n);
                    } else {
                        *failed.lock().unwrap() += 1;
                    }
                }
            })
        };
        Self { stop, acked, failed, handle }
    }

    /// Rows acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `more` rows more are acknowledged, failing with `what` after 90 s.
    pub fn wait_acked(&self, more: usize, what: &str) {
        let before = self.acked();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
        while self.acked() < before + more {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Stops it: the acknowledged rows in order, and how many attempts failed.
    pub fn stop(self) -> (Vec<u32>, u32) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap();
        let acked = self.acked.lock().unwrap().clone();
        let failed = *self.failed.lock().unwrap();
        (acked, failed)
    }
}

/// The rows of table `t` now, on the primary.
pub fn stored_rows(p: &Platform, app: &str) -> Vec<u32> {
    p.psql(app, &[], "SELECT string_agg(n::text, ',' ORDER BY n) FROM t")
        .split(',')
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// `paas db failover`, retried while the platform asks to (a task such as the base backup
/// started after the last promotion still runs, or the new replica does not stream yet), for up
/// to two minutes.
pub fn switch_over(p: &Platform, app: &str) -> crate::Run {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let run = p.paas(&["db", "failover", "--app", app]);
        if run.ok {
            return run;
        }
        let retry = run.stderr.contains("still running") || run.stderr.contains("try again");
        assert!(retry && std::time::Instant::now() < deadline, "{run:?}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

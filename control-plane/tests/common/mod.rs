//! What the controller tests share: a control plane serving on a loopback port from its own
//! runtime (so a test can stop it gracefully or drop it mid-work like a killed process), its
//! data directory, the fake agent and polling with a deadline.

pub mod fake_agent;

use paas_control_plane::{Config, ControlPlane};
use protocol::api::{Process, Release, ReleaseStatus};
use protocol::Client;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A data directory removed when the test ends, however it ends.
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("paas-controller-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a control plane's runtime ends.
enum End {
    /// `serve` returns as on SIGTERM: deploys in flight settle, the store closes.
    Graceful,
    /// The runtime is dropped: every task stops at its next await, nothing is settled, as when
    /// the process is killed.
    Crash,
}

/// A control plane opened on a data directory and serving `/api/v1` and `/agent/v1` (mutual
/// TLS) on 127.0.0.1 at free ports, from a runtime on a thread of its own.
pub struct Plane {
    /// The agent listener, `https://127.0.0.1:<port>`.
    pub agent_url: String,
    /// The CLI's view: the admin token.
    pub api: Client,
    end: Option<std::sync::mpsc::Sender<End>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn config(dir: &Path) -> Config {
    Config::for_tests(dir, "paas.test")
}

impl Plane {
    /// Opens (or reopens: start-up recovery runs) the control plane on `dir` and serves it.
    pub async fn start(dir: &DataDir) -> Self {
        let dir = dir.0.clone();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let (end_tx, end_rx) = std::sync::mpsc::channel::<End>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let stop = CancellationToken::new();
            let started = rt.block_on(async {
                let cp = ControlPlane::open(config(&dir)).await?;
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let agents = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let url = format!("http://{}", listener.local_addr()?);
                let urls = (url, format!("https://{}", agents.local_addr()?));
                let admin = cp.admin_token.clone();
                let serving = tokio::spawn(cp.serve(listener, agents, stop.clone()));
                anyhow::Ok((urls, admin, serving))
            });
            let serving = match started {
                Ok((urls, admin, serving)) => {
                    let _ = ready_tx.send(Ok((urls, admin)));
                    serving
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            // A dropped `Plane` (a failed test) ends like a crash.
            match end_rx.recv().unwrap_or(End::Crash) {
                End::Graceful => {
                    stop.cancel();
                    rt.block_on(serving).expect("serve did not panic").expect("serve ended cleanly");
                }
                End::Crash => rt.shutdown_timeout(Duration::from_secs(5)),
            }
        });
        let ((url, agent_url), admin) =
            ready.await.expect("the control plane thread answers").expect("the control plane starts");
        Self { api: Client::new(&url, admin), agent_url, end: Some(end_tx), thread: Some(thread) }
    }

    /// A fresh one-time join token, as `paas nodes token` makes it.
    pub async fn join_token(&self) -> String {
        self.api.create_join_token(600).await.expect("making a join token").token
    }

    /// Shuts down as on SIGTERM and waits until it has.
    pub async fn stop(mut self) {
        self.end_with(End::Graceful).await;
    }

    /// Stops like a killed process: nothing in flight gets to settle.
    pub async fn crash(mut self) {
        self.end_with(End::Crash).await;
    }

    async fn end_with(&mut self, end: End) {
        let _ = self.end.take().expect("ended once").send(end);
        let thread = self.thread.take().expect("ended once");
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("joining the control plane thread")
            .expect("the control plane thread did not panic");
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            let _ = end.send(End::Crash);
        }
    }
}

/// Polls `probe` until it returns `Some`, at most `within`; fails the test naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const ENV: &str = "production";

/// The release, once it has left `building` and `deploying`.
pub async fn settled(api: &Client, app: &str, version: u32) -> Release {
    eventually(&format!("v{version} of {app} to settle"), Duration::from_secs(8), || async {
        let releases = api.releases(app, ENV).await.expect("listing releases");
        let r = releases.into_iter().find(|r| r.version == version).expect("the release exists");
        (!matches!(r.status, ReleaseStatus::Building | ReleaseStatus::Deploying)).then_some(r)
    })
    .await
}

/// Deploys `image` with `paas_toml` and returns the new release's version.
pub async fn deploy(api: &Client, app: &str, image: &str, paas_toml: &str) -> u32 {
    api.deploy_image(app, ENV, image, Some(paas_toml.to_string())).await.expect("the deploy starts").version
}

/// The environment's served and rolling-out releases.
pub async fn releases_in_use(api: &Client, app: &str) -> (Option<u32>, Option<u32>) {
    let app = api.get_app(app).await.expect("reading the app");
    let env = app.envs.iter().find(|e| e.name == ENV).expect("the production environment");
    (env.current_release, env.target_release)
}

/// Every container the control plane has assigned for the environment.
pub async fn processes(api: &Client, app: &str) -> Vec<Process> {
    api.processes(app, ENV).await.expect("listing processes")
}

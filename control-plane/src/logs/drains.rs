//! Log drains: each app's (or environment's) stored lines sent on, in store order, to a syslog
//! server or an HTTPS endpoint. A task per drain reads the lines after its position, sends
//! them, and moves and persists the position (at least once: a batch whose sending failed
//! midway goes again). A drain that fails is retried with backoff; one that falls more than a
//! bound behind skips to its newest lines, counting what it skipped, as it counts lines
//! retention removed before it could send them.
//!
//! These files sit with the log store's (`logs/drain*.rs`) but form a module of their own.

#[path = "drain_format.rs"]
pub mod format;
#[path = "drain_manage.rs"]
mod manage;
#[path = "drain_reads.rs"]
mod reads;
#[path = "drain_send.rs"]
mod send;

pub use manage::{add, list, remove};

use crate::state::AppState;
use crate::store::{DrainProgress, DrainRow};
use protocol::drains::{mask_drain_url, parse_drain_url, DrainTarget};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Lines read per step (an HTTPS request takes at most as many).
const READ_LINES: u32 = 1000;
/// How often the set of drains is looked at (new ones start, removed ones stop).
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);
/// Longest an idle drain waits before it looks for new lines again (an environment's new lines
/// wake it at once).
const IDLE_POLL: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often a drain that is behind checks its backlog against the bound.
const BOUND_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How drains connect and how far behind they may fall.
#[derive(Debug, Clone)]
pub struct DrainSettings {
    /// PEM certificates trusted besides the platform's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// A drain more lines behind than this skips to the newest this many, counting the rest.
    pub max_backlog: u64,
    /// Private networks drains may go to (`--drain-allow-net`); public addresses always.
    pub allow_nets: Vec<ipnet::IpNet>,
}

impl Default for DrainSettings {
    fn default() -> Self {
        Self { ca_file: None, max_backlog: 100_000, allow_nets: Vec::new() }
    }
}

/// Checks the CA file drains are to trust, so a bad one stops the start with the reason.
pub fn check_ca_file(path: &std::path::Path) -> anyhow::Result<()> {
    send::tls_config(Some(path)).map(|_| ())
}

/// Runs every drain until shutdown: starts a task for each new drain and stops the tasks of
/// removed ones.
pub async fn run(state: AppState) {
    let stop = state.shutting_down();
    let tls = send::tls_config(state.config.drains.ca_file.as_deref()).map_err(|e| {
        let why = format!("{e:#}");
        tracing::error!(error = %why, "log drains cannot set up TLS; TLS and HTTPS drains will fail");
        why
    });
    let mut running: HashMap<String, CancellationToken> = HashMap::new();
    loop {
        match state.store.drain_ids().await {
            Ok(ids) => {
                running.retain(|id, token| {
                    let keep = ids.contains(id);
                    if !keep {
                        token.cancel();
                    }
                    keep
                });
                for id in ids {
                    if !running.contains_key(&id) {
                        let token = stop.child_token();
                        running.insert(id.clone(), token.clone());
                        state.spawn(drive(state.clone(), id, token, tls.clone()));
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "listing log drains failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SUPERVISE_EVERY) => {}
        }
    }
}

/// What one step of a drain did.
enum Step {
    /// The drain was removed.
    Gone,
    Sent,
    /// Nothing to send: wait for lines of these environments stored after `newest`.
    Idle {
        app: String,
        envs: Vec<String>,
        newest: i64,
    },
}

enum Failure {
    /// The drain's own failure (unreachable, refused, a bad answer): recorded on it.
    Drain(String),
    /// The platform's (a store read failed): logged only.
    Internal(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Internal(e.into())
    }
}

/// Lines of a drain's environments in `(after, upto]`, `lines` of them when last counted.
struct Unsent {
    after: i64,
    upto: i64,
    lines: u64,
}

struct Driver {
    state: AppState,
    id: String,
    tls: Result<Arc<rustls::ClientConfig>, String>,
    sender: Option<send::Sender>,
    /// The URL as logs may show it, once known.
    masked: String,
    /// The last step left lines unsent (the bound is checked then).
    behind: bool,
    /// The lines a failed step left unsent, to be counted again.
    unsent: Option<Unsent>,
    bound_checked: Option<Instant>,
    /// The failure last logged, so a drain that stays down logs once, not on every retry.
    logged: Option<String>,
}

async fn drive(
    state: AppState,
    id: String,
    stop: CancellationToken,
    tls: Result<Arc<rustls::ClientConfig>, String>,
) {
    let mut d = Driver {
        state,
        id,
        tls,
        sender: None,
        masked: String::new(),
        behind: false,
        unsent: None,
        bound_checked: None,
        logged: None,
    };
    let mut backoff = MIN_BACKOFF;
    loop {
        let step = tokio::select! {
            _ = stop.cancelled() => return,
            step = d.step() => step,
        };
        let pause = match step {
            Ok(Step::Gone) => return,
            Ok(Step::Sent) => {
                backoff = MIN_BACKOFF;
                continue;
            }
            Ok(Step::Idle { app, envs, newest }) => {
                backoff = MIN_BACKOFF;
                let logs = d.state.logs.clone();
                let waits =
                    envs.iter().map(|env| Box::pin(logs.wait_for_lines(&app, env, newest, IDLE_POLL)));
                let wake = async {
                    if envs.is_empty() {
                        tokio::time::sleep(IDLE_POLL).await;
                    } else {
                        futures_util::future::select_all(waits).await;
                    }
                };
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = wake => {}
                }
                continue;
            }
            Err(Failure::Drain(why)) => {
                d.failed(&why).await;
                backoff
            }
            Err(Failure::Internal(e)) => {
                tracing::error!(drain = %d.id, error = %format!("{e:#}"), "a log drain step failed");
                backoff
            }
        };
        backoff = (backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

impl Driver {
    async fn step(&mut self) -> Result<Step, Failure> {
        let (state, id) = (&self.state, self.id.as_str());
        let Some(row) = state.store.get_drain(id).await? else {
            return Ok(Step::Gone);
        };
        let envs = match &row.env {
            Some(env) => vec![env.clone()],
            None => state.store.list_envs(&row.app).await?.into_iter().map(|e| e.name).collect(),
        };
        let start = DrainProgress { position: row.position, ..Default::default() };
        let mut progress = start;
        if let Some(unsent) = self.unsent.take() {
            let now = state.logs.drain_count(&row.app, &envs, unsent.after, unsent.upto).await?;
            let lost = unsent.lines.saturating_sub(now);
            if lost > 0 {
                progress.dropped += lost;
                tracing::warn!(drain = id, app = %row.app, lines = lost, "retention removed log lines before a drain could send them");
            }
        }
        let check_bound = self.bound_checked.is_none_or(|t| t.elapsed() >= BOUND_CHECK_EVERY);
        if check_bound && (self.behind || self.bound_checked.is_none()) {
            self.bound_checked = Some(Instant::now());
            let keep = state.config.drains.max_backlog;
            if let Some((cut, skipped)) =
                state.logs.drain_skip(&row.app, &envs, progress.position, keep).await?
            {
                progress.position = cut;
                progress.dropped += skipped;
                tracing::warn!(drain = id, app = %row.app, lines = skipped, keep, "a log drain fell too far behind: it skipped its oldest lines");
            }
        }
        let read = state.logs.drain_lines(&row.app, &envs, progress.position, READ_LINES).await?;
        if read.lines.is_empty() {
            self.behind = false;
            if progress != start {
                state.store.drain_progress(id, &progress).await?;
            }
            return Ok(Step::Idle { app: row.app, envs, newest: read.newest.max(progress.position) });
        }
        self.behind = true;
        let sent = match self.sender(&row) {
            Ok(sender) => sender.send(&read.lines).await,
            Err(why) => Err(why),
        };
        match sent {
            Ok(n) => {
                progress.position = read.lines[n - 1].id;
                progress.delivered += n as u64;
                progress.success = true;
                self.state.store.drain_progress(&self.id, &progress).await?;
                if let Some(was) = self.logged.take() {
                    tracing::info!(drain = %self.id, url = %self.masked, after = %was, "a log drain is delivering again");
                }
                Ok(Step::Sent)
            }
            Err(why) => {
                if progress != start {
                    self.state.store.drain_progress(&self.id, &progress).await?;
                }
                // What is waiting now, counted again at the next step: the lines retention
                // removes in between are the drain's losses.
                let (after, upto) = (progress.position, read.newest);
                let lines = self.state.logs.drain_count(&row.app, &envs, after, upto).await?;
                self.unsent = Some(Unsent { after, upto, lines });
                Err(Failure::Drain(why))
            }
        }
    }

    /// The drain's sender, made on first use from its sealed URL.
    fn sender(&mut self, row: &DrainRow) -> Result<&mut send::Sender, String> {
        if self.sender.is_none() {
            let target = target(&self.state, row)?;
            self.masked = mask_drain_url(target.url.as_str());
            let tls = self.tls.clone().map_err(|e| format!("TLS is not set up for drains: {e}"))?;
            let allowed = Arc::new(self.state.config.drains.allow_nets.clone());
            self.sender = Some(send::Sender::new(target, tls, allowed));
        }
        Ok(self.sender.as_mut().expect("made above"))
    }

    async fn failed(&mut self, why: &str) {
        if let Err(e) = self.state.store.drain_failed(&self.id, why).await {
            tracing::error!(drain = %self.id, error = %e, "recording a log drain's failure failed");
        }
        if self.logged.as_deref() != Some(why) {
            tracing::warn!(drain = %self.id, url = %self.masked, error = %why, "a log drain failed; it is retried with backoff");
            self.logged = Some(why.to_string());
        }
    }
}

/// The drain's URL, opened and checked.
fn target(state: &AppState, row: &DrainRow) -> Result<DrainTarget, String> {
    let url = state.secrets.open_text(&row.url).ok().and_then(|u| String::from_utf8(u).ok()).ok_or(
        "the drain's URL does not decrypt with this data directory's secret.key: add the drain again",
    )?;
    parse_drain_url(&url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::drains::{AddDrain, DrainState};
    use protocol::logs::{LogBatch, LogSource, LogStream, ShippedLine};
    use tokio::io::AsyncReadExt;

    fn lines(from: u64, to: u64) -> LogBatch {
        let lines = (from..=to)
            .map(|seq| ShippedLine {
                seq,
                at: crate::logs::store::format_time(crate::logs::store::now_ns()),
                app: "shop".into(),
                env: "production".into(),
                source: LogSource::App,
                process: "web".into(),
                replica: 1,
                release: 1,
                stream: LogStream::Stdout,
                text: format!("line {seq}"),
            })
            .collect();
        LogBatch { lines, ..Default::default() }
    }

    /// Reads octet-counted messages until `n` came; answers their texts (after the header).
    async fn messages(conn: &mut tokio::net::TcpStream, n: usize) -> Vec<String> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while out.len() < n {
            let mut chunk = [0u8; 4096];
            let got =
                tokio::time::timeout(Duration::from_secs(90), conn.read(&mut chunk)).await.unwrap().unwrap();
            assert!(got > 0, "the drain closed the connection");
            buf.extend_from_slice(&chunk[..got]);
            while let Some(space) = buf.iter().position(|b| *b == b' ') {
                let len: usize = std::str::from_utf8(&buf[..space]).unwrap().parse().unwrap();
                if buf.len() < space + 1 + len {
                    break;
                }
                let msg = String::from_utf8(buf[space + 1..space + 1 + len].to_vec()).unwrap();
                out.push(msg.splitn(8, ' ').nth(7).unwrap().to_string());
                buf.drain(..space + 1 + len);
            }
        }
        out
    }

    #[tokio::test]
    async fn a_drain_sends_new_lines_once_in_order_and_resends_after_its_server_returns() {
        const HOME: &str = "127.0.44.3";
        let (state, dir) = AppState::for_tests().await;
        state.logs.insert("n1", &lines(1, 3), 0).await.unwrap();
        // An address of its own on loopback: a port freed here and taken again must not meet a
        // client of another test still dialling 127.0.0.1 at that number (it did: an agent's
        // TLS handshake was accepted as the drain's connection).
        let listener = tokio::net::TcpListener::bind((HOME, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("syslog+tcp://{HOME}:{port}");
        let drain = add(&state, "admin", "shop", AddDrain { url: url.clone(), env: None }).await.unwrap();
        let dup = add(&state, "admin", "shop", AddDrain { url, env: None }).await.unwrap_err();
        assert!(dup.to_string().contains("already has this drain"), "{dup}");
        let worker = tokio::spawn(run(state.clone()));

        // Lines stored before the drain was added are not sent; those after are, in order.
        state.logs.insert("n1", &lines(4, 8), 0).await.unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        let texts = messages(&mut conn, 5).await;
        assert_eq!(texts, (4..=8).map(|i| format!("line {i}")).collect::<Vec<_>>());

        // The server goes away: the drain fails, says why, and sends the lines once it is back.
        drop(conn);
        drop(listener);
        let mut failing = false;
        for seq in 9..=40 {
            state.logs.insert("n1", &lines(seq, seq), 0).await.unwrap();
            let d = list(&state, "shop").await.unwrap().remove(0);
            if d.state == DrainState::Failing {
                assert!(d.last_error.unwrap().contains(&format!("connecting to {HOME}")));
                failing = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(failing, "the drain never noticed its server was gone");
        let listener = tokio::net::TcpListener::bind((HOME, port)).await.unwrap();
        let (mut conn, _) =
            tokio::time::timeout(Duration::from_secs(30), listener.accept()).await.unwrap().unwrap();
        let sent = list(&state, "shop").await.unwrap().remove(0);
        let last: u64 = state.logs.drain_start().await.unwrap().try_into().unwrap();
        let texts = messages(&mut conn, (last - 8) as usize).await;
        assert_eq!(texts, (9..=last).map(|i| format!("line {i}")).collect::<Vec<_>>(), "{sent:?}");

        let removed = remove(&state, "admin", "shop", Some(&drain.id), None).await.unwrap();
        assert_eq!(removed.url, format!("syslog+tcp://{HOME}:{port}"));
        state.shutting_down().cancel();
        worker.await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}

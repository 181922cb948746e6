//! Runs the user joins (`paas run` with stdin, a TTY at a terminal): the CLI's and the node
//! agent's upgraded connections for one run meet here and are joined byte for byte; the frames
//! of `protocol::attach` pass through unread, except one this side writes when the node never
//! comes. Each side joins once, the user only as the one who started the run; whichever comes
//! first waits up to [`MEET_WITHIN`] for the other.

use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::JobRow;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use protocol::attach::Frame;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// How long one side of a session waits for the other.
pub const MEET_WITHIN: Duration = Duration::from_secs(60);

type Leg = TokioIo<hyper::upgrade::Upgraded>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    User,
    Agent,
}

/// Sessions waiting for their other side, and the sides that already came (each comes once).
#[derive(Clone, Default)]
pub struct Rendezvous(Arc<Mutex<Meeting>>);

#[derive(Default)]
struct Meeting {
    waiting: HashMap<String, (Side, oneshot::Sender<Leg>)>,
    came: HashSet<(String, Side)>,
}

impl Rendezvous {
    fn meeting(&self) -> std::sync::MutexGuard<'_, Meeting> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `side` of run `id`: refused when that side already came.
    fn claim(&self, id: &str, side: Side) -> Result<()> {
        if !self.meeting().came.insert((id.to_string(), side)) {
            let who = if side == Side::User { "someone" } else { "its node" };
            return Err(DomainError::Conflict(format!("{who} already joined run {id}")));
        }
        Ok(())
    }

    /// The run ended: nothing of it is kept.
    pub fn forget(&self, id: &str) {
        let mut m = self.meeting();
        m.waiting.remove(id);
        m.came.retain(|(run, _)| run != id);
    }
}

/// The user's side of run `id` of `app`/`env`, started by `user`: checked and claimed. The
/// caller upgrades the connection and hands it to [`join`].
pub async fn user_side(state: &AppState, user: &str, app: &str, env: &str, id: &str) -> Result<JobRow> {
    let job = state.store.get_job(id).await?;
    if job.app != app || job.env != env {
        return Err(DomainError::NotFound(format!("{app}/{env} has no run {id:?}")));
    }
    if job.attach_tty.is_none() {
        let why = format!("run {id} was not started to be joined; read its output with `GET .../runs/{id}`");
        return Err(DomainError::Invalid(why));
    }
    if state.store.job_started_by(id).await? != user {
        return Err(DomainError::Forbidden(format!(
            "run {id} is another user's: only who started it may join it"
        )));
    }
    open(state, &job, Side::User)?;
    Ok(job)
}

/// `paas db psql` at a terminal: psql as the app's role inside the primary (or the replica)
/// server of `app`/`env`, a run `user` then joins like any other. Returns its id.
pub async fn start_psql(state: &AppState, user: &str, app: &str, env: &str, replica: bool) -> Result<String> {
    use protocol::agent::DbRole;
    let db = state.store.get_database(app, env).await?;
    if replica && db.replicas == 0 {
        return Err(DomainError::Invalid(format!("{app}/{env} has no replica")));
    }
    let (role, node) =
        if replica { (DbRole::Replica, &db.replica_node) } else { (DbRole::Primary, &db.node) };
    let server = crate::assign::database_spec(state, &db, role).await?;
    // The image's own psql (the agent's `dbtasks::psql::binary`), over the server's local
    // socket as the app's role: what it creates belongs to the app, and it has no more rights.
    let psql = format!("/usr/lib/postgresql/{}/bin/psql", db.version);
    let command = [server.name.as_str(), &psql, "-X", "-U", &server.user, "-d", &server.database];
    let job = JobRow {
        id: crate::runs::new_id("psql"),
        app: app.to_string(),
        env: env.to_string(),
        release: state.store.get_env(app, env).await?.current_release.unwrap_or(0),
        node: node.clone(),
        kind: crate::store::JobKind::Psql,
        command: command.map(String::from).to_vec(),
        status: crate::store::JobStatus::Pending,
        exit_code: None,
        error: None,
        attach_tty: Some(true),
    };
    state.store.create_job(&job, user).await?;
    tracing::info!(app, env, job = %job.id, replica, user, "interactive psql started");
    state.bump();
    Ok(job.id)
}

/// The node's side of run `id`: the run must be assigned to `node`.
pub async fn agent_side(state: &AppState, node: &str, id: &str) -> Result<JobRow> {
    let job = state.store.get_job(id).await?;
    if job.node != node || job.attach_tty.is_none() {
        return Err(DomainError::NotFound(format!("node {node} runs no joined run {id:?}")));
    }
    open(state, &job, Side::Agent)?;
    Ok(job)
}

fn open(state: &AppState, job: &JobRow, side: Side) -> Result<()> {
    if job.done() {
        return Err(DomainError::Conflict(format!("run {} has ended", job.id)));
    }
    state.attach.claim(&job.id, side)
}

/// Joins `side`'s upgraded connection to the other side of `job` once both came, copying until
/// either ends; ends with the control plane's shutdown. The user is told when the node never
/// came, and the run is then ended so that no node starts it later for nobody.
pub async fn join(state: AppState, job: JobRow, side: Side, upgrade: OnUpgrade) {
    let leg = match upgrade.await {
        Ok(u) => TokioIo::new(u),
        Err(e) => {
            tracing::debug!(job = %job.id, error = %e, "an attach connection was not upgraded");
            return;
        }
    };
    let peer = {
        let mut m = state.attach.meeting();
        match m.waiting.remove(&job.id) {
            Some((other, tx)) if other != side => {
                // The waiting side joins the two; if it gave up meanwhile, this leg just closes.
                let _ = tx.send(leg);
                return;
            }
            _ => {
                let (tx, rx) = oneshot::channel();
                m.waiting.insert(job.id.clone(), (side, tx));
                rx
            }
        }
    };
    let stop = state.shutting_down();
    let met = tokio::select! {
        met = tokio::time::timeout(MEET_WITHIN, peer) => met.ok().and_then(Result::ok),
        () = stop.cancelled() => None,
    };
    let Some(mut other) = met else {
        state.attach.meeting().waiting.remove(&job.id);
        gave_up(&state, &job, side, leg).await;
        return;
    };
    let mut leg = leg;
    tracing::info!(app = %job.app, env = %job.env, job = %job.id, "attached run joined");
    tokio::select! {
        done = tokio::io::copy_bidirectional(&mut leg, &mut other) => {
            if let Err(e) = done {
                tracing::debug!(job = %job.id, error = %e, "an attached run's connection broke off");
            }
        }
        () = stop.cancelled() => {}
    }
}

/// One side waited in vain: the user hears why; the run ends (its node, if it comes later, is
/// refused and stops the container).
async fn gave_up(state: &AppState, job: &JobRow, side: Side, mut leg: Leg) {
    let why = match side {
        Side::User => format!("node {} did not start the run within {} s", job.node, MEET_WITHIN.as_secs()),
        Side::Agent => format!("nobody joined the run within {} s", MEET_WITHIN.as_secs()),
    };
    if side == Side::User {
        let _ = leg.write_all(&Frame::Error(format!("{why}; it was given up")).encode()).await;
        let _ = leg.shutdown().await;
    }
    tracing::warn!(app = %job.app, env = %job.env, job = %job.id, "attached run given up: {why}");
    if let Err(e) = state.store.finish_job(&job.id, None, Some(&why)).await {
        tracing::warn!(job = %job.id, error = %e, "ending a run given up failed");
    }
    state.attach.forget(&job.id);
    state.bump();
}

//! Typed HTTP client for the paas API and agent protocol. The CLI, the web console and the node
//! agent all go through it, so there is one place that knows URLs and error bodies.

mod access;
mod alerts;
mod attach;
mod domains;
mod drains;
mod metrics;
pub use access::seg;
pub use metrics::ScrapeToken;

use crate::agent::{
    BuildLog, BuildResult, BuildTask, DbTaskResult, JobLog, JobResult, NodeReport, RegisterNode,
    RegisteredNode, WatchResponse,
};
use crate::api::{
    App, AppDeleted, Backup, ConfigChange, ConfigChanged, ConfigVars, CreateApp, CreateDatabase, CreateEnv,
    CronStatus, DatabaseInfo, DatabaseSettings, DbTaskView, DeployEvents, DeployImage, ErrorBody, Event,
    Formation, MaintenanceMode, Node, Process, ProcessRestart, Promote, PsqlCommand, Release, Rollback,
    RunCommand, RunOutput, Scale, SetMaintenance, StartRestore, WhoAmI,
};
use crate::logs::{LogAck, LogBatch, LogPage, LogQuery};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// An API call that failed, carrying the server's one-sentence explanation.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    /// HTTP status, `None` when the server could not be reached.
    pub status: Option<u16>,
    pub message: String,
}

impl ClientError {
    pub(crate) fn transport(base: &str, err: reqwest::Error) -> Self {
        let message = if err.is_connect() {
            format!("cannot reach the paas server at {base}: is `paas up` running?")
        } else if err.is_timeout() {
            format!("the paas server at {base} did not answer in time")
        } else {
            format!("request to the paas server at {base} failed: {err}")
        };
        Self { status: None, message }
    }
}

/// What every call answers: the resource, or why the call failed.
type Result<T> = std::result::Result<T, ClientError>;

/// Bound on the agent's small calls that must not hang a task (results, progress signals).
const AGENT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP settings every client starts from.
pub(crate) fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        // The control plane closes connections idle for 10 s (its header-read timeout);
        // dropping them sooner here means a request never goes out on one being closed.
        .pool_idle_timeout(Duration::from_secs(5))
}

/// Clones share the bearer token and the HTTP client: a node agent that renews its certificate
/// swaps the client once, and every task holding a clone then presents the new one.
/// Marks a 503 from a control plane on standby: the client moves on to its next URL.
pub const STANDBY_HEADER: &str = "x-paas-standby";

#[derive(Clone)]
pub struct Client {
    /// The server's URLs: several for control planes sharing a database. Requests go to one
    /// until it does not answer or says it stands by, then to the next.
    bases: Arc<[String]>,
    at: Arc<std::sync::atomic::AtomicUsize>,
    token: Arc<RwLock<String>>,
    http: Arc<RwLock<reqwest::Client>>,
}

impl Client {
    /// `base` is the server URL (`http://127.0.0.1:7070`), `token` a bearer token.
    pub fn new(base: impl Into<String>, token: impl Into<String>) -> Self {
        let http = builder().build().expect("building an HTTP client without TLS settings cannot fail");
        Self::with_http(base, token, http)
    }

    /// A client that trusts the CA certificates in `ca_pem` besides the public roots (a server
    /// started with `--api-tls`, whose certificate comes from the platform's local CA).
    pub fn trusting(base: impl Into<String>, token: impl Into<String>, ca_pem: &[u8]) -> Result<Self> {
        let mut b = builder();
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem)
            .map_err(|e| ClientError { status: None, message: e.to_string() })?;
        for cert in certs {
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|e| ClientError { status: None, message: e.to_string() })?;
        Ok(Self::with_http(base, token, http))
    }

    /// A client on `http` (an agent's, with its TLS identity: [`crate::tls::agent_http`]).
    pub fn with_http(base: impl Into<String>, token: impl Into<String>, http: reqwest::Client) -> Self {
        let token = Arc::new(RwLock::new(token.into()));
        let http = Arc::new(RwLock::new(http));
        let bases: Vec<String> =
            base.into().split(',').map(|b| b.trim().trim_end_matches('/').to_string()).collect();
        Self { bases: bases.into(), at: Arc::default(), token, http }
    }

    /// The URL requests go to now.
    pub fn base(&self) -> &str {
        &self.bases[self.at.load(std::sync::atomic::Ordering::Relaxed) % self.bases.len()]
    }

    /// Sends the next requests to the next URL (this one did not answer, or stands by).
    fn rotate(&self) {
        if self.bases.len() > 1 {
            self.at.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The error of a request `base` did not answer; the next goes elsewhere.
    pub(crate) fn failed(&self, err: reqwest::Error) -> ClientError {
        let e = ClientError::transport(self.base(), err);
        self.rotate();
        e
    }

    fn token(&self) -> String {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the bearer token for this client and all its clones.
    pub fn set_token(&self, token: impl Into<String>) {
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = token.into();
    }

    pub(crate) fn http(&self) -> reqwest::Client {
        self.http.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the HTTP client (a renewed certificate) for this client and all its clones;
    /// requests in flight finish on the old one.
    pub fn set_http(&self, http: reqwest::Client) {
        *self.http.write().unwrap_or_else(|e| e.into_inner()) = http;
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    pub(crate) async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        self.send_unauthenticated(req.bearer_auth(self.token())).await
    }

    /// Sends `req` as it is: with no bearer token unless it has one.
    pub(crate) async fn send_unauthenticated<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T> {
        let resp = self.execute(req).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(self.refusal(resp).await);
        }
        let bytes = resp.bytes().await.map_err(|e| self.failed(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError {
            status: Some(status.as_u16()),
            message: format!("the server sent an answer this client does not understand: {e}"),
        })
    }

    /// Sends `req`; when its server cannot be connected to or stands by, sends it again to the
    /// next URL. Either way the first one never handled it, so nothing is done twice. A
    /// request whose body is a stream goes once.
    async fn execute(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let (client, request) = req.build_split();
        let mut request = request.map_err(|e| ClientError { status: None, message: e.to_string() })?;
        for _ in 1..self.bases.len() {
            let Some(mut again) = request.try_clone() else { break };
            let sent_to = self.base().to_string();
            match client.execute(request).await {
                Err(e) if e.is_connect() => self.rotate(),
                Ok(resp) if resp.headers().contains_key(STANDBY_HEADER) => self.rotate(),
                other => return other.map_err(|e| self.failed(e)),
            }
            let rest = again.url().as_str().strip_prefix(&sent_to).map(str::to_string);
            if let Some(url) = rest.and_then(|rest| format!("{}{rest}", self.base()).parse().ok()) {
                *again.url_mut() = url;
            }
            request = again;
        }
        client.execute(request).await.map_err(|e| self.failed(e))
    }

    /// The server's one-sentence reason for a failed call.
    pub(crate) async fn refusal(&self, resp: reqwest::Response) -> ClientError {
        let status = resp.status();
        if resp.headers().contains_key(STANDBY_HEADER) {
            self.rotate();
        }
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return self.failed(e),
        };
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("the server answered {status}"));
        ClientError { status: Some(status.as_u16()), message }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.http().get(self.url(path))).await
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.http().post(self.url(path)).json(body)).await
    }

    // --- public API ---

    pub async fn whoami(&self) -> Result<WhoAmI> {
        self.get("/api/v1/whoami").await
    }

    pub async fn create_app(&self, name: &str) -> Result<App> {
        self.post("/api/v1/apps", &CreateApp { name: name.to_string() }).await
    }

    pub async fn list_apps(&self) -> Result<Vec<App>> {
        self.get("/api/v1/apps").await
    }

    pub async fn get_app(&self, app: &str) -> Result<App> {
        self.get(&format!("/api/v1/apps/{app}")).await
    }

    /// Deletes an app; `purge` removes its database volumes, networks and images on the nodes
    /// too (the call waits for them), `purge_backups` its backups.
    pub async fn delete_app(&self, app: &str, purge: bool, purge_backups: bool) -> Result<AppDeleted> {
        let query = format!("purge={purge}&purge_backups={purge_backups}");
        self.send(self.http().delete(self.url(&format!("/api/v1/apps/{app}?{query}")))).await
    }

    /// Uploads a gzipped tar of the source and starts a release that builds it.
    pub async fn deploy_source(&self, app: &str, env: &str, body: reqwest::Body) -> Result<Release> {
        let req = self
            .http()
            .post(self.url(&format!("/api/v1/apps/{app}/envs/{env}/deploys")))
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .body(body);
        self.send(req).await
    }

    /// Starts a release that runs an existing image, with `paas.toml` text if there is one.
    pub async fn deploy_image(
        &self,
        app: &str,
        env: &str,
        image: &str,
        paas_toml: Option<String>,
    ) -> Result<Release> {
        let body = DeployImage { image: image.to_string(), paas_toml };
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/deploys"), &body).await
    }

    /// Starts a release that runs an earlier one's image and settings again.
    pub async fn rollback(&self, app: &str, env: &str, to: Option<u32>) -> Result<Release> {
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/rollback"), &Rollback { to }).await
    }

    pub async fn restart(&self, app: &str, env: &str) -> Result<Release> {
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/restart"), &serde_json::json!({})).await
    }

    /// Replaces one process's replicas one at a time, each once its replacement is healthy;
    /// answers when all are done.
    pub async fn restart_process(&self, app: &str, env: &str, process: &str) -> Result<ProcessRestart> {
        self.post(
            &format!("/api/v1/apps/{app}/envs/{env}/processes/{process}/restart"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn create_env(&self, app: &str, env: &str) -> Result<App> {
        self.post(&format!("/api/v1/apps/{app}/envs"), &CreateEnv { name: env.to_string() }).await
    }

    /// Swaps the hostnames and custom domains of `env` and `with`.
    pub async fn swap_envs(&self, app: &str, env: &str, with: &str) -> Result<App> {
        let body = crate::api::SwapEnvs { with: with.to_string() };
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/swap"), &body).await
    }

    pub async fn delete_env(&self, app: &str, env: &str) -> Result<serde_json::Value> {
        self.send(self.http().delete(self.url(&format!("/api/v1/apps/{app}/envs/{env}")))).await
    }

    pub async fn config(&self, app: &str, env: &str, reveal: bool) -> Result<ConfigVars> {
        self.get(&format!("/api/v1/apps/{app}/envs/{env}/config?reveal={reveal}")).await
    }

    pub async fn change_config(&self, app: &str, env: &str, change: &ConfigChange) -> Result<ConfigChanged> {
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/config"), change).await
    }

    /// Turns maintenance mode of an environment on or off.
    pub async fn set_maintenance(&self, app: &str, env: &str, enabled: bool) -> Result<MaintenanceMode> {
        let url = self.url(&format!("/api/v1/apps/{app}/envs/{env}/maintenance"));
        self.send(self.http().put(url).json(&SetMaintenance { enabled })).await
    }

    /// Deploys the image `from` runs into `to`, with `to`'s own config.
    pub async fn promote(&self, app: &str, from: &str, to: &str) -> Result<Release> {
        self.post(&format!("/api/v1/apps/{app}/envs/{to}/promote"), &Promote { from: from.to_string() }).await
    }

    /// Starts `command` in a one-off container of the environment's current release.
    pub async fn run(&self, app: &str, env: &str, command: Vec<String>) -> Result<RunOutput> {
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/runs"), &RunCommand { command, attach: None }).await
    }

    /// A run's output after line `after`; blocks up to `wait` for more.
    pub async fn run_output(
        &self,
        app: &str,
        env: &str,
        id: &str,
        after: u64,
        wait: Duration,
    ) -> Result<RunOutput> {
        self.get(&format!("/api/v1/apps/{app}/envs/{env}/runs/{id}?after={after}&wait={}", wait.as_secs()))
            .await
    }

    /// The serving release's `[cron]` jobs with their next and last runs.
    pub async fn cron_list(&self, app: &str, env: &str) -> Result<Vec<CronStatus>> {
        self.get(&format!("/api/v1/apps/{app}/envs/{env}/cron")).await
    }

    pub async fn job_log(&self, id: &str, log: &JobLog) -> Result<serde_json::Value> {
        self.post(&format!("/agent/v1/jobs/{id}/log"), log).await
    }

    pub async fn job_result(&self, id: &str, result: &JobResult) -> Result<serde_json::Value> {
        self.post(&format!("/agent/v1/jobs/{id}/result"), result).await
    }

    pub async fn db_create(&self, app: &str, env: &str, req: &CreateDatabase) -> Result<DatabaseInfo> {
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/db"), req).await
    }

    pub async fn db_info(&self, app: &str, env: &str, reveal: bool) -> Result<DatabaseInfo> {
        self.get(&format!("/api/v1/apps/{app}/envs/{env}/db?reveal={reveal}")).await
    }

    pub async fn db_settings(
        &self,
        app: &str,
        env: &str,
        settings: &DatabaseSettings,
    ) -> Result<DatabaseInfo> {
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/db/settings"), settings).await
    }

    /// Takes a sealed backup of the platform's state now.
    pub async fn state_backup(&self) -> Result<serde_json::Value> {
        self.post("/api/v1/platform/state-backups", &serde_json::json!({})).await
    }

    pub async fn state_backups(&self) -> Result<serde_json::Value> {
        self.get("/api/v1/platform/state-backups").await
    }

    /// Switchover: the replica becomes the primary; answers once the new primary does.
    pub async fn db_failover(&self, app: &str, env: &str) -> Result<crate::api::DatabaseInfo> {
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/db/failover"), &serde_json::json!({})).await
    }

    /// Starts a backup: a dump, or a physical base backup (`base`).
    pub async fn db_backup(&self, app: &str, env: &str, base: bool) -> Result<Backup> {
        let query = if base { "?base=true" } else { "" };
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/db/backups{query}"), &serde_json::json!({})).await
    }

    pub async fn db_backups(&self, app: &str, env: &str) -> Result<Vec<Backup>> {
        self.get(&format!("/api/v1/apps/{app}/envs/{env}/db/backups")).await
    }

    pub async fn db_get_backup(&self, app: &str, env: &str, id: &str) -> Result<Backup> {
        self.get(&format!("/api/v1/apps/{app}/envs/{env}/db/backups/{id}")).await
    }

    /// A stored backup's dump, as a response whose body is read as it arrives (dumps run to
    /// gigabytes); the caller checks it against the backup's size and SHA-256.
    pub async fn db_backup_data(&self, app: &str, env: &str, id: &str) -> Result<reqwest::Response> {
        let url = self.url(&format!("/api/v1/apps/{app}/envs/{env}/db/backups/{id}/data"));
        let resp = self.http().get(url).bearer_auth(self.token()).send().await;
        let resp = resp.map_err(|e| self.failed(e))?;
        if !resp.status().is_success() {
            return Err(self.refusal(resp).await);
        }
        Ok(resp)
    }

    pub async fn db_verify(&self, app: &str, env: &str, id: &str) -> Result<Backup> {
        let path = format!("/api/v1/apps/{app}/envs/{env}/db/backups/{id}/verify");
        self.post(&path, &serde_json::json!({})).await
    }

    pub async fn db_restore(&self, app: &str, env: &str, req: &StartRestore) -> Result<DbTaskView> {
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/db/restores"), req).await
    }

    /// Uploads a dump (pg_dump's custom format) to be imported: the answer is the restore
    /// that waits for its proof.
    pub async fn db_import(
        &self,
        app: &str,
        env: &str,
        body: reqwest::Body,
        to_new: bool,
        confirm: bool,
    ) -> Result<DbTaskView> {
        let path = format!("/api/v1/apps/{app}/envs/{env}/db/imports?to_new={to_new}&confirm={confirm}");
        let req = self
            .http()
            .post(self.url(&path))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.send(req).await
    }

    /// A new password for the app's role, rolled out in DATABASE_URL as a release.
    pub async fn db_rotate_credentials(&self, app: &str, env: &str) -> Result<ConfigChanged> {
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/db/rotate-credentials"), &serde_json::json!({}))
            .await
    }

    pub async fn db_psql(&self, app: &str, env: &str, req: &PsqlCommand) -> Result<DbTaskView> {
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/db/psql"), req).await
    }

    pub async fn db_task(&self, app: &str, env: &str, id: &str) -> Result<DbTaskView> {
        self.get(&format!("/api/v1/apps/{app}/envs/{env}/db/tasks/{id}")).await
    }

    /// Platform events after `since` (an event id), oldest first.
    /// The activity feed: events after id `since` (oldest first), or else the newest `n`; of
    /// one app (and environment) when given.
    pub async fn events(
        &self,
        since: Option<i64>,
        app: Option<&str>,
        env: Option<&str>,
        n: u32,
    ) -> Result<Vec<Event>> {
        let mut query = vec![format!("n={n}")];
        if let Some(s) = since {
            query.push(format!("since={s}"));
        }
        for (k, v) in [("app", app), ("env", env)] {
            if let Some(v) = v {
                query.push(format!("{k}={}", access::seg(v)));
            }
        }
        self.get(&format!("/api/v1/events?{}", query.join("&"))).await
    }

    pub async fn scale(&self, app: &str, env: &str, process: &str, replicas: u32) -> Result<Formation> {
        let body = Scale { process: process.to_string(), replicas };
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/scale"), &body).await
    }

    /// Deploy progress after event `after`; blocks up to `wait` for new events.
    pub async fn deploy_events(
        &self,
        app: &str,
        env: &str,
        version: u32,
        after: u64,
        wait: Duration,
    ) -> Result<DeployEvents> {
        let path = format!(
            "/api/v1/apps/{app}/envs/{env}/releases/{version}/events?after={after}&wait={}",
            wait.as_secs()
        );
        self.get(&path).await
    }

    pub async fn releases(&self, app: &str, env: &str) -> Result<Vec<Release>> {
        self.get(&format!("/api/v1/apps/{app}/envs/{env}/releases")).await
    }

    pub async fn processes(&self, app: &str, env: &str) -> Result<Vec<Process>> {
        self.get(&format!("/api/v1/apps/{app}/envs/{env}/processes")).await
    }

    pub async fn nodes(&self) -> Result<Vec<Node>> {
        self.get("/api/v1/nodes").await
    }

    /// Asks `node` to prune now and waits for what it removed.
    pub async fn prune_node(&self, node: &str) -> Result<crate::agent::PruneOutcome> {
        self.post(&format!("/api/v1/nodes/{}/prune", seg(node)), &serde_json::json!({})).await
    }

    /// Moves a node's replicas away; answers once none is left there (minutes at most).
    pub async fn drain_node(&self, node: &str) -> Result<crate::api::NodeDrain> {
        self.post(&format!("/api/v1/nodes/{}/drain", seg(node)), &serde_json::json!({})).await
    }

    pub async fn undrain_node(&self, node: &str) -> Result<serde_json::Value> {
        self.post(&format!("/api/v1/nodes/{}/undrain", seg(node)), &serde_json::json!({})).await
    }

    /// A page of an environment's central logs; in follow mode (`after`, `wait`) blocks up
    /// to `wait` seconds for new lines.
    pub async fn logs(&self, app: &str, env: &str, query: &LogQuery) -> Result<LogPage> {
        let wait = Duration::from_secs(query.wait.unwrap_or(0));
        let url = self.url(&format!("/api/v1/apps/{app}/envs/{env}/logs"));
        self.send(self.http().get(url).query(query).timeout(wait + Duration::from_secs(30))).await
    }

    pub async fn log_retention(&self, app: &str) -> Result<crate::logs::LogRetention> {
        self.get(&format!("/api/v1/apps/{app}/logs/retention")).await
    }

    pub async fn set_log_retention(
        &self,
        app: &str,
        set: &crate::logs::SetLogRetention,
    ) -> Result<crate::logs::LogRetention> {
        self.send(self.http().put(self.url(&format!("/api/v1/apps/{app}/logs/retention"))).json(set)).await
    }

    /// The live stream of an environment's logs as server-sent events (what the console
    /// reads), resumed after `last_event_id` when given; the response is checked, not read.
    pub async fn logs_stream(
        &self,
        app: &str,
        env: &str,
        query: &LogQuery,
        last_event_id: Option<i64>,
    ) -> Result<reqwest::Response> {
        let url = self.url(&format!("/api/v1/apps/{app}/envs/{env}/logs/stream"));
        let mut req = self.http().get(url).query(query).bearer_auth(self.token());
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.map_err(|e| self.failed(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.failed(e))?;
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("the server answered {status}"));
        Err(ClientError { status: Some(status.as_u16()), message })
    }

    // --- agent protocol ---

    /// Registers the node again over its mutual TLS (its address or ingress role may have
    /// changed); a new node joins with [`Client::join`] first.
    pub async fn register(&self, node: &RegisterNode) -> Result<RegisteredNode> {
        self.post("/agent/v1/nodes", node).await
    }

    /// Blocks until the state index passes `index` or `wait` runs out.
    pub async fn watch(&self, node: &str, index: u64, wait: Duration) -> Result<WatchResponse> {
        let path = format!("/agent/v1/nodes/{node}/watch?index={index}&wait={}", wait.as_secs());
        let req = self.http().get(self.url(&path)).timeout(wait + Duration::from_secs(10));
        self.send(req).await
    }

    pub async fn report(&self, node: &str, report: &NodeReport) -> Result<serde_json::Value> {
        self.post(&format!("/agent/v1/nodes/{node}/report"), report).await
    }

    /// Ships a batch of the node's log lines; the answer says through which `seq` the control
    /// plane has them all. Bounded, so a control plane that stopped answering is asked again.
    pub async fn ship_logs(&self, node: &str, batch: &LogBatch) -> Result<LogAck> {
        let body =
            serde_json::to_vec(batch).map_err(|e| ClientError { status: None, message: e.to_string() })?;
        self.ship_log_body(node, body.into()).await
    }

    /// [`Client::ship_logs`] of a batch already in JSON (the spool writes it from its records).
    pub async fn ship_log_body(&self, node: &str, body: bytes::Bytes) -> Result<LogAck> {
        let req = self
            .http()
            .post(self.url(&format!("/agent/v1/nodes/{node}/logs")))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(req.timeout(AGENT_CALL_TIMEOUT)).await
    }

    /// The gzipped tar uploaded for a release, as a byte stream.
    pub async fn build_source(&self, task: &BuildTask) -> Result<reqwest::Response> {
        let req = self.http().get(self.url(&build_path(task, "source"))).bearer_auth(self.token());
        let resp = req.send().await.map_err(|e| self.failed(e))?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(ClientError {
                status: Some(status.as_u16()),
                message: format!("fetching the build source failed: {status}"),
            });
        }
        Ok(resp)
    }

    pub async fn build_log(&self, task: &BuildTask, log: &BuildLog) -> Result<serde_json::Value> {
        self.post(&build_path(task, "log"), log).await
    }

    pub async fn build_result(&self, task: &BuildTask, result: &BuildResult) -> Result<serde_json::Value> {
        self.post(&build_path(task, "result"), result).await
    }

    /// Streams a backup's dump to the control plane, which stores it and returns its size and
    /// checksum.
    pub async fn upload_backup(&self, id: &str, body: reqwest::Body) -> Result<serde_json::Value> {
        self.send(self.http().put(self.url(&format!("/agent/v1/backups/{id}/data"))).body(body)).await
    }

    /// A stored backup's dump as a byte stream, after the control plane checked its checksum.
    pub async fn download_backup(&self, id: &str) -> Result<reqwest::Response> {
        self.get_stream(&format!("/agent/v1/backups/{id}/data"), &format!("backup {id}")).await
    }

    /// Streams one compressed WAL segment (or history file) of `app`/`env`'s primary, the server
    /// with system identifier `system`, to the control plane's archive; a success means it is
    /// stored and the spool's copy may go.
    pub async fn upload_wal(
        &self,
        (app, env): (&str, &str),
        system: &str,
        name: &str,
        body: reqwest::Body,
    ) -> Result<serde_json::Value> {
        let path = format!("/agent/v1/databases/{app}/{env}/wal/{system}/{name}");
        // One file is at most a segment: a control plane that takes minutes has hung.
        let req = self.http().put(self.url(&path)).body(body).timeout(std::time::Duration::from_secs(120));
        self.send(req).await
    }

    /// The archived WAL a recover task replays, as a tar of compressed segments.
    pub async fn recovery_wal(&self, task: &str) -> Result<reqwest::Response> {
        self.get_stream(&format!("/agent/v1/db-tasks/{task}/wal"), &format!("the WAL for task {task}")).await
    }

    /// Sends image `id` (a `docker save` tarball) for other nodes; the answer's `stored` is
    /// false when the control plane had it already.
    pub async fn upload_image(&self, id: &str, body: reqwest::Body) -> Result<serde_json::Value> {
        self.send(self.http().put(self.url(&format!("/agent/v1/images/{id}"))).body(body)).await
    }

    /// Tells the control plane this node pushed image `id` to the platform's registry.
    pub async fn image_pushed(&self, id: &str) -> Result<serde_json::Value> {
        self.send(self.http().post(self.url(&format!("/agent/v1/images/{id}/pushed")))).await
    }

    /// Image `id` as a `docker save` tarball stream.
    pub async fn fetch_image(&self, id: &str) -> Result<reqwest::Response> {
        self.get_stream(&format!("/agent/v1/images/{id}"), &format!("image {id}")).await
    }

    /// A GET whose answer is read as a stream; an error answer becomes its message.
    async fn get_stream(&self, path: &str, what: &str) -> Result<reqwest::Response> {
        let req = self.http().get(self.url(path)).bearer_auth(self.token());
        let resp = req.send().await.map_err(|e| self.failed(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("fetching {what} failed: {status}"));
        Err(ClientError { status: Some(status.as_u16()), message })
    }

    /// Reports how a database task ended. Bounded, so a control plane that stopped answering
    /// is asked again instead of waited on.
    pub async fn db_task_result(&self, id: &str, result: &DbTaskResult) -> Result<serde_json::Value> {
        let req = self.http().post(self.url(&format!("/agent/v1/db-tasks/{id}/result"))).json(result);
        self.send(req.timeout(AGENT_CALL_TIMEOUT)).await
    }

    /// Says the agent is still working on a database task; the answer's `open` is false once
    /// the control plane has given the task up.
    pub async fn db_task_progress(&self, id: &str) -> Result<serde_json::Value> {
        let req = self.http().post(self.url(&format!("/agent/v1/db-tasks/{id}/progress")));
        self.send(req.timeout(AGENT_CALL_TIMEOUT)).await
    }
}

/// Where the agent protocol serves `what` (`source`, `log`, `result`) of the build `task`.
fn build_path(task: &BuildTask, what: &str) -> String {
    format!("/agent/v1/builds/{}/{}/{}/{what}", task.app, task.env, task.release)
}

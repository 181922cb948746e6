//! The node agent's ingress: a reverse proxy that routes by Host header to the healthy replicas
//! of an app, over plain HTTP/1.1 and over HTTPS (HTTP/2 or HTTP/1.1, by ALPN). This file owns
//! the route table ([`IngressHandle`]), the ingress's bounds ([`Settings`]) and the accept loop
//! with its connection cap and graceful shutdown; forwarding lives in `proxy`, static files in
//! `files`, the built-in error pages in `pages`, the access log and request ids in `access`,
//! certificates in `tls`, the per-app concurrency cap and rate limit in `limits`.

mod access;
mod balance;
#[cfg(test)]
mod balance_tests;
mod files;
mod inflight;
mod limits;
#[cfg(test)]
mod limits_tests;
mod pages;
mod proxy;
#[cfg(test)]
mod static_tests;
#[cfg(test)]
mod tests;
pub mod tls;
mod traffic;

use protocol::agent::Route;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use ipnet::IpNet;
use proxy::Proxy;

/// How long in-flight requests may run after shutdown starts before their connections are cut.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// After shutdown starts, an HTTP/1.1 connection that has started no request for this long is
/// closed as idle (busy ones are closed by their next answer).
const STOP_QUIET: Duration = Duration::from_secs(1);
/// Client connections served at once. Each proxied request holds two descriptors (client and
/// backend), so the process's open-file limit should allow twice this and some.
pub const MAX_CONNECTIONS: usize = 4096;

/// The ingress's bounds and whom it believes; [`Settings::default`] holds the production values
/// (tests shorten them).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Client connections served at once ([`MAX_CONNECTIONS`]). Beyond it the ingress stops
    /// accepting: new clients wait in the listen backlog until a connection closes.
    pub max_connections: usize,
    /// A request head (also the next one on an idle keep-alive connection) must arrive within
    /// this long, or the connection is closed: slow clients cannot hold connections (slowloris).
    pub header_read_timeout: Duration,
    /// A request body may pause this long between chunks; then the request is answered 408.
    pub body_read_timeout: Duration,
    /// A backend must accept the TCP connection within this long, or the next one is tried (502
    /// when none does).
    pub connect_timeout: Duration,
    /// A backend must send its response head within this long of the request, or the client gets
    /// 504.
    pub response_header_timeout: Duration,
    /// Peers (proxies in front of the ingress) whose `X-Forwarded-*` headers are kept and
    /// appended to, and whose `X-Request-Id` is kept; everyone else's are replaced. Empty by
    /// default.
    pub trusted_proxies: Vec<IpNet>,
    /// Where the access log goes (central logs, source `router`); by default nowhere.
    pub logs: crate::logs::LogHandle,
    /// The port this ingress serves HTTPS on, where apps with `https_redirect` send plain-HTTP
    /// clients; `None` without an HTTPS listener.
    pub https_port: Option<u16>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
            logs: Default::default(),
            https_port: None,
        }
    }
}

/// Parses one `--trusted-proxies` entry: a CIDR block (`10.0.0.0/8`) or a single address.
pub fn parse_trusted_proxy(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR block like 10.0.0.0/8"))
}

/// Shared, cheaply clonable access to the ingress route table.
#[derive(Clone)]
pub struct IngressHandle {
    // Readers clone the inner `Arc` and drop the lock at once, so a request always works on one
    // complete table and `set_routes` swaps the whole table in a single write.
    table: Arc<RwLock<Arc<Table>>>,
    inflight: Arc<inflight::InFlight>,
    /// Replicas failing in a row, ejected from balancing for a while.
    health: Arc<balance::Health>,
    /// Extracted static directories by [`protocol::agent::StaticRoute::key`].
    static_roots: Arc<RwLock<HashMap<String, std::path::PathBuf>>>,
    /// What the HTTPS listener serves, by SNI.
    certificates: Arc<tls::Certificates>,
    /// ACME HTTP-01 challenges being answered: token to key authorization.
    challenges: Arc<RwLock<Arc<HashMap<String, String>>>>,
    /// `[errors]` pages read so far, by static key and path (`None`: no such page). An
    /// extracted directory never changes, and a flood of 429s or 503s must not read a file each.
    pages: Arc<std::sync::Mutex<PageCache>>,
}

/// `[errors]` pages by (static key, path).
type PageCache = HashMap<(String, String), Option<ErrorPage>>;

/// An `[errors]` page: its bytes and content type.
pub(crate) type ErrorPage = (bytes::Bytes, &'static str);
/// Pages kept in memory at most (each up to 1 MiB); past it the cache starts over.
const MAX_CACHED_PAGES: usize = 64;

#[derive(Default)]
struct Table {
    by_host: HashMap<String, Arc<RouteEntry>>,
    /// The routes as given, for [`IngressHandle::routes`].
    routes: Vec<Route>,
}

pub(crate) struct RouteEntry {
    pub(crate) route: Route,
    /// Rotation among equally loaded replicas; carried over across table swaps so a busy host
    /// keeps rotating.
    pub(crate) next: AtomicUsize,
    /// The environment's request count and rate limiter: one for all its hostnames, carried
    /// over across table swaps.
    pub(crate) guards: Arc<limits::Guards>,
}

impl IngressHandle {
    pub fn new() -> Self {
        Self {
            table: Arc::new(RwLock::new(Arc::new(Table::default()))),
            inflight: Arc::default(),
            health: Arc::default(),
            static_roots: Arc::default(),
            certificates: Arc::default(),
            challenges: Arc::default(),
            pages: Arc::default(),
        }
    }

    /// The `[errors]` page at `rel` of the static directory `key` (extracted at `root`).
    pub(crate) async fn error_page(&self, key: &str, root: &std::path::Path, rel: &str) -> Option<ErrorPage> {
        let id = (key.to_string(), rel.to_string());
        if let Some(known) = self.pages.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return known.clone();
        }
        let page = files::read_page(root, rel).await;
        let mut pages = self.pages.lock().unwrap_or_else(|p| p.into_inner());
        if pages.len() >= MAX_CACHED_PAGES {
            pages.clear();
        }
        pages.insert(id, page.clone());
        page
    }

    /// Replaces the certificates the HTTPS listener serves; handshakes from now on use them,
    /// established connections are not touched.
    pub fn set_certificates(&self, certs: &[protocol::agent::TlsCertificate]) {
        self.certificates.set(certs);
    }

    pub fn certificates(&self) -> Vec<protocol::agent::TlsCertificate> {
        self.certificates.source()
    }

    /// Replaces the ACME challenges answered on `/.well-known/acme-challenge/`.
    pub fn set_challenges(&self, challenges: &[protocol::agent::AcmeChallenge]) {
        let map = challenges.iter().map(|c| (c.token.clone(), c.key_authorization.clone())).collect();
        *self.challenges.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
    }

    /// The key authorization of a challenge `token`, while one is being answered.
    pub(crate) fn challenge(&self, token: &str) -> Option<String> {
        let challenges = self.challenges.read().unwrap_or_else(|p| p.into_inner()).clone();
        challenges.get(token).cloned()
    }

    /// Atomically replaces the whole route table.
    pub fn set_routes(&self, routes: &[Route]) {
        let old = self.current();
        let mut guards: HashMap<(String, String), Arc<limits::Guards>> = old
            .by_host
            .values()
            .map(|e| ((e.route.app.clone(), e.route.env.clone()), e.guards.clone()))
            .collect();
        let mut by_host = HashMap::with_capacity(routes.len());
        for route in routes {
            let host = normalize_host(&route.host);
            if by_host.contains_key(&host) {
                tracing::warn!(host = %host, app = %route.app, "duplicate ingress route ignored");
                continue;
            }
            let next = old.by_host.get(&host).map_or(0, |e| e.next.load(Ordering::Relaxed));
            let guards = guards.entry((route.app.clone(), route.env.clone())).or_default().clone();
            let entry = RouteEntry { route: route.clone(), next: AtomicUsize::new(next), guards };
            by_host.insert(host, Arc::new(entry));
        }
        let live: std::collections::HashSet<&str> =
            routes.iter().flat_map(|r| r.backends.iter().map(String::as_str)).collect();
        self.health.retain(|b| live.contains(b));
        let table = Arc::new(Table { by_host, routes: routes.to_vec() });
        *self.table.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = table;
    }

    /// The requests answered per app environment since the last call (each environment of the
    /// route table once, with zeros when it had none).
    pub fn take_traffic(&self) -> Vec<protocol::metrics::TrafficFigures> {
        let table = self.current();
        let mut seen: Vec<*const limits::Guards> = Vec::new();
        let mut out = Vec::new();
        for entry in table.by_host.values() {
            let guards = Arc::as_ptr(&entry.guards);
            if !seen.contains(&guards) {
                seen.push(guards);
                out.push(entry.guards.traffic.take(&entry.route.app, &entry.route.env));
            }
        }
        out
    }

    /// Makes the extracted static files of `key` available to routes that name it.
    pub fn set_static_root(&self, key: &str, dir: std::path::PathBuf) {
        self.static_roots.write().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), dir);
    }

    pub(crate) fn static_root(&self, key: &str) -> Option<std::path::PathBuf> {
        self.static_roots.read().unwrap_or_else(|p| p.into_inner()).get(key).cloned()
    }

    /// Requests (and WebSocket tunnels) this ingress has open to `backend` (`addr:port`).
    pub fn in_flight(&self, backend: &str) -> usize {
        self.inflight.get(backend)
    }

    pub fn routes(&self) -> Vec<Route> {
        self.current().routes.clone()
    }

    /// The route for an already normalized host.
    pub(crate) fn lookup(&self, host: &str) -> Option<Arc<RouteEntry>> {
        self.current().by_host.get(host).cloned()
    }

    fn current(&self) -> Arc<Table> {
        // A poisoned lock only means a writer panicked between statements that cannot leave the
        // `Arc` half-written, so the value is still a whole table.
        self.table.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl Default for IngressHandle {
    fn default() -> Self {
        Self::new()
    }
}

/// Reduces a Host header (or route host) to the form routes are keyed by: no port, lowercase,
/// no trailing dot (`Example.COM.:8080` -> `example.com`).
pub(crate) fn normalize_host(raw: &str) -> String {
    let raw = raw.trim();
    let host = if raw.starts_with('[') {
        // IPv6 literal: the port, if any, follows the closing bracket.
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => raw,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Serves until `shutdown` is cancelled; then stops accepting and lets in-flight requests finish
/// (for at most [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    handle: IngressHandle,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_on(listener, handle, settings, None, shutdown).await
}

/// [`serve`] over TLS, with the certificates [`IngressHandle::set_certificates`] gives.
pub async fn serve_tls(
    listener: TcpListener,
    handle: IngressHandle,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls::server_config(handle.certificates.clone()));
    serve_on(listener, handle, settings, Some(acceptor), shutdown).await
}

async fn serve_on(
    listener: TcpListener,
    handle: IngressHandle,
    settings: Settings,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Upgraded connections (WebSockets) leave hyper's connection future, so they are not covered by
    // the drain below; they get their own token, cancelled once the drain is over.
    let tunnels = CancellationToken::new();
    let proxy = Arc::new(Proxy::new(handle, tunnels.clone(), &settings, tls.is_some()));
    let mut conns = JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, scheme, max_connections = settings.max_connections, "ingress listening");
    }
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let mut cap_logged: Option<Instant> = None;

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            (accepted, permit) = accept_within_cap(&listener, &permits, &mut cap_logged) => match accepted {
                Ok((stream, peer)) => {
                    let (proxy, stop, tls) = (proxy.clone(), shutdown.clone(), tls.clone());
                    let timeout = settings.header_read_timeout;
                    conns.spawn(async move {
                        match tls {
                            None => {
                                // Proxied responses are often small writes; Nagle would only add latency.
                                let _ = stream.set_nodelay(true);
                                serve_connection(stream, peer, proxy, timeout, false, stop).await
                            }
                            Some(tls) => serve_tls_connection(stream, peer, tls, proxy, timeout, stop).await,
                        }
                        drop(permit);
                    });
                }
                Err(err) => {
                    // Usually fd exhaustion; pausing keeps the loop from spinning on it.
                    tracing::warn!(error = %err, "ingress accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connection tasks so the set does not grow without bound.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }

    drop(listener);
    tracing::info!(connections = conns.len(), "ingress draining");
    let drained =
        tokio::time::timeout(DRAIN_TIMEOUT, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(connections = conns.len(), "ingress drain timed out; closing connections");
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    tunnels.cancel();
    Ok(())
}

/// Waits for a free connection slot, then for a client. While every slot is taken nothing is
/// accepted, so clients queue in the kernel's backlog instead of costing the agent memory; that
/// is logged at most once a minute.
async fn accept_within_cap(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    logged: &mut Option<Instant>,
) -> (std::io::Result<(TcpStream, SocketAddr)>, Option<OwnedSemaphorePermit>) {
    let permit = match permits.clone().try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) => {
            if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                tracing::warn!("ingress connection cap reached; new connections wait until one closes");
                *logged = Some(Instant::now());
            }
            // The semaphore is never closed, so this only fails if it were.
            permits.clone().acquire_owned().await.ok()
        }
    };
    (listener.accept().await, permit)
}

/// One HTTPS client: the handshake (within the header timeout, so a client that never finishes
/// it cannot hold a connection), then HTTP/2 or HTTP/1.1 as ALPN chose.
async fn serve_tls_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    proxy: Arc<Proxy>,
    header_read_timeout: Duration,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let stream = tokio::select! {
        _ = shutdown.cancelled() => return,
        accepted = tokio::time::timeout(header_read_timeout, acceptor.accept(stream)) => match accepted {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    serve_connection(stream, peer, proxy, header_read_timeout, h2, shutdown).await;
}

/// Ends once the connection has started no request for `period` (`last_request`: when the last
/// one started, in ms after `opened`).
async fn no_request_for(last_request: &std::sync::atomic::AtomicU64, opened: Instant, period: Duration) {
    loop {
        let last = Duration::from_millis(last_request.load(Ordering::Relaxed));
        let due = (last + period).saturating_sub(opened.elapsed());
        if due.is_zero() {
            return;
        }
        tokio::time::sleep(due).await;
    }
}

/// Serves one client connection, HTTP/1.1 (with upgrades) or HTTP/2, until it closes or
/// shutdown lets its request in flight finish.
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    header_read_timeout: Duration,
    h2: bool,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // When the last request started (ms after `opened`): an HTTP/2 connection that starts none
    // for the header timeout is closed like an idle HTTP/1.1 one, or idle clients could hold
    // every connection slot.
    let opened = Instant::now();
    let last_request = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = last_request.clone();
    let stopping = shutdown.clone();
    let service = service_fn(move |req| {
        let (proxy, stopping) = (proxy.clone(), stopping.clone());
        seen.store(opened.elapsed().as_millis() as u64, Ordering::Relaxed);
        async move {
            let mut resp = proxy.handle(req, peer).await;
            // Once the ingress stops, each HTTP/1.1 answer tells its client to reconnect (to
            // the process that takes the socket over) rather than racing a close of the idle
            // connection with the client's next request.
            if stopping.is_cancelled() && !h2 && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true).timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let idle = no_request_for(&last_request, opened, header_read_timeout);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = idle, if h2 => {
            // GOAWAY: streams still open (a long download, server-sent events) finish first.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = shutdown.cancelled() => {
            // An HTTP/1.1 client that keeps sending is told to close with its next answer
            // (above); one that has sent nothing for a while is idle, and closing it is the
            // usual end of a keep-alive connection. HTTP/2 clients get a GOAWAY at once, which
            // tells them exactly which requests to send again.
            let quiet = async {
                if !h2 {
                    no_request_for(&last_request, opened, STOP_QUIET).await;
                }
            };
            tokio::select! {
                result = conn.as_mut() => result,
                _ = quiet => {
                    // Finishes the request in flight (if any), then closes.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, error = %err, "ingress connection ended with an error");
    }
}

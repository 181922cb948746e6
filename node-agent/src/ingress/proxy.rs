//! Forwarding of one request to a backend: the app's protections first (maintenance mode, rate
//! limit, body size, concurrency cap), then backend choice and failover, proxy header rewriting
//! (`X-Forwarded-*` trusted only from configured proxies), body streaming with a read timeout
//! and a size limit, the backend's connect and response-head timeouts, and HTTP upgrade
//! (WebSocket) tunnelling.
//! Each request's access line and request id are `access`'s; this file tells it what happened.

use super::access::{self, Access, Dyno, REQUEST_ID};
use super::inflight::{Guard, GuardedBody};
use super::{limits, normalize_host, pages, IngressHandle, RouteEntry, Settings};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, EXPECT, HOST, UPGRADE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ipnet::IpNet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Error of a body the ingress sends or forwards (hyper's, a file read's, a body timeout).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type of every response the ingress sends: a streamed backend body, a static file or one
/// of our pages.
pub(crate) type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// Where ACME servers look for HTTP-01 challenge answers.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// Upstream keep-alive connections idle longer than this are closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers through which a client names itself or the original request; from anyone but a
/// trusted proxy they are dropped and the ingress sets its own.
const FORWARDING: &[&str] =
    &["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded"];

/// Headers that describe one connection rather than the message (RFC 9110 7.6.1), plus the
/// legacy `Keep-Alive` / `Proxy-Connection`.
const HOP_BY_HOP: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

pub(crate) struct Proxy {
    handle: IngressHandle,
    /// Shared so upstream connections are pooled and kept alive across requests.
    client: Client<HttpConnector, ReplayBody>,
    /// Cancelled when the ingress has finished draining; closes WebSocket tunnels.
    tunnels: CancellationToken,
    body_read_timeout: Duration,
    response_header_timeout: Duration,
    trusted_proxies: Vec<IpNet>,
    /// Where access lines go.
    logs: crate::logs::LogHandle,
    /// Clients reach this proxy over TLS (`X-Forwarded-Proto: https`).
    https: bool,
    /// Where plain-HTTP clients of apps with `https_redirect` are sent.
    https_port: Option<u16>,
}

impl Proxy {
    pub(crate) fn new(
        handle: IngressHandle,
        tunnels: CancellationToken,
        settings: &Settings,
        https: bool,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // A replica that does not accept within this long is treated as down.
        connector.set_connect_timeout(Some(settings.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self {
            handle,
            client,
            tunnels,
            body_read_timeout: settings.body_read_timeout,
            response_header_timeout: settings.response_header_timeout,
            trusted_proxies: settings.trusted_proxies.clone(),
            logs: settings.logs.clone(),
            https,
            https_port: settings.https_port,
        }
    }

    /// Answers one request: it carries a request id upstream and back, and gets an access line
    /// when it is for an app.
    pub(crate) async fn handle(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<RespBody> {
        let started = Instant::now();
        let id = access::request_id(req.headers(), is_trusted(&self.trusted_proxies, peer.ip()));
        req.headers_mut().insert(REQUEST_ID, id.clone());
        let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let client = client_ip(req.headers(), peer, &self.trusted_proxies);
        let mut access = Access::new(started, req.method(), path, &id, client.clone());
        let mut routed = None;
        let mut resp = self.forward(req, peer, &client, &mut access, &mut routed).await;
        if let Some(entry) = &routed {
            if pages::is_own(&resp) {
                resp = self.app_page(entry, resp).await;
            }
            let hsts = entry.route.limits.hsts_max_age_secs;
            if self.https && hsts > 0 {
                if let Ok(value) = HeaderValue::from_str(&format!("max-age={hsts}")) {
                    resp.headers_mut().insert(http::header::STRICT_TRANSPORT_SECURITY, value);
                }
            }
        }
        resp.headers_mut().insert(REQUEST_ID, id);
        access.finish(resp, &self.logs)
    }

    /// The app's own page (`[errors]`) in place of the ingress's for the same status, when it
    /// has one: status and headers stay the ingress's.
    async fn app_page(&self, entry: &RouteEntry, resp: Response<RespBody>) -> Response<RespBody> {
        let Some(st) = &entry.route.static_files else { return resp };
        let Some(page) = protocol::manifest::error_page(&st.errors, resp.status().as_u16()) else {
            return resp;
        };
        let key = st.key();
        let Some(root) = self.handle.static_root(&key) else { return resp };
        match self.handle.error_page(&key, &root, page).await {
            Some((body, content_type)) => pages::replace_body(resp, body, content_type),
            None => resp,
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        client: &str,
        access: &mut Access,
        routed: &mut Option<Arc<RouteEntry>>,
    ) -> Response<RespBody> {
        let raw_host = match req.headers().get(HOST) {
            Some(value) => value.to_str().ok().map(str::to_owned),
            None => req.uri().authority().map(|a| a.as_str().to_owned()),
        };
        let Some(raw_host) = raw_host.filter(|h| !h.is_empty()) else {
            return pages::bad_request("The request has no usable Host header.");
        };
        let host = normalize_host(&raw_host);
        // ACME's HTTP-01 check, for any host: answered only while the control plane obtains a
        // certificate (other tokens go on to the app, which may answer its own).
        if let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE) {
            if let Some(key) = self.handle.challenge(token) {
                access.answered_by(Dyno::Ingress);
                return pages::text(StatusCode::OK, key);
            }
        }
        let Some(entry) = self.handle.lookup(&host) else {
            return pages::not_found(&host);
        };
        *routed = Some(entry.clone());
        let route = &entry.route;
        access.route(&entry, &host);
        // The app's protections, before anything of the request reaches it (or its static files).
        let bounds = route.limits;
        if let (false, true, Some(port)) = (self.https, bounds.https_redirect, self.https_port) {
            let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let authority = if port == 443 { host.clone() } else { format!("{host}:{port}") };
            access.answered_by(Dyno::Ingress);
            return pages::redirect(&format!("https://{authority}{path}"));
        }
        if route.maintenance {
            access.error("The app is in maintenance mode", Dyno::Ingress);
            return pages::maintenance(&route.app);
        }
        if let Err(wait) = entry.guards.rate.check(client, &bounds) {
            access.error("Rate limit exceeded", Dyno::Ingress);
            return pages::rate_limited(&route.app, limits::retry_after_secs(wait));
        }
        // A declared length past the limit is refused before any of the body is read (with
        // `Expect: 100-continue` the client does not even send it).
        if req.body().size_hint().lower() > bounds.max_body_bytes {
            access.error("Request body too large", Dyno::Ingress);
            return pages::too_large(bounds.max_body_bytes);
        }
        if let Some(st) = &route.static_files {
            if let Some(root) = self.handle.static_root(&st.key()) {
                let path = req.uri().path().to_string();
                if let Some(resp) = super::files::serve(&root, st, req.method(), &path, req.headers()).await {
                    access.answered_by(Dyno::Static);
                    return resp;
                }
            }
        }
        if route.backends.is_empty() {
            access.error("No healthy replica", Dyno::Ingress);
            return pages::no_replica(&route.app);
        }
        // Past the cap the answer is an immediate 503: queueing would only pile up requests
        // (and their clients' connections) behind an app that is already not keeping up.
        let Some(slot) = entry.guards.enter(bounds.max_concurrent) else {
            access.error("The app is at its concurrent request limit", Dyno::Ingress);
            return pages::at_capacity(&route.app);
        };
        let resp = self.proxy(req, peer, &entry, &host, &raw_host, access).await;
        // The slot is held until the response body ends, like the backend's in-flight count.
        resp.map(|inner| GuardedBody { inner, guard: Some(slot) }.boxed_unsync())
    }

    /// Sends the request to the route's replicas in turn until one answers.
    async fn proxy(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        entry: &RouteEntry,
        host: &str,
        raw_host: &str,
        access: &mut Access,
    ) -> Response<RespBody> {
        let route = &entry.route;
        let upgrade = upgrade_protocol(req.headers());
        // Must be taken before the request is consumed; it resolves once our 101 is written.
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let scheme = if self.https { "https" } else { "http" };
        let mut headers =
            upstream_headers(&parts.headers, upgrade, peer, raw_host, scheme, &self.trusted_proxies);
        // HTTP/2 names the host in the request's authority, which the HTTP/1.1 request to the
        // backend must carry as `Host`.
        if !headers.contains_key(HOST) {
            if let Ok(value) = HeaderValue::from_str(raw_host) {
                headers.insert(HOST, value);
            }
        }
        // Re-sending a request the backend may already have seen is only safe when there is no body
        // to lose and the method allows repetition.
        let resend_ok = body.is_end_stream() && is_idempotent(&parts.method);
        let slot = Arc::new(Mutex::new(Some(body)));
        let body_timed_out = Arc::new(AtomicBool::new(false));
        let body_too_large = Arc::new(AtomicBool::new(false));
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());

        let backends = &route.backends;
        let start = entry.next.fetch_add(1, Ordering::Relaxed);
        let health = &self.handle.health;
        for index in health.order(backends, start, &self.handle.inflight) {
            let backend = &backends[index];
            let uri = match Uri::builder()
                .scheme("http")
                .authority(backend.as_str())
                .path_and_query(path)
                .build()
            {
                Ok(uri) => uri,
                Err(err) => {
                    tracing::warn!(host = %host, backend = %backend, error = %err, "invalid backend address");
                    continue;
                }
            };
            let mut out = Request::new(ReplayBody {
                slot: slot.clone(),
                body: None,
                idle: self.body_read_timeout,
                timer: None,
                timed_out: body_timed_out.clone(),
                max: route.limits.max_body_bytes,
                read: 0,
                too_large: body_too_large.clone(),
            });
            *out.method_mut() = parts.method.clone();
            *out.uri_mut() = uri;
            *out.version_mut() = Version::HTTP_11;
            *out.headers_mut() = headers.clone();

            let guard = self.handle.inflight.enter(backend);
            access.attempt(index);
            let answer = tokio::time::timeout(self.response_header_timeout, self.client.request(out)).await;
            match answer {
                Ok(Ok(resp)) => {
                    health.answered(backend);
                    return self.respond(resp, client_upgrade, host, backend, &route.app, guard, access);
                }
                Err(_) => {
                    health.failed(backend);
                    tracing::warn!(host = %host, backend = %backend, timeout = ?self.response_header_timeout, "backend sent no response head in time");
                    access.error("The app sent no response in time", access.dyno());
                    return pages::gateway_timeout(&route.app);
                }
                Ok(Err(_)) if body_too_large.load(Ordering::Acquire) => {
                    tracing::info!(host = %host, %peer, "request body past the limit; answered 413");
                    access.error("Request body too large", access.dyno());
                    return pages::too_large(route.limits.max_body_bytes);
                }
                Ok(Err(_)) if body_timed_out.load(Ordering::Acquire) => {
                    tracing::info!(host = %host, %peer, "request body stalled; answered 408");
                    access.error("The request body did not arrive in time", access.dyno());
                    return pages::request_timeout();
                }
                Ok(Err(err)) => {
                    health.failed(backend);
                    // A failed connect sent nothing, so even a request with a body can go elsewhere
                    // as long as nobody started reading that body.
                    let unsent = err.is_connect() && slot.lock().is_ok_and(|s| s.is_some());
                    let retry = unsent || resend_ok;
                    tracing::debug!(host = %host, backend = %backend, error = %err, retry, "backend request failed");
                    if !retry {
                        tracing::warn!(host = %host, backend = %backend, error = %err, "backend request failed");
                        break;
                    }
                }
            }
        }
        tracing::warn!(host = %host, app = %route.app, "no backend answered");
        access.error("No replica answered", Dyno::Ingress);
        pages::bad_gateway(&route.app)
    }

    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        mut resp: Response<Incoming>,
        client_upgrade: Option<OnUpgrade>,
        host: &str,
        backend: &str,
        app: &str,
        guard: Guard,
        access: &mut Access,
    ) -> Response<RespBody> {
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                tracing::warn!(host = %host, backend = %backend, "backend switched protocols unasked");
                access.error("The app switched protocols unasked", access.dyno());
                return pages::bad_gateway(app);
            };
            let backend_upgrade = hyper::upgrade::on(&mut resp);
            let protocol = resp.headers().get(UPGRADE).cloned();
            strip_hop_by_hop(resp.headers_mut());
            resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(protocol) = protocol {
                resp.headers_mut().insert(UPGRADE, protocol);
            }
            spawn_tunnel(client_upgrade, backend_upgrade, self.tunnels.clone(), host, backend, guard);
            return resp.map(|body| body.map_err(BoxError::from).boxed_unsync());
        }
        strip_hop_by_hop(resp.headers_mut());
        resp.map(|inner| GuardedBody { inner, guard: Some(guard) }.map_err(BoxError::from).boxed_unsync())
    }
}

/// Copies bytes both ways between the upgraded client and backend connections until either closes.
fn spawn_tunnel(
    client: OnUpgrade,
    backend: OnUpgrade,
    stop: CancellationToken,
    host: &str,
    backend_addr: &str,
    guard: Guard,
) {
    let (host, backend_addr) = (host.to_owned(), backend_addr.to_owned());
    tokio::spawn(async move {
        // The tunnel counts as in flight until it closes.
        let _guard = guard;
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(host = %host, backend = %backend_addr, error = %err, "upgrade failed");
                return;
            }
        };
        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut client, &mut backend) => match result {
                Ok((up, down)) => tracing::debug!(host = %host, backend = %backend_addr, up, down, "tunnel closed"),
                Err(err) => tracing::debug!(host = %host, backend = %backend_addr, error = %err, "tunnel broke"),
            },
            _ = stop.cancelled() => tracing::debug!(host = %host, backend = %backend_addr, "tunnel closed by shutdown"),
        }
    });
}

/// The protocol asked for when the request is an HTTP/1.1 upgrade (`Connection: upgrade` plus
/// `Upgrade: <protocol>`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_tokens(headers).any(|token| token.eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(UPGRADE).cloned()).flatten()
}

/// Whether `ip` is one of the configured proxies whose forwarding headers are believed.
fn is_trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    proxies.iter().any(|net| net.contains(&ip))
}

/// Headers for the backend request: hop-by-hop ones removed (bar an upgrade), `Host` kept as the
/// client sent it. The forwarding headers describe the peer: from one of the `trusted` proxies its
/// `X-Forwarded-For` is extended with the peer and its other forwarding headers kept (`X-Real-IP`
/// defaults to the last untrusted address of the chain); from anyone else every one of them is
/// replaced, so a client cannot claim another address.
fn upstream_headers(
    original: &HeaderMap,
    upgrade: Option<HeaderValue>,
    peer: SocketAddr,
    raw_host: &str,
    scheme: &'static str,
    trusted: &[IpNet],
) -> HeaderMap {
    let mut headers = original.clone();
    strip_hop_by_hop(&mut headers);
    // hyper already sent `100 Continue` to the client when we started reading the body.
    headers.remove(EXPECT);
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }

    let ip = peer.ip().to_canonical().to_string();
    let mut forwarded_for = ip.clone();
    let real_ip = chain_client(original, peer, trusted);
    if is_trusted(trusted, peer.ip()) {
        let previous = forwarded_chain(original);
        if !previous.is_empty() {
            forwarded_for = format!("{}, {ip}", previous.join(", "));
        }
    } else {
        for name in FORWARDING {
            headers.remove(*name);
        }
    }
    let value = HeaderValue::from_str(&forwarded_for).or_else(|_| HeaderValue::from_str(&ip));
    if let Ok(value) = value {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
    let set_default = |headers: &mut HeaderMap, name: &'static str, value: Option<HeaderValue>| {
        if let (false, Some(value)) = (headers.contains_key(name), value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set_default(&mut headers, "x-real-ip", HeaderValue::from_str(&real_ip).ok());
    set_default(&mut headers, "x-forwarded-proto", Some(HeaderValue::from_static(scheme)));
    set_default(&mut headers, "x-forwarded-host", HeaderValue::from_str(raw_host).ok());
    headers
}

/// The addresses a request's `X-Forwarded-For` headers list, oldest first.
fn forwarded_chain(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

/// The client by the peer and, from a trusted proxy, its `X-Forwarded-For`: the last hop no
/// trusted proxy accounts for.
fn chain_client(headers: &HeaderMap, peer: SocketAddr, trusted: &[IpNet]) -> String {
    let ip = peer.ip().to_canonical().to_string();
    if !is_trusted(trusted, peer.ip()) {
        return ip;
    }
    let chain = forwarded_chain(headers);
    let client = chain.iter().rev().find(|a| a.parse().map_or(true, |a| !is_trusted(trusted, a)));
    client.map_or(ip, |c| c.to_string())
}

/// The client's address as the backend is told it (`X-Real-IP`): a trusted proxy's own
/// `X-Real-IP`, else [`chain_client`].
fn client_ip(headers: &HeaderMap, peer: SocketAddr, trusted: &[IpNet]) -> String {
    let given = headers.get("x-real-ip").and_then(|v| v.to_str().ok()).map(str::trim);
    match given {
        Some(real) if !real.is_empty() && is_trusted(trusted, peer.ip()) => real.to_string(),
        _ => chain_client(headers, peer, trusted),
    }
}

/// Removes the connection-specific headers, including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Request body for one attempt. The client's body stays in the shared slot until the backend
/// connection first reads it, so when the connect fails the body is still there for the next
/// backend; once taken, it belongs to this attempt alone. A client that sends nothing for `idle`
/// while the body is unfinished breaks the request off (`timed_out` tells the caller to answer 408);
/// so does a body that grows past `max` bytes (`too_large`: 413), which catches chunked bodies
/// and HTTP/2 bodies that declared no length.
pub(crate) struct ReplayBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    body: Option<Incoming>,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    timed_out: Arc<AtomicBool>,
    max: u64,
    /// Body bytes passed on so far.
    read: u64,
    too_large: Arc<AtomicBool>,
}

impl ReplayBody {
    fn with_pending<T>(&self, f: impl FnOnce(Option<&Incoming>) -> T) -> T {
        match &self.body {
            Some(body) => f(Some(body)),
            None => match self.slot.lock() {
                Ok(slot) => f(slot.as_ref()),
                Err(_) => f(None),
            },
        }
    }
}

/// The client stopped sending its request body.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body data for {0:?}")]
struct BodyTimeout(Duration);

/// The client sent more body than the app accepts.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the limit of {0} bytes")]
struct BodyTooLarge(u64);

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.body.is_none() {
            this.body = this.slot.lock().ok().and_then(|mut slot| slot.take());
        }
        let Some(body) = this.body.as_mut() else {
            // Only reachable for an empty body (a non-empty one is never re-sent once taken).
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()).and_then(Frame::data_ref) {
                    this.read += data.len() as u64;
                    if this.read > this.max {
                        // Cut off here: the backend never gets more than the limit.
                        this.too_large.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(BodyTooLarge(this.max).into())));
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timed_out.store(true, Ordering::Release);
                        Poll::Ready(Some(Err(BodyTimeout(idle).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.with_pending(|body| body.is_none_or(Body::is_end_stream))
    }

    fn size_hint(&self) -> SizeHint {
        self.with_pending(|body| body.map_or_else(|| SizeHint::with_exact(0), Body::size_hint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::TRANSFER_ENCODING;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Private"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-private", HeaderValue::from_static("secret"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-app"], "kept");
    }

    #[test]
    fn upstream_headers_add_forwarding_and_keep_upgrade() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("App.example:8080"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let upgrade = upgrade_protocol(&headers);
        assert_eq!(upgrade.as_ref().unwrap(), "websocket");
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let out = upstream_headers(&headers, upgrade, peer, "App.example:8080", "http", &[]);
        assert_eq!(out[HOST], "App.example:8080");
        assert_eq!(out[CONNECTION], "upgrade");
        assert_eq!(out[UPGRADE], "websocket");
        assert_eq!(out["x-forwarded-for"], "127.0.0.1");
        assert_eq!(out["x-real-ip"], "127.0.0.1");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-host"], "App.example:8080");
    }

    fn spoofed() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        headers.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("bank.example"));
        headers.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        headers.insert("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        headers
    }

    #[test]
    fn forwarding_headers_from_clients_are_replaced() {
        let peer: SocketAddr = "[::ffff:203.0.113.9]:4000".parse().unwrap();
        let out = upstream_headers(&spoofed(), None, peer, "shop.example", "https", &[]);
        assert_eq!(out.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), ["203.0.113.9"]);
        assert_eq!(out["x-real-ip"], "203.0.113.9");
        // The scheme is the one the client used to reach the ingress, not what it claimed.
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["x-forwarded-host"], "shop.example");
        assert!(!out.contains_key("forwarded"));
    }

    #[test]
    fn forwarding_headers_from_trusted_proxies_are_kept_and_extended() {
        let proxies: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "192.0.2.7/32".parse().unwrap()];
        assert!(is_trusted(&proxies, "10.1.2.3".parse().unwrap()));
        assert!(is_trusted(&proxies, "::ffff:192.0.2.7".parse().unwrap()));
        assert!(!is_trusted(&proxies, "192.0.2.8".parse().unwrap()));
        assert!(!is_trusted(&[], "127.0.0.1".parse().unwrap()));
        let peer: SocketAddr = "10.1.2.3:4000".parse().unwrap();
        let out = upstream_headers(&spoofed(), None, peer, "shop.example", "http", &proxies);
        assert_eq!(out["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 10.1.2.3");
        assert_eq!(out["x-real-ip"], "1.2.3.4");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["x-forwarded-host"], "bank.example");
        assert_eq!(out["forwarded"], "for=1.2.3.4");
        // Without X-Real-IP, the client is the last address no trusted proxy added.
        let mut chain = HeaderMap::new();
        chain.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1, 203.0.113.5, 10.9.9.9"));
        let out = upstream_headers(&chain, None, peer, "shop.example", "http", &proxies);
        assert_eq!(out["x-forwarded-for"], "198.51.100.1, 203.0.113.5, 10.9.9.9, 10.1.2.3");
        assert_eq!(out["x-real-ip"], "203.0.113.5");
        // A trusted proxy that sends none of them gets the ingress's own.
        let out = upstream_headers(&HeaderMap::new(), None, peer, "shop.example", "http", &proxies);
        assert_eq!(out["x-forwarded-for"], "10.1.2.3");
        assert_eq!(out["x-real-ip"], "10.1.2.3");
    }

    #[test]
    fn plain_requests_are_not_upgrades() {
        let mut headers = HeaderMap::new();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(upgrade_protocol(&headers).is_none());
    }
}

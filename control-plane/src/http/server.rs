//! The control plane's accept loop. Hand-rolled on hyper rather than `axum::serve` because that
//! sets no timer, so nothing bounds how long a client may take to send a request head: here a
//! connection that has not sent a complete head within [`HEADER_READ_TIMEOUT`] is closed.
//! Shutdown is ordered: stop accepting, let requests in flight finish for [`DRAIN_TIMEOUT`]
//! (long polls included), then close what is left.
//!
//! The agent listener ([`serve_tls`]; also the API's under `--api-tls`, which asks for no client
//! certificate) is the same loop behind rustls: the handshake checks a
//! client certificate against the CA (a client may present none, for joining), and every
//! request on the connection carries the certificate's sha256 as a [`PeerCertificate`], which
//! `auth::require_agent` looks up in the store on each request, so a removed node's open
//! connection stops working at once.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A request head (request line and headers) must arrive within this long, also between the
/// requests of a kept-alive connection. The CLI and agents send theirs at once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may still run once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The sha256 (hex) of the client certificate the connection presented, verified against the
/// CA during the handshake.
#[derive(Debug, Clone)]
pub struct PeerCertificate(pub String);

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let stop = shutdown.clone();
    accept_loop(listener, shutdown, move |stream, peer| {
        connection(stream, with_peer(&router, peer), stop.clone())
    })
    .await
}

/// Serves `router` over TLS with `config` (the agent listener), like [`serve`].
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let stop = shutdown.clone();
    accept_loop(listener, shutdown, move |stream, peer| {
        tls_connection(stream, acceptor.clone(), with_peer(&router, peer), stop.clone())
    })
    .await
}

async fn tls_connection(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    shutdown: CancellationToken,
) {
    let peer = stream.peer_addr().ok();
    // The handshake is bounded like a request head.
    let tls = match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(peer = ?peer, error = %e, "TLS handshake refused");
            return;
        }
        Err(_) => return,
    };
    let cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| crate::ca::fingerprint(c));
    let router = match cert {
        Some(fp) => router.layer(axum::Extension(PeerCertificate(fp))),
        None => router,
    };
    connection(tls, router, shutdown).await
}

/// The router with the client's address for its handlers (the audit log, sign-in limits).
fn with_peer(router: &Router, peer: SocketAddr) -> Router {
    router.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)))
}

async fn accept_loop<F, Fut>(listener: TcpListener, shutdown: CancellationToken, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(handle(stream, peer));
                }
                Err(e) => {
                    // Usually out of file descriptors; pausing keeps the loop from spinning.
                    tracing::warn!(error = %e, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set stays as large as what is open.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while conns.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "requests still running after the drain time; closing them"
        );
        conns.shutdown().await;
    }
}

async fn connection<I>(stream: I, router: Router, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
        // `paas run`'s sessions (`http::attach`) continue on the upgraded connection.
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            // Finishes the request in flight, if any, then closes instead of keeping alive.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "API connection ended with an error");
    }
}

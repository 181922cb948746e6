//! The control plane's accept loop. Hand-rolled on hyper rather than `axum::serve` because that
//! sets no timer, so nothing bounds how long a client may take to send a request head: here a
//! connection that has not sent a complete head within [`HEADER_READ_TIMEOUT`] is closed.
//! Shutdown is ordered: stop accepting, let requests in flight finish for [`DRAIN_TIMEOUT`]
//! (long polls included), then close what is left.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A request head (request line and headers) must arrive within this long, also between the
/// requests of a kept-alive connection. The CLI and agents send theirs at once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may still run once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Handlers read the client's address for the audit log and sign-in limits.
                    let router = router.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer)));
                    conns.spawn(connection(stream, router, shutdown.clone()));
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

async fn connection(stream: TcpStream, router: Router, shutdown: CancellationToken) {
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router));
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

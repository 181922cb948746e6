//! Listening sockets a supervisor hands over (systemd socket activation: `LISTEN_FDS`, through
//! the listenfd crate): one whose address is what paas would bind is used instead of binding,
//! so across a restart or upgrade the socket stays open and new connections wait in its
//! backlog for the next process instead of being refused.

use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

/// The inherited listeners not taken yet; `None` until first asked.
static INHERITED: Mutex<Option<Vec<TcpListener>>> = Mutex::new(None);

/// The inherited listener for `addr`, if the supervisor passed one: the same port, and the
/// same address or both unspecified (systemd's `ListenStream=80` binds `[::]:80`, which
/// serves `0.0.0.0:80` too).
pub fn take(addr: SocketAddr) -> anyhow::Result<Option<TcpListener>> {
    let mut inherited = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
    let listeners = inherited.get_or_insert_with(from_env);
    let matches = |l: &TcpListener| {
        l.local_addr().is_ok_and(|have| {
            have.port() == addr.port()
                && (have.ip() == addr.ip() || (have.ip().is_unspecified() && addr.ip().is_unspecified()))
        })
    };
    let Some(at) = listeners.iter().position(matches) else { return Ok(None) };
    let listener = listeners.swap_remove(at);
    // Inherited descriptors are open across exec: children (git, docker) must not keep the
    // port open after paas exits.
    rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::CLOEXEC)?;
    listener.set_nonblocking(true)?;
    tracing::info!(%addr, "listening on the socket the supervisor passed (socket activation)");
    Ok(Some(listener))
}

/// Warns about inherited sockets nothing took (a unit listening on an address paas was not
/// told to serve).
pub fn warn_unused() {
    let inherited = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
    for l in inherited.iter().flatten() {
        if let Ok(addr) = l.local_addr() {
            tracing::warn!(%addr, "a socket passed by the supervisor matches no address paas serves; it is left unused");
        }
    }
}

fn from_env() -> Vec<TcpListener> {
    let mut fds = listenfd::ListenFd::from_env();
    let listeners = (0..fds.len())
        .filter_map(|i| match fds.take_tcp_listener(i) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(fd = i + 3, error = %e, "a socket passed by the supervisor is not a TCP listener; it is left unused");
                None
            }
        })
        .collect();
    // Processes paas starts are not the ones the sockets were meant for.
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    listeners
}

//! Health probes, run by the agent from outside the container (the image needs no curl): TCP
//! connect, HTTP GET with an expected status, or a command run inside the container.

use crate::docker::DockerClient;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use protocol::manifest::{HealthCheck, Probe};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::net::TcpStream;

/// One probe of a container at `addr` (its address on the Docker network and process port).
/// `Err` says why it failed, for the log tail shown when a deploy fails.
pub async fn probe(docker: &DockerClient, name: &str, addr: &str, check: &HealthCheck) -> Result<(), String> {
    let timeout = Duration::from_millis(check.timeout_ms);
    let run = async {
        match &check.probe {
            Probe::Tcp => {
                TcpStream::connect(addr).await.map(drop).map_err(|e| format!("connect to {addr}: {e}"))
            }
            Probe::Http { path, expect_status } => http_status(addr, path).await.and_then(|status| {
                let ok = match expect_status {
                    Some(want) => status == *want,
                    None => (200..400).contains(&status),
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!("GET {path} answered {status}"))
                }
            }),
            Probe::Command { command } => match docker.exec(name, command).await {
                Ok(0) => Ok(()),
                Ok(code) => Err(format!("health command exited with {code}")),
                Err(e) => Err(format!("health command could not run: {e:#}")),
            },
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(format!("health check timed out after {}ms", check.timeout_ms)),
    }
}

/// The status code of `GET path`; the body is never read.
async fn http_status(addr: &str, path: &str) -> Result<u16, String> {
    type Probes = Client<HttpConnector, Empty<Bytes>>;
    // No idle connections are kept: every probe connects anew, as a user's first request would.
    static CLIENT: OnceLock<Probes> = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(HttpConnector::new())
    });
    let req = http::Request::get(format!("http://{addr}{path}"))
        .header(http::header::USER_AGENT, "paas-health")
        .body(Empty::new())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let resp = client.request(req).await.map_err(|e| match std::error::Error::source(&e) {
        Some(cause) if e.is_connect() => format!("connect to {addr}: {cause}"),
        _ => format!("GET {path} got no HTTP answer: {e}"),
    })?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn serve_once(status: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
        });
        addr
    }

    #[tokio::test]
    async fn http_status_reads_the_status_line() {
        assert_eq!(http_status(&serve_once("204 No Content").await, "/healthz").await, Ok(204));
        assert_eq!(http_status(&serve_once("503 Service Unavailable").await, "/").await, Ok(503));
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().to_string();
        assert!(http_status(&dead, "/").await.unwrap_err().starts_with(&format!("connect to {dead}: ")));
    }
}

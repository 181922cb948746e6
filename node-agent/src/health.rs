//! Health probes, run by the agent from outside the container (the image needs no curl): TCP
//! connect, HTTP GET with an expected status, or a command run inside the container.

use crate::docker::DockerClient;
use protocol::manifest::{HealthCheck, Probe};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// The status code of `GET path`; reads only the status line.
async fn http_status(addr: &str, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: paas-health\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.map_err(|e| format!("sending GET {path}: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        let n =
            stream.read(&mut chunk).await.map_err(|e| format!("reading the answer to GET {path}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {path} got no HTTP answer"))
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(http_status(&dead, "/").await.is_err());
    }
}

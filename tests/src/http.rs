//! A minimal blocking HTTP/1.1 client for tests: one request per connection, any Host header.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Response {
    /// 0 when no HTTP answer came (connection refused or reset).
    pub status: u16,
    pub headers: String,
    pub body: String,
}

pub fn get(addr: &str, host: &str, path: &str) -> Response {
    request(addr, "GET", host, path, &[], "")
}

pub fn request(
    addr: &str,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let failed = |e: std::io::Error| Response { status: 0, headers: String::new(), body: e.to_string() };
    let mut stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    if let Err(e) = stream.write_all(req.as_bytes()) {
        return failed(e);
    }
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        if raw.is_empty() {
            return failed(e);
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response { status, headers: head.to_string(), body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

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
    /// The body as sent (binary bodies, e.g. objects in S3).
    pub body_bytes: Vec<u8>,
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
    request_bytes(addr, method, host, path, headers, body.as_bytes())
}

pub fn request_bytes(
    addr: &str,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let failed = |e: std::io::Error| Response {
        status: 0,
        headers: String::new(),
        body: e.to_string(),
        body_bytes: Vec::new(),
    };
    let mut stream = match TcpStream::connect(addr) {
        Ok(s) => s,
        Err(e) => return failed(e),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    if let Err(e) = stream.write_all(&bytes) {
        return failed(e);
    }
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        if raw.is_empty() {
            return failed(e);
        }
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(i) => (String::from_utf8_lossy(&raw[..i]).into_owned(), &raw[i + 4..]),
        None => (String::from_utf8_lossy(&raw).into_owned(), &raw[raw.len()..]),
    };
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body_bytes = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Response { status, headers: head, body: String::from_utf8_lossy(&body_bytes).into_owned(), body_bytes }
}

fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = s.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&s[..i]).trim(), 16).unwrap_or(0);
        let rest = &s[i + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

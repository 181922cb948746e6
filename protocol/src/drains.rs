//! Wire types of log drains (`/api/v1/apps/{app}/drains`), and the one check and masking of
//! drain URLs the CLI and the control plane share. A drain URL may hold credentials (user and
//! password, a token in the path or query): it is never echoed in an error, and it is shown
//! masked.

use serde::{Deserialize, Serialize};
use url::Url;

/// Longest drain URL accepted.
pub const MAX_URL: usize = 2048;

crate::string_enum! {
    /// How a drain is doing: nothing sent or tried yet, its last attempt succeeded, or failed.
    pub enum DrainState {
        Pending = "pending",
        Ok = "ok",
        Failing = "failing",
    }
}

crate::string_enum! {
    /// Where a drain sends lines and how.
    pub enum DrainKind {
        /// RFC 5424 messages with octet-counting framing (RFC 6587) over TCP.
        SyslogTcp = "syslog+tcp",
        /// The same over TLS.
        SyslogTls = "syslog+tls",
        /// Batches of JSON lines, POSTed.
        Https = "https",
    }
}

/// `POST /api/v1/apps/{app}/drains`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddDrain {
    pub url: String,
    /// One environment's lines only; every environment's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// `DELETE /api/v1/apps/{app}/drains` by URL (in the body, never in the path or the audit log).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveDrain {
    pub url: String,
}

/// A drain as users see it: its URL masked, with its delivery counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Drain {
    pub id: String,
    pub app: String,
    /// `None`: every environment of the app.
    pub env: Option<String>,
    /// Masked: credentials and token-like path segments and query values are `****`.
    pub url: String,
    pub created_at: String,
    pub created_by: String,
    pub state: DrainState,
    /// Lines sent and acknowledged (HTTPS) or written (syslog).
    pub delivered: u64,
    /// Lines skipped because the drain was too far behind, or removed by retention before it
    /// could send them.
    pub dropped: u64,
    /// Lines stored and not sent yet.
    pub backlog: u64,
    /// Why the last attempt failed (one sentence), while the drain is failing.
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_success_at: Option<String>,
}

/// A checked drain URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainTarget {
    pub kind: DrainKind,
    /// A name or an address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub url: Url,
}

/// Checks a drain URL; the error is one sentence that does not repeat the URL (it may hold a
/// secret).
pub fn parse_drain_url(raw: &str) -> Result<DrainTarget, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("give the drain's URL, e.g. syslog+tls://logs.example.com:6514".into());
    }
    if raw.len() > MAX_URL {
        return Err(format!("the drain URL is longer than {MAX_URL} characters"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the drain URL contains spaces or control characters".into());
    }
    let url = Url::parse(raw).map_err(|e| format!("the drain URL is not a valid URL ({e})"))?;
    let kind = match url.scheme() {
        "syslog+tcp" => DrainKind::SyslogTcp,
        "syslog+tls" => DrainKind::SyslogTls,
        "https" => DrainKind::Https,
        "http" => return Err(
            "a drain over plain http:// would send logs (and any token in the URL) unencrypted: use https://"
                .into(),
        ),
        "syslog" | "tcp" | "tls" => {
            return Err(
                "say how to reach the syslog server: syslog+tcp:// or syslog+tls:// (recommended)".into()
            )
        }
        "syslog+udp" | "udp" => {
            return Err(
                "syslog over UDP loses lines without a trace: use syslog+tcp:// or syslog+tls://".into()
            )
        }
        other => {
            return Err(format!(
                "a drain URL starts with syslog+tcp://, syslog+tls:// or https://, not {}://",
                other.chars().take(32).collect::<String>()
            ))
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err("the drain URL has no host".into()),
    };
    if url.fragment().is_some() {
        return Err("a drain URL has no #fragment".into());
    }
    let port = match kind {
        DrainKind::Https => url.port_or_known_default().unwrap_or(443),
        DrainKind::SyslogTcp | DrainKind::SyslogTls => {
            let Some(port) = url.port() else {
                return Err(format!(
                    "a syslog drain URL needs a port, e.g. {}://logs.example.com:{}",
                    kind,
                    if kind == DrainKind::SyslogTls { 6514 } else { 514 }
                ));
            };
            if !url.username().is_empty() || url.password().is_some() {
                return Err(
                    "a syslog drain URL takes no user or password: syslog has no way to send them".into()
                );
            }
            if !matches!(url.path(), "" | "/") || url.query().is_some() {
                return Err("a syslog drain URL is only a host and a port, with no path or query".into());
            }
            port
        }
    };
    if port == 0 {
        return Err("the drain URL's port is 0".into());
    }
    Ok(DrainTarget { kind, host, port, url })
}

/// The URL with its credentials masked: user and password, query values and path segments that
/// look like tokens become `****`. Unreadable input masks whole.
pub fn mask_drain_url(raw: &str) -> String {
    let Ok(url) = Url::parse(raw.trim()) else {
        return "****".into();
    };
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str("****@");
    }
    out.push_str(url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    let path = url.path();
    if !matches!(path, "" | "/") {
        let segments: Vec<&str> = path.split('/').map(|s| if looks_secret(s) { "****" } else { s }).collect();
        out.push_str(&segments.join("/"));
    } else if url.query().is_some() {
        out.push('/');
    }
    if url.query().is_some() {
        let pairs: Vec<String> = url.query_pairs().map(|(k, _)| format!("{k}=****")).collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// A path segment that may be a token: long, or mixing letters and digits (ids, keys).
fn looks_secret(segment: &str) -> bool {
    let letters = segment.chars().any(|c| c.is_ascii_alphabetic());
    let digits = segment.chars().any(|c| c.is_ascii_digit());
    segment.len() >= 16 || (segment.len() >= 8 && letters && digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls_parse_with_their_port() {
        let t = parse_drain_url("syslog+tls://logs.example.com:6514").unwrap();
        assert_eq!((t.kind, t.host.as_str(), t.port), (DrainKind::SyslogTls, "logs.example.com", 6514));
        let t = parse_drain_url("syslog+tcp://127.0.0.1:514/").unwrap();
        assert_eq!((t.kind, t.host.as_str(), t.port), (DrainKind::SyslogTcp, "127.0.0.1", 514));
        let t = parse_drain_url("syslog+tcp://[::1]:1514").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 1514));
        let t = parse_drain_url("https://user:pw@collector.example.com/v1/logs?token=abc").unwrap();
        assert_eq!((t.kind, t.port), (DrainKind::Https, 443));
        assert_eq!(parse_drain_url(" https://h:8443/x ").unwrap().port, 8443);
    }

    #[test]
    fn bad_urls_get_a_sentence_that_does_not_repeat_them() {
        for (url, needle) in [
            ("", "give the drain's URL"),
            ("http://user:hunter2@h/x", "use https://"),
            ("ftp://h:21", "not ftp://"),
            ("syslog://h:514", "syslog+tcp:// or syslog+tls://"),
            ("syslog+udp://h:514", "UDP"),
            ("syslog+tcp://h", "needs a port"),
            ("syslog+tls://h", "6514"),
            ("syslog+tcp://hunter2@h:514", "no user or password"),
            ("syslog+tcp://h:514/hunter2", "no path"),
            ("https://h/x#hunter2", "fragment"),
            ("https://hunter2 x", "spaces"),
            ("not a url hunter2", "spaces"),
            ("hunter2", "not a valid URL"),
            ("https://", "not a valid URL"),
        ] {
            let e = parse_drain_url(url).unwrap_err();
            assert!(e.contains(needle), "{url:?}: {e}");
            assert!(!e.contains("hunter2"), "{url:?} leaks: {e}");
        }
        assert!(parse_drain_url(&format!("https://h/{}", "a".repeat(MAX_URL))).is_err());
    }

    #[test]
    fn masking_hides_credentials_and_tokens_but_keeps_the_place() {
        assert_eq!(
            mask_drain_url("syslog+tls://logs.example.com:6514"),
            "syslog+tls://logs.example.com:6514"
        );
        assert_eq!(
            mask_drain_url("https://user:hunter2@collector.example.com/v1/logs?token=s3cret&x=1"),
            "https://****@collector.example.com/v1/logs?token=****&x=****"
        );
        assert_eq!(
            mask_drain_url("https://h.example.com:8443/ingest/0f8e2a9c1b7d4e6f9a0b/logs"),
            "https://h.example.com:8443/ingest/****/logs"
        );
        assert_eq!(mask_drain_url("https://h.example.com/?k=v"), "https://h.example.com/?k=****");
        assert_eq!(mask_drain_url("garbage hunter2"), "****");
    }
}

//! Wire types of custom domains (`/api/v1/apps/{app}/domains`) and the one check of a domain
//! name the CLI and the control plane share.

use serde::{Deserialize, Serialize};

crate::string_enum! {
    /// Where a domain's certificate comes from.
    pub enum CertSource {
        /// Made by the platform's local CA (trusted only where users installed it).
        Local = "local",
        /// Uploaded with `paas domains add --cert --key`.
        Uploaded = "uploaded",
        /// Obtained from the ACME server the platform was started with.
        Acme = "acme",
    }
}

/// `POST /api/v1/apps/{app}/domains`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddDomain {
    pub domain: String,
    /// The environment it serves; production when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// PEM certificate (with its chain) and key, uploaded together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
}

/// A domain as users see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Domain {
    pub domain: String,
    pub app: String,
    pub env: String,
    pub tls: CertSource,
    /// When its certificate ends (RFC 3339); absent while it has none yet.
    pub cert_expires: Option<String>,
    /// Where the certificate served now comes from: an ACME domain is served with the local
    /// CA's until its own arrives.
    pub cert_source: Option<CertSource>,
    /// Why the last ACME attempt failed (it is retried with backoff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_error: Option<String>,
    /// The DNS record the domain needs to reach the platform, as a sentence.
    pub dns: String,
    pub created_at: String,
    pub created_by: String,
    /// The domain existed: the request replaced its certificate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replaced_certificate: bool,
}

/// Longest domain name (RFC 1035).
pub const MAX_DOMAIN: usize = 253;

/// A domain name as stored: lowercase, without a trailing dot; or why it is not one (a host
/// name of at least two labels of letters, digits and inner hyphens, no wildcard, no address).
pub fn parse_domain(raw: &str) -> Result<String, String> {
    let d = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| Err(format!("{raw:?} is not a domain name: {why}"));
    if d.is_empty() || d.len() > MAX_DOMAIN {
        return bad("give a name like www.example.com");
    }
    if d.starts_with("*.") {
        return bad("wildcard domains are not supported; add each name");
    }
    if d.parse::<std::net::IpAddr>().is_ok() {
        return bad("that is an IP address");
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return bad("give a name like www.example.com");
    }
    for label in &labels {
        let ok_chars = label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if label.is_empty() || label.len() > 63 || !ok_chars || label.starts_with('-') || label.ends_with('-')
        {
            return bad("each label is 1 to 63 letters, digits or inner hyphens");
        }
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return bad("its last label is a number");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::parse_domain;

    #[test]
    fn domains_are_checked_and_normalised() {
        assert_eq!(parse_domain("WWW.Example.COM.").unwrap(), "www.example.com");
        assert_eq!(parse_domain("a-b.c1.io").unwrap(), "a-b.c1.io");
        for bad in [
            "",
            "localhost",
            "*.example.com",
            "10.0.0.1",
            "-a.com",
            "a-.com",
            "a..com",
            "a.com/x",
            "a b.com",
            "1.2.3",
        ] {
            assert!(parse_domain(bad).is_err(), "{bad}");
        }
        assert!(parse_domain(&format!("{}.com", "a".repeat(64))).is_err());
        let err = parse_domain("a;rm -rf /.com").unwrap_err();
        assert!(err.contains("is not a domain name"), "{err}");
    }
}

//! The optional external registry (`paas server --registry`): release images travel between
//! nodes through it instead of through the control plane's kept tarballs. A node that built an
//! image pushes it as `<repository>:<hex of the image id>`; a node that must run it pulls that
//! tag and checks that its engine then has exactly that image id.
//!
//! Own code for the name check: it follows the grammar of Docker's reference package
//! (distribution/reference), which no Rust crate we already use covers.

use serde::{Deserialize, Serialize};

/// Where images go, and the login for it (none for a registry on a private network that needs
/// none).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// A repository without tag, e.g. `registry.example.com:5000/paas`.
    pub repository: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for Registry {
    // The password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("repository", &self.repository)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Registry {
    /// The tag image `id` (`sha256:<hex>`) has in the registry; `None` for anything else.
    pub fn tag_for(id: &str) -> Option<&str> {
        id.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// `<repository>:<hex>` for image `id`.
    pub fn reference(&self, id: &str) -> Option<String> {
        Some(format!("{}:{}", self.repository, Self::tag_for(id)?))
    }

    /// The registry's host (and port), as a login names it: the repository's first part when
    /// it is a host name, Docker Hub otherwise.
    pub fn server(&self) -> &str {
        match self.repository.split_once('/') {
            Some((first, _)) if is_host(first) => first,
            _ => "docker.io",
        }
    }
}

/// Whether a reference's first part names a registry host rather than a path (Docker's rule).
fn is_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// Checks a `--registry` value: a repository name as Docker spells it, without tag or digest.
/// Returns it as given; the error says what is wrong in one sentence.
pub fn parse_repository(raw: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "{raw:?} is not a registry repository ({why}); give one such as registry.example.com:5000/paas"
        ))
    };
    if raw.is_empty() || raw.len() > 255 {
        return bad("it must be 1 to 255 characters");
    }
    if raw.contains('@') {
        return bad("it must not name a digest");
    }
    let mut parts: Vec<&str> = raw.split('/').collect();
    if parts.len() > 1 && is_host(parts[0]) {
        let host = parts.remove(0);
        let (name, port) = match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        };
        if let Some(port) = port {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return bad("the port after the host must be a number from 1 to 65535");
            }
        }
        let label = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !name.split('.').all(label) {
            return bad("the host must be a DNS name or an IPv4 address");
        }
    }
    for part in &parts {
        if !path_component(part) {
            if part.contains(':') {
                return bad("it must not name a tag: the platform tags each image by its id");
            }
            return bad("each part of the path must be lower-case letters and digits, joined by '.', '_', '__' or dashes");
        }
    }
    Ok(raw.to_string())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component(part: &str) -> bool {
    let b = part.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_follow_dockers_grammar() {
        for good in [
            "127.0.0.1:5000/paas",
            "registry.example.com/team/paas",
            "localhost/p",
            "user/paas",
            "paas",
            "a__b/c-d.e",
        ] {
            assert_eq!(parse_repository(good).as_deref(), Ok(good), "{good}");
        }
        let cases = [
            ("reg.example.com/paas:v1", "must not name a tag"),
            ("reg.example.com/paas@sha256:00", "digest"),
            ("reg.example.com:99999/paas", "port"),
            ("reg.example.com/Paas", "lower-case"),
            ("reg.example.com/paas;rm -rf", "lower-case"),
            ("-bad.example.com/p", "DNS name"),
            ("", "1 to 255"),
            ("reg.example.com//paas", "lower-case"),
        ];
        for (bad, why) in cases {
            let e = parse_repository(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn images_are_tagged_by_their_id_and_logins_name_the_host() {
        let r = Registry { repository: "127.0.0.1:5000/paas".into(), ..Default::default() };
        let id = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(r.reference(&id), Some(format!("127.0.0.1:5000/paas:{}", "ab".repeat(32))));
        assert_eq!(r.reference("sha256:../x"), None);
        assert_eq!(r.server(), "127.0.0.1:5000");
        assert_eq!(Registry { repository: "user/paas".into(), ..r.clone() }.server(), "docker.io");
        let hidden = Registry { password: Some("s3cret".into()), ..r };
        assert!(!format!("{hidden:?}").contains("s3cret"));
    }
}

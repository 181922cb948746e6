//! Validation of user-chosen names (apps, environments): they become DNS labels and parts of
//! container names, so they are checked once, here, with messages a user can act on.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {name:?}: {reason}")]
pub struct NameError {
    pub kind: &'static str,
    pub name: String,
    pub reason: &'static str,
}

/// Longest app or environment name: `app-env` must still fit in one 63-byte DNS label.
pub const MAX_NAME_LEN: usize = 30;

fn check(kind: &'static str, name: &str) -> Result<(), NameError> {
    let err = |reason| NameError { kind, name: name.to_string(), reason };
    if name.is_empty() {
        return Err(err("it must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(err("it must be at most 30 characters long"));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(err("use only lowercase letters, digits and '-'"));
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err(err("it must start with a lowercase letter"));
    }
    if name.ends_with('-') {
        return Err(err("it must not end with '-'"));
    }
    if name.contains("--") {
        return Err(err("it must not contain '--'"));
    }
    Ok(())
}

macro_rules! name_type {
    ($ty:ident, $kind:literal) => {
        #[doc = concat!("A validated ", $kind, " name (a DNS label).")]
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            pub fn new(name: impl Into<String>) -> Result<Self, NameError> {
                let name = name.into();
                check($kind, &name)?;
                Ok(Self(name))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
        impl From<$ty> for String {
            fn from(n: $ty) -> String {
                n.0
            }
        }
        impl std::str::FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(AppName, "app");
name_type!(EnvName, "environment");

/// Process names (`web`, `worker`) become part of container names: lowercase letters, digits
/// and '-', starting with a letter, at most 20 characters.
pub fn check_process(name: &str) -> Result<(), NameError> {
    let err = |reason| NameError { kind: "process", name: name.to_string(), reason };
    if name.is_empty() || name.len() > 20 {
        return Err(err("it must be 1 to 20 characters long"));
    }
    if !name.as_bytes()[0].is_ascii_lowercase()
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err("use lowercase letters, digits and '-', starting with a letter"));
    }
    // `--` separates names in Docker object names (see `DockerNames`).
    if name.contains("--") || name.ends_with('-') {
        return Err(err("it must not contain '--' or end with '-'"));
    }
    Ok(())
}

/// Config var names: environment variable names (`[A-Za-z_][A-Za-z0-9_]*`), not the ones the
/// platform sets itself.
pub fn check_config_key(key: &str) -> Result<(), NameError> {
    let err = |reason| NameError { kind: "config var", name: key.to_string(), reason };
    let mut bytes = key.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    if !first_ok || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || key.len() > 200 {
        return Err(err("use letters, digits and '_', not starting with a digit"));
    }
    if key == "PORT" || key.starts_with("PAAS_") {
        return Err(err("PORT and PAAS_* are set by the platform"));
    }
    Ok(())
}

/// Node names become Docker label values and URL path segments: same rules as apps, but up
/// to 63 characters.
pub fn check_node(name: &str) -> Result<(), NameError> {
    let err = |reason| NameError { kind: "node", name: name.to_string(), reason };
    if name.is_empty() || name.len() > 63 {
        return Err(err("it must be 1 to 63 characters long"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_') {
        return Err(err("use only letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "hello", "my-app2", "a1-b2-c3"] {
            assert!(AppName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_names_with_a_reason() {
        for (bad, why) in [
            ("", "empty"),
            ("Hello", "lowercase"),
            ("1app", "start with"),
            ("app-", "end with"),
            ("a--b", "--"),
            ("app_x", "lowercase"),
            ("abcdefghijabcdefghijabcdefghijx", "30"),
        ] {
            let err = AppName::new(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<EnvName>("\"Bad Name\"").is_err());
        assert_eq!(serde_json::from_str::<EnvName>("\"qa\"").unwrap().as_str(), "qa");
    }
}

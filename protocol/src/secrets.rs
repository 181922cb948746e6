//! Which config values are secrets: masked in `paas config list` (unless revealed) and in the
//! output the platform writes itself (deploy errors, job and release output). A value is a
//! secret when its key is named like one (`*KEY*`, `*SECRET*`, `*TOKEN*`, `*PASSWORD*`...) or
//! it is a URL carrying a password (`DATABASE_URL`); and only when it is long enough that
//! masking it cannot garble ordinary words (`USER=admin` must not turn `admin.0001` into
//! `****.0001`).

use std::collections::BTreeMap;

/// Shorter values are never masked.
pub const MIN_SECRET_LEN: usize = 6;

/// Parts of key names that mark a secret (matched inside each `_`-separated part, so
/// `APIKEY` and `DB_PASSWD` count).
const SECRET_WORDS: [&str; 11] =
    ["KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "PWD", "CREDENTIAL", "PRIVATE", "AUTH", "SALT", "DSN"];

/// Whether the key is named like a secret.
pub fn secret_key(key: &str) -> bool {
    let upper = key.to_ascii_uppercase();
    upper
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|part| SECRET_WORDS.iter().any(|w| part.contains(w)) || part == "PASS")
}

/// The password of a URL that carries one (`scheme://user:password@host/...`).
fn url_password(value: &str) -> Option<&str> {
    let (_, rest) = value.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// Whether `value` of `key` is masked.
pub fn is_secret(key: &str, value: &str) -> bool {
    value.len() >= MIN_SECRET_LEN && (secret_key(key) || url_password(value).is_some())
}

/// The texts to mask in output, longest first (so a value holding another is masked whole):
/// each secret value, and the password inside a URL on its own.
pub fn secret_texts(config: &BTreeMap<String, String>) -> Vec<&str> {
    let mut texts: Vec<&str> = Vec::new();
    for (key, value) in config {
        if is_secret(key, value) {
            texts.push(value);
        }
        if let Some(password) = url_password(value).filter(|p| p.len() >= MIN_SECRET_LEN) {
            texts.push(password);
        }
    }
    texts.sort_by_key(|t| std::cmp::Reverse(t.len()));
    texts.dedup();
    texts
}

/// `text` with every secret of `config` replaced by `****`.
pub fn mask(text: &str, config: &BTreeMap<String, String>) -> String {
    mask_texts(text, &secret_texts(config)).into_owned()
}

/// `text` with each of `secrets` (from [`secret_texts`], computed once for many lines)
/// replaced by `****`; borrowed as it was when it holds none (most lines).
pub fn mask_texts<'t>(text: &'t str, secrets: &[&str]) -> std::borrow::Cow<'t, str> {
    let mut out = std::borrow::Cow::Borrowed(text);
    for secret in secrets {
        if out.contains(secret) {
            out = std::borrow::Cow::Owned(out.replace(secret, "****"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn secrets_are_told_by_key_name_or_a_password_in_a_url() {
        for key in [
            "API_KEY",
            "apikey",
            "SECRET_KEY_BASE",
            "GITHUB_TOKEN",
            "DB_PASSWORD",
            "SMTP_PASS",
            "AUTH0_X",
            "SENTRY_DSN",
        ] {
            assert!(secret_key(key), "{key}");
        }
        for key in ["USER", "PORT", "DEBUG", "GREETING", "DATABASE_HOST", "PASSENGER_COUNT"] {
            assert!(!secret_key(key), "{key}");
        }
        assert!(is_secret("REDIS_URL", "redis://:hunter22@cache:6379/0"));
        assert!(is_secret("DATABASE_URL", "postgres://app:s3cretpw@db/app"));
        assert!(!is_secret("HOMEPAGE", "https://example.com/a@b"));
        assert!(!is_secret("API_KEY", "abc12"), "too short to mask safely");
    }

    #[test]
    fn masks_secrets_and_nothing_else() {
        let c = config(&[
            ("USER", "admin"),
            ("API_TOKEN", "hunter2-very-secret"),
            ("DATABASE_URL", "postgres://app:pw0rd123@db:5432/app"),
            ("GREETING", "hello world"),
        ]);
        assert_eq!(
            mask(
                "Applying admin.0001_initial with hunter2-very-secret to postgres://app:pw0rd123@db:5432/app",
                &c
            ),
            "Applying admin.0001_initial with **** to ****"
        );
        assert_eq!(mask("connect app:pw0rd123@db", &c), "connect app:****@db");
        assert_eq!(mask("hello world", &c), "hello world");
    }
}

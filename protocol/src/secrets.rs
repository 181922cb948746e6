//! Which config values are secrets: masked in `paas config list` (unless revealed) and in the
//! output the platform writes itself (deploy errors, job and release output). A value is a
//! secret when its key is named like one (`*KEY*`, `*SECRET*`, `*TOKEN*`, `*PASSWORD*`...) or
//! it is a URL carrying a password (`DATABASE_URL`); and only when it is long enough that
//! masking it cannot garble ordinary words (`USER=admin` must not turn `admin.0001` into
//! `****.0001`). Keys the user marked secret (`paas config set --secret`) count whatever
//! their name: the marks travel inside the config itself, under [`MARKED`], so every release
//! snapshot, rollback and agent sees them without a field of their own; the platform keeps
//! that entry out of containers' environments and out of listings.

use std::collections::BTreeMap;

/// Shorter values are never masked.
pub const MIN_SECRET_LEN: usize = 6;

/// Parts of key names that mark a secret (matched inside each `_`-separated part, so
/// `APIKEY` and `DB_PASSWD` count).
const SECRET_WORDS: [&str; 11] =
    ["KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "PWD", "CREDENTIAL", "PRIVATE", "AUTH", "SALT", "DSN"];

/// The config entry that lists the keys marked secret, comma-separated. Users cannot set it
/// (`PAAS_*` is the platform's, `names::check_config_key`).
pub const MARKED: &str = "PAAS_SECRET_KEYS";

/// The keys of `config` marked secret.
pub fn marked(config: &BTreeMap<String, String>) -> std::collections::BTreeSet<&str> {
    config.get(MARKED).map(|v| v.split(',').filter(|k| !k.is_empty()).collect()).unwrap_or_default()
}

/// `config` with `keys` marked secret (and the marks of keys no longer set dropped).
pub fn mark(config: &mut BTreeMap<String, String>, keys: impl IntoIterator<Item = String>) {
    let mut all: std::collections::BTreeSet<String> =
        marked(config).into_iter().map(str::to_string).collect();
    all.extend(keys);
    all.retain(|k| config.contains_key(k));
    if all.is_empty() {
        config.remove(MARKED);
    } else {
        config.insert(MARKED.to_string(), Vec::from_iter(all).join(","));
    }
}

/// The variables a container's environment gets from `config`: all but the marks.
pub fn app_env(config: &BTreeMap<String, String>) -> impl Iterator<Item = (&String, &String)> {
    config.iter().filter(|(k, _)| k.as_str() != MARKED)
}

/// The names of the variables a container's environment gets from `config`.
pub fn app_keys(config: &BTreeMap<String, String>) -> Vec<String> {
    app_env(config).map(|(k, _)| k.clone()).collect()
}

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

/// Whether `key`'s value is hidden in `config`'s listing: a secret by its name or value, or a
/// key marked secret (whatever its length: the user said so).
pub fn is_hidden(config: &BTreeMap<String, String>, key: &str, value: &str) -> bool {
    is_secret(key, value) || (!value.is_empty() && marked(config).contains(key))
}

/// The texts to mask in output, longest first (so a value holding another is masked whole):
/// each secret value, and the password inside a URL on its own.
pub fn secret_texts(config: &BTreeMap<String, String>) -> Vec<&str> {
    let mut texts: Vec<&str> = Vec::new();
    let marked = marked(config);
    for (key, value) in app_env(config) {
        // Marked values too are masked in output only from the length that cannot garble words.
        if is_secret(key, value) || (marked.contains(key.as_str()) && value.len() >= MIN_SECRET_LEN) {
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

    #[test]
    fn keys_marked_secret_are_hidden_whatever_their_name_and_never_reach_the_app() {
        let mut c = config(&[("PIN", "4321"), ("LICENSE", "lic-0042-xyz"), ("OWNER", "admin")]);
        mark(&mut c, ["PIN".to_string(), "LICENSE".to_string(), "GONE".to_string()]);
        assert_eq!(c[MARKED], "LICENSE,PIN", "keys not set are not marked");
        assert!(is_hidden(&c, "PIN", "4321") && is_hidden(&c, "LICENSE", "lic-0042-xyz"));
        assert!(!is_hidden(&c, "OWNER", "admin"));
        // Short marked values are hidden in listings but not masked in output (they would garble it).
        assert_eq!(
            mask("pin 4321, license lic-0042-xyz, owner admin", &c),
            "pin 4321, license ****, owner admin"
        );
        assert!(app_env(&c).all(|(k, _)| k != MARKED));
        c.remove("LICENSE");
        c.remove("PIN");
        mark(&mut c, []);
        assert!(!c.contains_key(MARKED), "the marks go with the last marked key");
    }
}

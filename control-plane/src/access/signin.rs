//! Signing in with a password: argon2id hashes, the optional second factor (RFC 6238 codes,
//! via totp-rs), the limit on failed attempts per user and per client address, and what a
//! sign-in yields: an API token for the CLI, or a console session (its own random id, which
//! expires and ends at sign-out).

use super::{users, Caller, Via, SESSION_PREFIX};
use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::AuditRecord;
use crate::tokens;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use protocol::access::{CreatedToken, Login, Session, TotpSetup};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// How long a console session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long the token `paas login` makes lasts.
pub const LOGIN_TOKEN_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Failed sign-ins allowed per user within [`THROTTLE_WINDOW`]; per client address, several
/// times that (people behind one NAT share an address, and one of them guessing should not
/// lock the others out at once).
const MAX_FAILURES: usize = 5;
const MAX_FAILURES_PER_ADDR: usize = 4 * MAX_FAILURES;
const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Bound on the addresses and names remembered, so a flood of made-up names cannot grow it.
const THROTTLE_KEYS: usize = 10_000;
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// Longest password accepted (hashing is bounded by it).
pub const MAX_PASSWORD: usize = 1024;

/// Recent sign-in attempts, per user name and per client address, and the few slots password
/// hashing may run in at once.
pub struct Throttle {
    attempts: Mutex<HashMap<String, Vec<Instant>>>,
    /// argon2 takes 19 MiB and tens of milliseconds per hash: a flood of sign-ins queues here
    /// instead of taking the machine's memory.
    hashing: tokio::sync::Semaphore,
}

impl Default for Throttle {
    fn default() -> Self {
        Self { attempts: Mutex::default(), hashing: tokio::sync::Semaphore::new(2) }
    }
}

fn limit(key: &str) -> usize {
    if key.starts_with("addr:") {
        MAX_FAILURES_PER_ADDR
    } else {
        MAX_FAILURES
    }
}

impl Throttle {
    /// Counts an attempt for each of `keys` before it is checked (so attempts made at the same
    /// time count too), or says how many seconds to wait when one of them tried too often.
    fn begin(&self, keys: &[String]) -> std::result::Result<(), u64> {
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let wait = keys
            .iter()
            .filter_map(|k| {
                let recent: Vec<_> = map
                    .get(k)?
                    .iter()
                    .filter(|t| now.duration_since(**t) < THROTTLE_WINDOW)
                    .copied()
                    .collect();
                (recent.len() >= limit(k))
                    .then(|| (THROTTLE_WINDOW - now.duration_since(recent[0])).as_secs().max(1))
            })
            .max();
        if let Some(secs) = wait {
            return Err(secs);
        }
        if map.len() + keys.len() > THROTTLE_KEYS {
            map.retain(|_, times| times.iter().any(|t| now.duration_since(*t) < THROTTLE_WINDOW));
        }
        // Still full: the keys whose last attempt is oldest make room, so new ones are always
        // counted (a flood of made-up names cannot switch counting off).
        while map.len() + keys.len() > THROTTLE_KEYS {
            let oldest = map.iter().min_by_key(|(_, t)| t.last().copied()).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        for k in keys {
            let times = map.entry(k.clone()).or_default();
            times.retain(|t| now.duration_since(*t) < THROTTLE_WINDOW);
            times.push(now);
        }
        Ok(())
    }

    /// A successful attempt: it does not count, and the user's earlier failures are forgotten.
    fn succeeded(&self, keys: &[String]) {
        let mut map = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            if k.starts_with("user:") {
                map.remove(k);
            } else if let Some(times) = map.get_mut(k) {
                times.pop();
            }
        }
    }
}

/// The throttle's key for a client address: IPv6 clients get a /64 each, so one host cannot
/// take a fresh address per guess.
fn addr_key(addr: &str) -> String {
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            format!("addr:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        _ => format!("addr:{addr}"),
    }
}

/// An expiry as the store keeps it: whole seconds, UTC, so strings compare like times.
pub fn timestamp(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).expect("zero nanoseconds is valid");
    t.format(&time::format_description::well_known::Rfc3339).expect("formatting a time cannot fail")
}

/// `d` from now; durations past what a date can hold end in the year 9999.
pub fn after(d: Duration) -> String {
    let max = time::macros::datetime!(9999-12-31 23:59:59 UTC);
    let at = time::Duration::try_from(d).ok().and_then(|d| OffsetDateTime::now_utc().checked_add(d));
    timestamp(at.unwrap_or(max).min(max))
}

pub fn is_past(at: &str) -> bool {
    crate::store::unix_seconds(at).is_none_or(|s| s <= OffsetDateTime::now_utc().unix_timestamp())
}

/// Hashes a password with argon2id (on a blocking thread: it is slow on purpose).
pub async fn hash_password(password: String) -> Result<String> {
    if password.chars().count() < MIN_PASSWORD || password.len() > MAX_PASSWORD {
        return Err(DomainError::Invalid(format!(
            "a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )));
    }
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string())
    })
    .await
    .map_err(anyhow::Error::from)?
    .map_err(|e| DomainError::Internal(anyhow::anyhow!("hashing a password: {e}")))
}

async fn verify_password(hash: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so a wrong name takes as long as a
/// wrong password and names cannot be told apart by timing.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default().hash_password(b"not a password anyone has", &salt).expect("hashing").to_string()
    })
}

fn totp(secret: Vec<u8>, user: &str) -> Result<totp_rs::TOTP> {
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, secret, Some("paas".into()), user.into())
        .map_err(|e| DomainError::Internal(anyhow::anyhow!("a TOTP secret: {e}")))
}

/// Where a sign-in comes from: the request's peer, or, for the platform's own console (which
/// proves it with its key), the console's visitor.
fn client_addr<'a>(state: &AppState, login: &'a Login, peer: &'a str) -> &'a str {
    match (&login.console_key, &login.client_addr) {
        (Some(key), Some(addr)) if tokens::hash(key) == tokens::hash(&state.console_key) => addr,
        _ => peer,
    }
}

/// Checks a user's password (and one-time code), or a token, within the failure limits; on
/// success the user.
async fn check(state: &AppState, login: &Login, peer: &str) -> Result<String> {
    let addr = client_addr(state, login, peer);
    let too_many = |secs: u64| {
        DomainError::TooMany(
            format!("too many failed sign-ins for this user or address; try again in {secs} seconds"),
            secs,
        )
    };
    if let Some(token) = &login.token {
        // A session id is not a sign-in credential: it would make itself a fresh session (or a
        // 90-day token) before it expires, for ever.
        if token.starts_with(SESSION_PREFIX) {
            return Err(DomainError::Unauthenticated(
                "sign in with a user name and password or an API token".into(),
            ));
        }
        let keys = [addr_key(addr)];
        state.signin_throttle.begin(&keys).map_err(too_many)?;
        return match super::authenticate(state, Some(token), addr).await {
            Ok(caller) => {
                state.signin_throttle.succeeded(&keys);
                Ok(caller.user)
            }
            Err(e @ DomainError::Unauthenticated(_)) => {
                let denied = AuditRecord {
                    action: "signin",
                    addr,
                    outcome: "denied",
                    detail: "wrong token",
                    ..Default::default()
                };
                state.store.record_audit(&denied).await?;
                Err(e)
            }
            Err(e) => Err(e),
        };
    }
    // Bounded before anything is counted or stored: a name is a user name or it is wrong.
    if users::check_name(&login.user).is_err() || login.password.len() > MAX_PASSWORD {
        return Err(DomainError::Unauthenticated("the user name or password is wrong".into()));
    }
    let keys = [format!("user:{}", login.user), addr_key(addr)];
    state.signin_throttle.begin(&keys).map_err(too_many)?;
    let user = state.store.user(&login.user).await?;
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let password_ok = {
        let _slot = state.signin_throttle.hashing.acquire().await.map_err(anyhow::Error::from)?;
        verify_password(hash.clone().unwrap_or_else(|| decoy_hash().to_string()), login.password.clone())
            .await
    } && hash.is_some();
    let code_ok = match user.as_ref().and_then(|u| u.totp_secret.as_deref()) {
        None => true,
        Some(sealed) => {
            let secret = state.secrets.open_text(sealed).map_err(DomainError::Internal)?;
            let code = login.code.as_deref().unwrap_or("").trim();
            code.len() <= 10 && totp(secret, &login.user)?.check_current(code).unwrap_or(false)
        }
    };
    let denied = |detail: &'static str| AuditRecord {
        user: &login.user,
        action: "signin",
        addr,
        outcome: "denied",
        detail,
        ..Default::default()
    };
    if !password_ok {
        state.store.record_audit(&denied("wrong user name or password")).await?;
        return Err(DomainError::Unauthenticated("the user name or password is wrong".into()));
    }
    if !code_ok {
        state.store.record_audit(&denied("wrong one-time code")).await?;
        let why = if login.code.is_none() {
            "this user signs in with a one-time code too: pass it with --code (or the form's code field)"
        } else {
            "the one-time code is wrong or too old"
        };
        return Err(DomainError::Unauthenticated(why.into()));
    }
    state.signin_throttle.succeeded(&keys);
    Ok(login.user.clone())
}

/// `paas login --user`: a password sign-in that yields an API token named after the machine
/// (a new one replaces the token of that name).
pub async fn login(state: &AppState, login: Login, peer: &str) -> Result<CreatedToken> {
    let user = check(state, &login, peer).await?;
    let addr = client_addr(state, &login, peer);
    let name = login.token_name.clone().unwrap_or_else(|| "login".into());
    users::check_token_name(&name)?;
    state.store.revoke_token(Some(&user), &name).await?;
    let created = super::users::issue_token(state, &user, &name, Some(LOGIN_TOKEN_TTL)).await?;
    let detail = format!("token {}", created.info.id);
    let ok = AuditRecord {
        user: &user,
        action: "signin",
        addr,
        outcome: "ok",
        detail: &detail,
        ..Default::default()
    };
    state.store.record_audit(&ok).await?;
    Ok(created)
}

/// The console's sign-in: a session of its own, never an API token.
pub async fn start_session(state: &AppState, login: Login, peer: &str) -> Result<Session> {
    let user = check(state, &login, peer).await?;
    let addr = client_addr(state, &login, peer);
    let id = format!("{SESSION_PREFIX}{}", tokens::generate().trim_start_matches("paas_"));
    let expires_at = after(SESSION_TTL);
    state.store.insert_session(&tokens::hash(&id), &user, addr, &expires_at).await?;
    let ok = AuditRecord {
        user: &user,
        action: "signin",
        addr,
        outcome: "ok",
        detail: "console",
        ..Default::default()
    };
    state.store.record_audit(&ok).await?;
    Ok(Session { id, user, expires_at })
}

/// Signs a console session out: its id stops working at once.
pub async fn end_session(state: &AppState, caller: &Caller) -> Result<()> {
    let Via::Session(hash) = &caller.via else {
        return Err(DomainError::Invalid(
            "only a console session can be signed out; revoke a token with `paas tokens revoke`".into(),
        ));
    };
    state.store.delete_session(hash).await?;
    Ok(())
}

/// Turns on the second factor for the caller: a fresh secret, shown once.
pub async fn enable_totp(state: &AppState, caller: &Caller) -> Result<TotpSetup> {
    // Replacing a secret would let a stolen token take the second factor over.
    if state.store.user(&caller.user).await?.is_some_and(|u| u.totp_secret.is_some()) {
        return Err(DomainError::Conflict(
            "your second factor is already on; an admin can turn it off (`paas users totp-disable`) to set a new one".into(),
        ));
    }
    let mut secret = vec![0u8; 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut secret);
    let t = totp(secret.clone(), &caller.user)?;
    let sealed = state.secrets.seal_text(&secret);
    state.store.set_totp(&caller.user, Some(&sealed)).await?;
    Ok(TotpSetup { secret: t.get_secret_base32(), url: t.get_url() })
}

pub async fn disable_totp(state: &AppState, user: &str) -> Result<()> {
    if !state.store.set_totp(user, None).await? {
        return Err(DomainError::NotFound(format!("there is no user named {user:?}")));
    }
    Ok(state.store.end_sessions_of(user).await?)
}

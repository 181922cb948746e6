//! Notifications: where alerts (and, for targets that ask, deploys) are sent, and the sending:
//! email through the platform's SMTP server (lettre; `--smtp-url`, `--smtp-from`) and webhooks
//! (a JSON POST signed with HMAC-SHA256 under the target's own key). A target is an address or
//! URL sealed at rest like config values; the URL's password never shows in listings.

use crate::error::{DomainError, Result};
use crate::state::AppState;
use crate::store::TargetRow;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use protocol::alerts::{AddTarget, Notification, NotifyTarget, TestOutcome};
use std::time::Duration;

/// How long one delivery may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);
/// Targets at most: each notification goes to every one.
const MAX_TARGETS: usize = 20;
/// The header carrying a webhook body's signature.
pub const SIGNATURE_HEADER: &str = "X-Paas-Signature";

/// The SMTP server email notifications go through.
#[derive(Clone)]
pub struct SmtpSettings {
    /// lettre's URL: `smtps://user:pass@host:465`, `smtp://user:pass@host:587?tls=required`, or
    /// `smtp://host:25` (no TLS: a relay on this machine only).
    pub url: String,
    pub from: String,
}

/// The URL holds the password: never printed.
impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &protocol::drains::mask_drain_url(&self.url))
            .field("from", &self.from)
            .finish()
    }
}

impl SmtpSettings {
    /// Checked at start, so a typo fails there and not at the first alert.
    pub fn check(&self) -> anyhow::Result<()> {
        AsyncSmtpTransport::<Tokio1Executor>::from_url(&self.url).map_err(|e| {
            anyhow::anyhow!("--smtp-url is not an SMTP URL such as smtps://user:pass@host:465: {e}")
        })?;
        self.from
            .parse::<lettre::message::Mailbox>()
            .map_err(|e| anyhow::anyhow!("--smtp-from {:?} is not an email address: {e}", self.from))?;
        Ok(())
    }
}

fn view(state: &AppState, row: &TargetRow, secret: Option<String>) -> NotifyTarget {
    let target = open(state, &row.target);
    let target = if row.kind == "webhook" { protocol::drains::mask_drain_url(&target) } else { target };
    NotifyTarget {
        id: row.id.clone(),
        kind: row.kind.clone(),
        target,
        app: row.app.clone(),
        deploys: row.deploys,
        secret,
    }
}

fn open(state: &AppState, sealed: &str) -> String {
    state.secrets.open_text(sealed).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

pub async fn list(state: &AppState) -> Result<Vec<NotifyTarget>> {
    Ok(state.store.notify_targets().await?.iter().map(|r| view(state, r, None)).collect())
}

/// Adds a target; a webhook's signing key is made here and shown this once.
pub async fn add(state: &AppState, user: &str, add: AddTarget) -> Result<NotifyTarget> {
    let target = add.target.trim().to_string();
    match add.kind.as_str() {
        "email" => {
            target.parse::<lettre::Address>().map_err(|_| {
                DomainError::Invalid(format!("{target:?} is not an email address such as ops@example.com"))
            })?;
            if state.config.smtp.is_none() {
                return Err(DomainError::Invalid(
                    "the platform has no SMTP server to send email through: start it with --smtp-url and --smtp-from".into(),
                ));
            }
        }
        "webhook" => {
            let url = reqwest::Url::parse(&target).map_err(|_| {
                DomainError::Invalid(format!(
                    "{target:?} is not a URL such as https://hooks.example.com/T0/B0"
                ))
            })?;
            if !["https", "http"].contains(&url.scheme()) || url.host().is_none() {
                return Err(DomainError::Invalid(format!(
                    "a webhook is an http:// or https:// URL, not {target:?}"
                )));
            }
        }
        other => {
            return Err(DomainError::Invalid(format!(
                "{other:?} is not a kind of target: use email or webhook"
            )))
        }
    }
    if let Some(app) = &add.app {
        state.store.get_app(app).await?;
    }
    let existing = state.store.notify_targets().await?;
    if existing.len() >= MAX_TARGETS {
        return Err(DomainError::Conflict(format!(
            "there are {MAX_TARGETS} notification targets already; remove one first"
        )));
    }
    if existing.iter().any(|r| r.kind == add.kind && r.app == add.app && open(state, &r.target) == target) {
        return Err(DomainError::Conflict(format!("{target} is a notification target already")));
    }
    let secret = (add.kind == "webhook").then(crate::tokens::generate);
    let row = TargetRow {
        id: format!("n-{:08x}", rand::random::<u32>()),
        kind: add.kind.clone(),
        target: state.secrets.seal_text(target.as_bytes()),
        secret: secret.as_ref().map(|s| state.secrets.seal_text(s.as_bytes())),
        app: add.app.clone(),
        deploys: add.deploys,
        created_at: crate::store::now(),
        created_by: user.to_string(),
    };
    state.store.insert_notify_target(&row).await?;
    tracing::info!(id = %row.id, kind = %row.kind, app = ?row.app, user, "notification target added");
    Ok(view(state, &row, secret))
}

pub async fn remove(state: &AppState, user: &str, id: &str) -> Result<()> {
    if !state.store.delete_notify_target(id).await? {
        return Err(DomainError::NotFound(format!(
            "no notification target {id}; `paas notify list` shows them"
        )));
    }
    tracing::info!(id, user, "notification target removed");
    Ok(())
}

/// Sends a test notification to every target, saying for each whether it went.
pub async fn test(state: &AppState) -> Result<Vec<TestOutcome>> {
    let rows = state.store.notify_targets().await?;
    if rows.is_empty() {
        return Err(DomainError::NotFound(
            "there is no notification target: add one with `paas notify add email ADDRESS` or `paas notify add webhook URL`".into(),
        ));
    }
    let note = Notification {
        event: "test".into(),
        rule: None,
        subject: None,
        app: None,
        env: None,
        summary: "A test notification from paas: this target receives alerts.".into(),
        value: None,
        threshold: None,
        since: None,
        at: crate::store::now(),
    };
    let mut out = Vec::new();
    for row in &rows {
        let error = deliver(state, row, &note).await.err().map(|e| format!("{e:#}"));
        out.push(TestOutcome { id: row.id.clone(), target: view(state, row, None).target, error });
    }
    Ok(out)
}

/// Sends `note` to every target it concerns: those of its app (or of every app), and for a
/// deploy only those that asked for deploys. Failures are logged, never returned: a dead
/// webhook must not hold up an alert's other targets or a deploy.
pub async fn send(state: &AppState, note: &Notification) {
    let rows = match state.store.notify_targets().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "reading the notification targets failed");
            return;
        }
    };
    let deploy = is_deploy(&note.event);
    for row in rows {
        let for_app = row.app.is_none() || row.app == note.app;
        if !for_app || (deploy && !row.deploys) {
            continue;
        }
        if let Err(e) = deliver(state, &row, note).await {
            tracing::warn!(target_id = %row.id, kind = %row.kind, event = %note.event, error = %format!("{e:#}"), "a notification was not delivered");
        }
    }
}

/// Events of deploys and rollbacks: started, live, failed.
pub fn is_deploy(kind: &str) -> bool {
    kind.starts_with("deploy.") || kind.starts_with("rollback.")
}

/// The notification of a deploy's or rollback's platform event.
pub fn deploy_note(event: &crate::store::NewEvent<'_>) -> Notification {
    Notification {
        event: event.kind.to_string(),
        rule: None,
        subject: Some(format!("app={} env={}", event.app, event.env)),
        app: Some(event.app.to_string()),
        env: Some(event.env.to_string()),
        summary: format!("{}/{}: {}", event.app, event.env, event.message),
        value: None,
        threshold: None,
        since: None,
        at: crate::store::now(),
    }
}

async fn deliver(state: &AppState, row: &TargetRow, note: &Notification) -> anyhow::Result<()> {
    let target = state.secrets.open_text(&row.target)?;
    let target = String::from_utf8(target)?;
    match row.kind.as_str() {
        "email" => email(state, &target, note).await,
        _ => {
            let key = match &row.secret {
                Some(s) => state.secrets.open_text(s)?,
                None => Vec::new(),
            };
            webhook(&target, &key, note).await
        }
    }
}

async fn email(state: &AppState, to: &str, note: &Notification) -> anyhow::Result<()> {
    let smtp = state
        .config
        .smtp
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the platform has no SMTP server (--smtp-url)"))?;
    let subject = match note.event.as_str() {
        "alert.firing" => format!("[paas] FIRING: {}", note.summary),
        "alert.resolved" => format!("[paas] RESOLVED: {}", note.summary),
        "test" => "[paas] test notification".to_string(),
        other => format!("[paas] {other}: {}", note.summary),
    };
    let mut body = format!("{}\n\n", note.summary);
    for (k, v) in [
        ("Event", Some(note.event.clone())),
        ("Rule", note.rule.clone()),
        ("Where", note.subject.clone()),
        ("Since", note.since.clone()),
        ("Value", note.value.map(|v| format!("{v:.2}"))),
        ("Threshold", note.threshold.map(|v| format!("{v:.2}"))),
        ("At", Some(note.at.clone())),
    ] {
        if let Some(v) = v {
            body.push_str(&format!("{k}: {v}\n"));
        }
    }
    let message = Message::builder()
        .from(smtp.from.parse()?)
        .to(to.parse()?)
        .subject(subject.chars().take(200).collect::<String>())
        .header(ContentType::TEXT_PLAIN)
        .body(body)?;
    let transport =
        AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp.url)?.timeout(Some(SEND_TIMEOUT)).build();
    transport.send(message).await?;
    Ok(())
}

/// The signature a webhook receiver checks: HMAC-SHA256 of the body under the target's key.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    format!("sha256={}", hex::encode(ring::hmac::sign(&key, body).as_ref()))
}

async fn webhook(url: &str, key: &[u8], note: &Notification) -> anyhow::Result<()> {
    // One client for every webhook (its TLS roots are loaded once), built at the first one.
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = match CLIENT.get() {
        Some(c) => c,
        None => {
            let built = reqwest::Client::builder()
                .timeout(SEND_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            CLIENT.get_or_init(|| built)
        }
    };
    let body = serde_json::to_vec(note)?;
    let resp = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(key, &body))
        .body(body)
        .send()
        .await?;
    if !resp.status().is_success() {
        anyhow::bail!("the webhook answered {}", resp.status());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            super::signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

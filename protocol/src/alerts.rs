//! Alerts and notifications on the wire: rules (`paas alerts rules`), alerts (`paas alerts
//! list`), silences, and where notifications go (`paas notify`).

use serde::{Deserialize, Serialize};

/// A rule: `metric op threshold` held for `for_secs`, over a scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    pub id: String,
    /// `metric`, `increase`, `silent` or `event` (how the condition is read).
    pub kind: String,
    pub metric: String,
    pub op: String,
    pub threshold: f64,
    pub for_secs: u64,
    pub app: Option<String>,
    pub env: Option<String>,
    pub enabled: bool,
    /// Notifications are held back until then (RFC 3339).
    pub silenced_until: Option<String>,
    pub description: String,
    /// One of the platform's own rules: edited, never removed.
    #[serde(default)]
    pub builtin: bool,
}

/// `POST /api/v1/alerts/rules`: a rule of one's own on a metric, for an app (or one of its
/// environments) or everything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddRule {
    pub id: String,
    pub metric: String,
    /// `>` or `<`.
    pub op: String,
    pub threshold: f64,
    /// How long the condition must hold: `5m`, `0s`.
    pub for_: String,
    pub app: Option<String>,
    pub env: Option<String>,
}

/// `PUT /api/v1/alerts/rules/{id}`: what changes (the rest stays).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetRule {
    pub threshold: Option<f64>,
    /// A duration (`5m`, `0s`).
    pub for_: Option<String>,
    pub enabled: Option<bool>,
}

/// `POST /api/v1/alerts/rules/{id}/silence`: for how long (`2h`); `None` ends a silence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub duration: Option<String>,
}

/// An alert: a rule's condition for one subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub rule: String,
    /// What it is about: `node=n1 path=/`, `app=shop env=production process=web replica=1`.
    pub subject: String,
    pub app: Option<String>,
    pub env: Option<String>,
    /// `firing` or `resolved`.
    pub state: String,
    pub since: String,
    pub resolved_at: Option<String>,
    pub value: f64,
    pub description: String,
    pub silenced: bool,
}

/// A notification target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotifyTarget {
    pub id: String,
    /// `email` or `webhook`.
    pub kind: String,
    /// The address, or the URL with any password masked.
    pub target: String,
    /// Only this app's alerts and deploys; every app's and the nodes' when `None`.
    pub app: Option<String>,
    /// Deploys (started, live, failed, rolled back) are sent too.
    pub deploys: bool,
    /// A new webhook's signing key, shown once when it is added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `POST /api/v1/notify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddTarget {
    pub kind: String,
    pub target: String,
    pub app: Option<String>,
    #[serde(default)]
    pub deploys: bool,
}

/// What `paas notify test` did for each target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestOutcome {
    pub id: String,
    pub target: String,
    /// `None` when it was sent.
    pub error: Option<String>,
}

/// The JSON a webhook receives, signed with HMAC-SHA256 of the body under the target's key in
/// `X-Paas-Signature: sha256=<hex>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `alert.firing`, `alert.resolved`, `deploy.started`, `deploy.live`, `deploy.failed`,
    /// `deploy.rolled_back`, `test`.
    pub event: String,
    pub rule: Option<String>,
    pub subject: Option<String>,
    pub app: Option<String>,
    pub env: Option<String>,
    /// One sentence: what, where, since when, the value.
    pub summary: String,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub since: Option<String>,
    pub at: String,
}

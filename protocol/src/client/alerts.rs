//! The client's calls for alerts, alert rules and notification targets.

use super::{Client, ClientError};
use crate::alerts::{AddRule, AddTarget, Alert, AlertRule, NotifyTarget, SetRule, Silence, TestOutcome};

impl Client {
    pub async fn alerts(&self) -> Result<Vec<Alert>, ClientError> {
        self.send(self.http().get(self.url("/api/v1/alerts"))).await
    }

    pub async fn alert_rules(&self) -> Result<Vec<AlertRule>, ClientError> {
        self.send(self.http().get(self.url("/api/v1/alerts/rules"))).await
    }

    pub async fn add_alert_rule(&self, add: &AddRule) -> Result<AlertRule, ClientError> {
        self.post("/api/v1/alerts/rules", add).await
    }

    pub async fn remove_alert_rule(&self, rule: &str) -> Result<serde_json::Value, ClientError> {
        self.send(self.http().delete(self.url(&format!("/api/v1/alerts/rules/{rule}")))).await
    }

    pub async fn set_alert_rule(&self, rule: &str, set: &SetRule) -> Result<AlertRule, ClientError> {
        self.send(self.http().put(self.url(&format!("/api/v1/alerts/rules/{rule}"))).json(set)).await
    }

    /// Silences `rule` for `duration`, or ends its silence without one.
    pub async fn silence_alert_rule(
        &self,
        rule: &str,
        duration: Option<String>,
    ) -> Result<AlertRule, ClientError> {
        let url = self.url(&format!("/api/v1/alerts/rules/{rule}/silence"));
        match duration {
            Some(d) => self.send(self.http().post(url).json(&Silence { duration: Some(d) })).await,
            None => self.send(self.http().delete(url)).await,
        }
    }

    pub async fn notify_targets(&self) -> Result<Vec<NotifyTarget>, ClientError> {
        self.send(self.http().get(self.url("/api/v1/notify"))).await
    }

    pub async fn add_notify_target(&self, add: &AddTarget) -> Result<NotifyTarget, ClientError> {
        self.post("/api/v1/notify", add).await
    }

    pub async fn remove_notify_target(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        self.send(self.http().delete(self.url(&format!("/api/v1/notify/{id}")))).await
    }

    pub async fn test_notify(&self) -> Result<Vec<TestOutcome>, ClientError> {
        self.send(self.http().post(self.url("/api/v1/notify/test"))).await
    }
}

//! The client's calls for log drains.

use super::{Client, ClientError};
use crate::drains::{AddDrain, Drain, RemoveDrain};

impl Client {
    pub async fn drains(&self, app: &str) -> Result<Vec<Drain>, ClientError> {
        self.send(self.http().get(self.url(&format!("/api/v1/apps/{app}/drains")))).await
    }

    pub async fn add_drain(&self, app: &str, add: &AddDrain) -> Result<Drain, ClientError> {
        self.post(&format!("/api/v1/apps/{app}/drains"), add).await
    }

    /// Removes a drain by its id.
    pub async fn remove_drain(&self, app: &str, id: &str) -> Result<Drain, ClientError> {
        self.send(self.http().delete(self.url(&format!("/api/v1/apps/{app}/drains/{id}")))).await
    }

    /// Removes a drain by its URL, sent in the body so it stays out of paths and logs.
    pub async fn remove_drain_by_url(&self, app: &str, url: &str) -> Result<Drain, ClientError> {
        let body = RemoveDrain { url: url.to_string() };
        self.send(self.http().delete(self.url(&format!("/api/v1/apps/{app}/drains"))).json(&body)).await
    }
}

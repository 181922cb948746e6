//! The client's calls for custom domains.

use super::{Client, ClientError};
use crate::domains::{AddDomain, Domain};

impl Client {
    pub async fn domains(&self, app: &str) -> Result<Vec<Domain>, ClientError> {
        self.send(self.http().get(self.url(&format!("/api/v1/apps/{app}/domains")))).await
    }

    pub async fn add_domain(&self, app: &str, add: &AddDomain) -> Result<Domain, ClientError> {
        self.post(&format!("/api/v1/apps/{app}/domains"), add).await
    }

    pub async fn remove_domain(&self, app: &str, domain: &str) -> Result<Domain, ClientError> {
        self.send(self.http().delete(self.url(&format!("/api/v1/apps/{app}/domains/{domain}")))).await
    }
}

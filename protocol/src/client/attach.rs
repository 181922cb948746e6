//! The client's calls for attached runs: starting one, and the upgraded connections the CLI
//! (`.../runs/{id}/attach`) and the node agent (`/agent/v1/jobs/{id}/attach`) join it by.

use super::{Client, ClientError};
use crate::api::{Attach, PsqlCommand, RunCommand, RunOutput};
use crate::attach::UPGRADE;

impl Client {
    /// Starts `command` in a one-off container that the caller then joins with [`Self::attach_run`].
    pub async fn run_attached(
        &self,
        app: &str,
        env: &str,
        command: Vec<String>,
        attach: Attach,
    ) -> Result<RunOutput, ClientError> {
        let body = RunCommand { command, attach: Some(attach) };
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/runs"), &body).await
    }

    /// Starts psql in the database server (the replica's with `replica`) on a TTY, a run the
    /// caller then joins with [`Self::attach_run`].
    pub async fn db_psql_attached(
        &self,
        app: &str,
        env: &str,
        replica: bool,
    ) -> Result<RunOutput, ClientError> {
        let body = PsqlCommand { replica, ..Default::default() };
        self.post(&format!("/api/v1/apps/{app}/envs/{env}/db/psql/attach"), &body).await
    }

    /// The user's leg of an attached run: frames of [`crate::attach`] both ways.
    pub async fn attach_run(&self, app: &str, env: &str, id: &str) -> Result<reqwest::Upgraded, ClientError> {
        self.upgrade(&format!("/api/v1/apps/{app}/envs/{env}/runs/{id}/attach")).await
    }

    /// The node agent's leg of an attached run it is running.
    pub async fn agent_attach(&self, id: &str) -> Result<reqwest::Upgraded, ClientError> {
        self.upgrade(&format!("/agent/v1/jobs/{id}/attach")).await
    }

    async fn upgrade(&self, path: &str) -> Result<reqwest::Upgraded, ClientError> {
        let req = self
            .http()
            .get(self.url(path))
            .bearer_auth(self.token())
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, UPGRADE);
        let resp = req.send().await.map_err(|e| ClientError::transport(self.base(), e))?;
        if resp.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.refusal(resp).await);
        }
        resp.upgrade().await.map_err(|e| ClientError::transport(self.base(), e))
    }
}

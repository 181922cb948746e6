//! Certificates from an ACME server (Let's Encrypt, or a private one such as pebble) for the
//! custom domains added without an uploaded certificate, when the platform is started with
//! `--acme-directory`. The protocol is instant-acme's; HTTP-01 challenges are answered by the
//! ingress nodes themselves (the token and key authorization travel in their assignment, and a
//! challenge is declared ready only once every ingress node has it). One worker obtains and
//! renews certificates one domain at a time, with backoff per domain after a failure, and
//! records each failure on the domain (`paas domains list` shows it).
//!
//! instant-acme talks HTTP through our reqwest (a small adapter), so no second HTTP stack is
//! built and `--acme-ca-file` can add a private CA to the trusted roots.

use crate::state::AppState;
use crate::store::CertRow;
use anyhow::Context;
use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use protocol::agent::AcmeChallenge;
use protocol::domains::CertSource;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A certificate is renewed this long before it ends (Let's Encrypt's are valid 90 days).
const RENEW_BEFORE: i64 = 30 * 24 * 3600;
/// The worker looks again this often when nothing wakes it.
const RECHECK: Duration = Duration::from_secs(300);
/// After a failure a domain waits this long, doubling up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// How long ingress nodes get to take up a challenge before the server is told to check it.
const CHALLENGE_SPREAD: Duration = Duration::from_secs(30);
/// An order (validation, issuance) must be done within this long.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// `--acme-directory`, `--acme-email`, `--acme-ca-file`.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub directory: String,
    pub email: String,
    /// PEM certificates trusted besides the platform's roots, to reach a private ACME server.
    pub ca_file: Option<PathBuf>,
}

pub struct Acme {
    settings: AcmeSettings,
    http: reqwest::Client,
    /// Where the account's credentials are kept (they hold its private key: 0600).
    account_file: PathBuf,
    account: tokio::sync::Mutex<Option<Account>>,
    /// Challenges being answered: token to key authorization.
    challenges: Mutex<BTreeMap<String, String>>,
    /// Per domain, when it may be tried again and the backoff that follows.
    failures: Mutex<HashMap<String, (Instant, Duration)>>,
    wake: Notify,
}

/// instant-acme's requests, made with reqwest.
struct ReqwestHttp(reqwest::Client);

impl HttpClient for ReqwestHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let req = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            let resp = client.execute(req).await.map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(http::Response::<reqwest::Body>::from(resp)))
        })
    }
}

/// The account as stored: for which directory.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    email: String,
    credentials: AccountCredentials,
}

impl Acme {
    pub fn new(settings: AcmeSettings, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(path) = &settings.ca_file {
            let pem =
                std::fs::read(path).with_context(|| format!("reading --acme-ca-file {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("--acme-ca-file {} holds no PEM certificate", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: builder.build()?,
            account_file: data_dir.join("acme-account.json"),
            settings,
            account: Default::default(),
            challenges: Default::default(),
            failures: Default::default(),
            wake: Notify::new(),
        })
    }

    /// Asks the worker to look now (a domain was added).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The challenges ingress nodes answer now.
    pub fn challenges(&self) -> Vec<AcmeChallenge> {
        let challenges = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        challenges
            .iter()
            .map(|(token, key)| AcmeChallenge { token: token.clone(), key_authorization: key.clone() })
            .collect()
    }

    fn builder(&self) -> instant_acme::AccountBuilder {
        Account::builder_with_http(Box::new(ReqwestHttp(self.http.clone())))
    }

    /// The account, from the file when it is for this directory and email, else made anew.
    async fn account(&self) -> anyhow::Result<Account> {
        let mut slot = self.account.lock().await;
        if let Some(account) = slot.as_ref() {
            return Ok(account.clone());
        }
        let stored: Option<StoredAccount> =
            std::fs::read(&self.account_file).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let s = &self.settings;
        let account = match stored.filter(|a| a.directory == s.directory && a.email == s.email) {
            Some(stored) => self.builder().from_credentials(stored.credentials).await?,
            None => {
                let contact = format!("mailto:{}", s.email);
                let new = NewAccount {
                    contact: &[contact.as_str()],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = self.builder().create(&new, s.directory.clone(), None).await?;
                let stored =
                    StoredAccount { directory: s.directory.clone(), email: s.email.clone(), credentials };
                protocol::files::write_private(&self.account_file, &serde_json::to_vec(&stored)?)
                    .with_context(|| format!("writing {}", self.account_file.display()))?;
                tracing::info!(directory = %s.directory, "made an ACME account");
                account
            }
        };
        *slot = Some(account.clone());
        Ok(account)
    }

    /// Obtains a certificate for `domain`: answers its HTTP-01 challenge through the ingress
    /// nodes, then finalizes with a fresh key. Answers the chain and key, PEM.
    async fn obtain(&self, state: &AppState, domain: &str) -> anyhow::Result<(String, String)> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(domain.to_string())];
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let mut tokens = Vec::new();
        let result = async {
            // Scoped: the authorizations borrow the order until they are done.
            {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => anyhow::bail!("the ACME server holds the authorization for {domain} as {other:?}"),
                }
                let mut challenge = authz
                    .challenge(ChallengeType::Http01)
                    .ok_or_else(|| anyhow::anyhow!("the ACME server offers no HTTP-01 challenge for {domain}"))?;
                let key = challenge.key_authorization().as_str().to_string();
                let token = challenge.token.clone();
                self.challenges.lock().unwrap_or_else(|p| p.into_inner()).insert(token.clone(), key);
                tokens.push(token);
                // Every ingress node answers it before the server is told to look.
                state.bump();
                let ingress = crate::assign::ingress_nodes(state).await?;
                let late = state.applied.wait_all(&ingress, state.index(), CHALLENGE_SPREAD).await;
                if !late.is_empty() {
                    tracing::warn!(domain, nodes = ?late, "ingress nodes did not take up the ACME challenge in time");
                }
                challenge.set_ready().await?;
            }
            }
            let retry =
                RetryPolicy::new().initial_delay(Duration::from_millis(250)).timeout(ORDER_TIMEOUT);
            let status = order.poll_ready(&retry).await?;
            anyhow::ensure!(status == OrderStatus::Ready, "the ACME server left the order {status:?}");
            let key = rcgen::KeyPair::generate().map_err(|e| anyhow::anyhow!("making a key: {e}"))?;
            let mut params = rcgen::CertificateParams::new(vec![domain.to_string()])
                .map_err(|e| anyhow::anyhow!("{domain}: {e}"))?;
            params.distinguished_name = rcgen::DistinguishedName::new();
            let csr = params.serialize_request(&key).map_err(|e| anyhow::anyhow!("making the CSR: {e}"))?;
            order.finalize_csr(csr.der()).await?;
            let chain = order.poll_certificate(&retry).await?;
            Ok((chain, key.serialize_pem()))
        }
        .await;
        let mut challenges = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        for token in tokens {
            challenges.remove(&token);
        }
        result
    }

    fn may_try(&self, domain: &str) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.get(domain).is_none_or(|(at, _)| Instant::now() >= *at)
    }

    fn failed(&self, domain: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (at, backoff) = failures.entry(domain.to_string()).or_insert((Instant::now(), MIN_BACKOFF));
        *at = Instant::now() + *backoff;
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }
}

/// The ACME domains whose certificate is missing, is not from ACME yet, or ends soon.
async fn due(state: &AppState) -> anyhow::Result<Vec<String>> {
    let certs: HashMap<String, CertRow> =
        state.store.list_certificates().await?.into_iter().map(|c| (c.host.clone(), c)).collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let acme = CertSource::Acme.as_str();
    Ok(state
        .store
        .list_domains(None)
        .await?
        .into_iter()
        .filter(|d| d.tls == acme)
        .filter(|d| certs.get(&d.domain).is_none_or(|c| c.source != acme || c.not_after - now < RENEW_BEFORE))
        .map(|d| d.domain)
        .collect())
}

/// Obtains and renews the ACME domains' certificates until shutdown.
pub async fn run(state: AppState) {
    let Some(acme) = state.acme.clone() else { return };
    let stop = state.shutting_down();
    loop {
        let domains = match due(&state).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "listing the domains due for an ACME certificate failed");
                Vec::new()
            }
        };
        for domain in domains.into_iter().filter(|d| acme.may_try(d)) {
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                r = acme.obtain(&state, &domain) => r,
            };
            if let Err(e) = store_outcome(&state, &acme, &domain, outcome).await {
                tracing::error!(domain = %domain, error = %format!("{e:#}"), "recording an ACME outcome failed");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = acme.wake.notified() => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

async fn store_outcome(
    state: &AppState,
    acme: &Acme,
    domain: &str,
    outcome: anyhow::Result<(String, String)>,
) -> anyhow::Result<()> {
    // A domain removed while its order ran gets no certificate.
    if state.store.get_domain(domain).await?.is_none() {
        return Ok(());
    }
    let checked = outcome.and_then(|(chain, key)| {
        let not_after = super::domains::check_upload(domain, &chain, &key).map_err(anyhow::Error::msg)?;
        Ok((chain, key, not_after))
    });
    match checked {
        Ok((chain_pem, key_pem, not_after)) => {
            state
                .store
                .put_certificate(&CertRow {
                    host: domain.to_string(),
                    source: CertSource::Acme.to_string(),
                    chain_pem,
                    key_sealed: state.secrets.seal_text(key_pem.as_bytes()),
                    not_after,
                    issuer: String::new(),
                    updated_at: String::new(),
                })
                .await?;
            state.store.domain_cert_error(domain, None).await?;
            acme.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(domain);
            tracing::info!(domain, "obtained a certificate from the ACME server");
            state.bump();
        }
        Err(e) => {
            let why = format!("{e:#}");
            tracing::warn!(domain, error = %why, "obtaining a certificate from the ACME server failed; retrying later");
            acme.failed(domain);
            state.store.domain_cert_error(domain, Some(&why)).await?;
        }
    }
    Ok(())
}

//! S3 client for database backups, on `object_store`'s S3 client (path-style URLs, SigV4,
//! multipart uploads, retries). This file adds what backups need on top of it: the settings users
//! give checked up front, errors as one sentence naming the key and the endpoint, no call that can
//! hang (every wait for bytes is bounded), and creating the bucket.

use anyhow::Context;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{HttpClient, HttpConnector, HttpError, HttpErrorKind};
use object_store::path::Path as Key;
use object_store::{BackoffConfig, ClientOptions, ObjectStoreExt, RetryConfig, WriteMultipart};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Files up to this size go up in one PUT, larger ones as multipart parts of this size (S3's
/// smallest), grown for files so large that they would need more than S3's 10,000 parts. A part
/// must be sent within [`IDLE_TIMEOUT`], so small parts keep slow links working.
pub const PART_SIZE: usize = 5 * 1024 * 1024;
const MAX_PARTS: u64 = 10_000;
/// Region used when none is configured; S3-compatible servers generally accept any.
pub const DEFAULT_REGION: &str = "us-east-1";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest S3 may stay silent: from a request (and its body, at most one part) to the
/// answer, and between the bytes of an answer's body. S3 answers within seconds; a peer that
/// accepts and then says nothing has hung, and the backup fails with the reason.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Parts of one multipart upload sent at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Where backups go. `Debug` leaves the secret key out so the config can be logged.
#[derive(Clone)]
pub struct S3Config {
    /// `http://127.0.0.1:9000`: scheme, host and port only; the bucket is separate.
    pub endpoint: String,
    pub bucket: String,
    /// Empty means [`DEFAULT_REGION`].
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Prepended as is to every key (`backups/` puts them in a folder); may be empty.
    pub prefix: String,
    /// PEM file with CA certificates to trust besides the public roots, for an https endpoint
    /// signed by a private CA.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("prefix", &self.prefix)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[derive(Clone)]
pub struct S3 {
    store: Arc<AmazonS3>,
    /// The client `store` sends with, also used for the bucket requests `object_store` lacks.
    http: reqwest::Client,
    /// Normalized: origin only, region filled in, prefix without a leading slash.
    config: Arc<S3Config>,
}

/// Hands `object_store` our own reqwest client: its options have no idle timeout (only one for
/// a whole request, which would cut off a long download), reqwest's `read_timeout` is one.
#[derive(Debug)]
struct Connector(reqwest::Client);

impl HttpConnector for Connector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(self.0.clone()))
    }
}

impl S3 {
    /// Checks the endpoint, bucket and keys; nothing is sent until the first request.
    pub fn new(config: S3Config) -> anyhow::Result<Self> {
        Self::with_idle_timeout(config, IDLE_TIMEOUT)
    }

    fn with_idle_timeout(mut config: S3Config, idle: Duration) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(config.endpoint.trim()).map_err(|_| {
            anyhow::anyhow!("the S3 endpoint {:?} is not a URL like http://127.0.0.1:9000", config.endpoint)
        })?;
        // Checked before the endpoint is ever echoed, so a key pasted into it is not repeated.
        anyhow::ensure!(
            url.username().is_empty() && url.password().is_none(),
            "the S3 endpoint must not contain credentials: give the access and secret keys separately"
        );
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "the S3 endpoint {url} must start with https:// or http://"
        );
        anyhow::ensure!(
            url.path() == "/" && url.query().is_none() && url.fragment().is_none(),
            "the S3 endpoint {url} must be only a scheme, host and port: the bucket and prefix are \
             configured separately"
        );
        anyhow::ensure!(url.host_str().is_some(), "the S3 endpoint has no host");
        check_bucket(&config.bucket)?;
        anyhow::ensure!(
            !config.access_key.is_empty() && !config.secret_key.is_empty(),
            "S3 needs both an access key and a secret key"
        );
        config.region = match config.region.trim() {
            "" => DEFAULT_REGION.to_string(),
            region => region.to_string(),
        };
        // A leading slash would make every key start with an empty path segment.
        config.prefix = config.prefix.trim_start_matches('/').to_string();
        config.endpoint = url.origin().ascii_serialization();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(idle)
            .tcp_keepalive(Duration::from_secs(60));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the S3 CA certificate file {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default();
            anyhow::ensure!(!certs.is_empty(), "{} holds no PEM certificate", path.display());
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().context("building the S3 HTTP client")?;
        // A request that failed for a reason worth another try (unreachable, 5xx, timed out) is
        // sent again while less than 1.5 idle timeouts have passed since it was first sent: a
        // hung endpoint fails a backup in about two idle timeouts.
        let retry =
            RetryConfig { max_retries: 5, retry_timeout: idle * 3 / 2, backoff: BackoffConfig::default() };
        let store = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key)
            .with_secret_access_key(&config.secret_key)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(true)
            .with_retry(retry)
            .with_http_connector(Connector(http.clone()))
            .build()
            .context("configuring the S3 client")?;
        Ok(Self { store: Arc::new(store), http, config: Arc::new(config) })
    }

    /// `s3://bucket/prefix at http://host:port`, for logs and messages; never the keys.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let place = if c.prefix.is_empty() { c.bucket.clone() } else { format!("{}/{}", c.bucket, c.prefix) };
        format!("s3://{place} at {}", c.endpoint)
    }

    /// Uploads a file without reading it into memory whole: one PUT up to [`PART_SIZE`], a
    /// multipart upload above (at most [`PARTS_IN_FLIGHT`] parts in memory), which is aborted if
    /// a part fails so the bucket keeps no orphaned parts. (If this future is dropped mid-upload
    /// the abort cannot run; a bucket lifecycle rule for incomplete uploads cleans those up.)
    pub async fn put_file(&self, key: &str, path: &Path) -> anyhow::Result<()> {
        let (full, location) = self.object(key)?;
        let reading = || format!("reading {} to upload it", path.display());
        let mut file = tokio::fs::File::open(path).await.with_context(reading)?;
        let size = file.metadata().await.with_context(reading)?.len();
        if size <= PART_SIZE as u64 {
            let mut body = Vec::with_capacity(size as usize);
            file.read_to_end(&mut body).await.with_context(reading)?;
            self.store.put(&location, body.into()).await.map_err(|e| self.error("PUT", &full, e))?;
            return Ok(());
        }
        let part = PART_SIZE.max(size.div_ceil(MAX_PARTS) as usize);
        let upload = self.store.put_multipart(&location).await.map_err(|e| self.error("POST", &full, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
        let mut buf = vec![0u8; 1 << 20];
        let sent: anyhow::Result<()> = async {
            loop {
                let n = file.read(&mut buf).await.with_context(reading)?;
                if n == 0 {
                    return Ok(());
                }
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(|e| self.error("PUT", &full, e))?;
                writer.write(&buf[..n]);
            }
        }
        .await;
        if let Err(err) = sent {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(key = %full, error = %abort, "could not abort a failed multipart upload");
            }
            return Err(err);
        }
        writer.finish().await.map_err(|e| self.error("POST", &full, e))?;
        Ok(())
    }

    /// Downloads an object to `path` (created or truncated only once S3 has answered), returning
    /// its size. A partial file is removed on failure so it cannot be mistaken for a backup.
    pub async fn get_to_file(&self, key: &str, path: &Path) -> anyhow::Result<u64> {
        let (full, location) = self.object(key)?;
        let got = self.store.get(&location).await.map_err(|e| self.error("GET", &full, e))?;
        let expected = got.meta.size;
        let file =
            tokio::fs::File::create(path).await.with_context(|| format!("creating {}", path.display()))?;
        let written = async {
            // Network chunks are small; batching them saves a blocking write per chunk.
            let mut out = tokio::io::BufWriter::with_capacity(1024 * 1024, file);
            let mut stream = got.into_stream();
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.error("GET", &full, e))?;
                out.write_all(&chunk).await.with_context(|| format!("writing {}", path.display()))?;
                written += chunk.len() as u64;
            }
            out.flush().await.with_context(|| format!("writing {}", path.display()))?;
            out.get_ref().sync_all().await.with_context(|| format!("writing {}", path.display()))?;
            anyhow::ensure!(
                written == expected,
                "S3 GET of {full} failed: received {written} of {expected} bytes"
            );
            Ok(written)
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(path).await;
        }
        written
    }

    /// The object's bytes as they arrive. The request has succeeded when this returns; a later
    /// broken connection surfaces as an error item.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> anyhow::Result<futures_util::stream::BoxStream<'static, anyhow::Result<Bytes>>> {
        let (full, location) = self.object(key)?;
        let got = self.store.get(&location).await.map_err(|e| self.error("GET", &full, e))?;
        let this = self.clone();
        Ok(got.into_stream().map_err(move |e| this.error("GET", &full, e)).boxed())
    }

    /// The object's size, or `None` when there is no such object.
    pub async fn head(&self, key: &str) -> anyhow::Result<Option<u64>> {
        let (full, location) = self.object(key)?;
        match self.store.head(&location).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("HEAD", &full, e)),
        }
    }

    /// Deletes the object; deleting one that does not exist succeeds, as in S3.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let (full, location) = self.object(key)?;
        self.store.delete(&location).await.map_err(|e| self.error("DELETE", &full, e))
    }

    /// Stores a small object (a manifest) from memory.
    pub async fn put_bytes(&self, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let (full, location) = self.object(key)?;
        self.store.put(&location, body.into()).await.map_err(|e| self.error("PUT", &full, e))?;
        Ok(())
    }

    /// Reads a small object into memory.
    pub async fn get_bytes(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let (full, location) = self.object(key)?;
        let got = self.store.get(&location).await.map_err(|e| self.error("GET", &full, e))?;
        Ok(got.bytes().await.map_err(|e| self.error("GET", &full, e))?.to_vec())
    }

    /// Creates the bucket unless it exists (and is ours). `object_store` has no bucket calls;
    /// its signer signs these two requests.
    pub async fn create_bucket_if_missing(&self) -> anyhow::Result<()> {
        let c = &self.config;
        if self.bucket_request(http::Method::HEAD, Vec::new()).await? != 404 {
            return Ok(());
        }
        // Outside us-east-1, S3 wants the region restated in the body.
        let body = if c.region == DEFAULT_REGION {
            Vec::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                c.region
            )
            .into_bytes()
        };
        self.bucket_request(http::Method::PUT, body).await?;
        Ok(())
    }

    /// Sends a request for the bucket itself. Answers 2xx and a HEAD's 404 (no such bucket)
    /// with their status, any other as an error; a bucket we already own counts as created.
    async fn bucket_request(&self, method: http::Method, body: Vec<u8>) -> anyhow::Result<u16> {
        let (c, op) = (&self.config, method.to_string());
        let what = format!("bucket {}", c.bucket);
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}/{}", c.endpoint, c.bucket))
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body.into())?;
        let credential =
            AwsCredential { key_id: c.access_key.clone(), secret_key: c.secret_key.clone(), token: None };
        AwsAuthorizer::new(&credential, "s3", &c.region).authorize(&mut request, None);
        let client = HttpClient::new(self.http.clone());
        let resp = client.execute(request).await.map_err(|e| self.error(&op, &what, e))?;
        let status = resp.status();
        if status.is_success() || (op == "HEAD" && status == 404) {
            return Ok(status.as_u16());
        }
        let text = resp.into_body().bytes().await.unwrap_or_default();
        let detail = s3_detail(&String::from_utf8_lossy(&text)).unwrap_or_else(|| status.to_string());
        if detail.starts_with("BucketAlreadyOwnedByYou") {
            return Ok(status.as_u16());
        }
        anyhow::bail!("S3 {op} of {what} failed: {detail}")
    }

    /// The full key (prefix included) and the location `object_store` addresses it by.
    fn object(&self, key: &str) -> anyhow::Result<(String, Key)> {
        let full = format!("{}{key}", self.config.prefix);
        anyhow::ensure!(!key.is_empty(), "an S3 object key cannot be empty");
        anyhow::ensure!(full.len() <= 1024, "the S3 object key {full:?} is longer than 1024 bytes");
        // `.`, `..` and empty segments would address another object, or none.
        let location = Key::parse(&full).ok().filter(|k| k.as_ref() == full).with_context(|| {
            format!("the S3 object key {full:?} cannot contain `.`, `..` or empty path segments")
        })?;
        Ok((full, location))
    }

    /// "S3 GET of KEY failed: WHY", from whatever `object_store` reported: the endpoint named
    /// when it could not be reached or went silent, S3's code and message when it answered.
    fn error(&self, op: &str, what: &str, err: impl std::error::Error + 'static) -> anyhow::Error {
        let endpoint = &self.config.endpoint;
        let mut chain: Vec<&(dyn std::error::Error + 'static)> = vec![&err];
        while let Some(next) = chain.last().and_then(|e| e.source()) {
            chain.push(next);
        }
        // Where "connection refused" or a certificate problem is said; cut, as it may hold a
        // whole error page.
        let innermost: String =
            chain.last().map(|e| e.to_string()).unwrap_or_default().chars().take(300).collect();
        let why = if let Some(http) = chain.iter().find_map(|e| e.downcast_ref::<HttpError>()) {
            let why = match http.kind() {
                HttpErrorKind::Connect => format!("could not reach {endpoint}"),
                HttpErrorKind::Timeout => format!("{endpoint} did not answer in time"),
                _ => format!("the connection to {endpoint} failed"),
            };
            format!("{why}: {innermost}")
        } else if let Some(detail) = chain.iter().find_map(|e| s3_detail(&e.to_string())) {
            detail
        } else {
            innermost
        };
        anyhow::anyhow!("S3 {op} of {what} failed: {why}")
    }
}

/// "NoSuchKey (The specified key does not exist.)" from an S3 error body (XML), wherever in a
/// text it appears.
fn s3_detail(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct S3ErrorBody {
        code: String,
        message: Option<String>,
    }
    let xml = &text[text.find("<Error>")?..];
    let body: S3ErrorBody = quick_xml::de::from_str(&xml[..xml.find("</Error>")? + 8]).ok()?;
    Some(match body.message.filter(|m| !m.is_empty()) {
        Some(message) => format!("{} ({})", body.code, message.chars().take(300).collect::<String>()),
        None => body.code,
    })
}

fn check_bucket(bucket: &str) -> anyhow::Result<()> {
    let b = bucket.as_bytes();
    let valid = (3..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'-'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !bucket.contains("..");
    anyhow::ensure!(
        valid,
        "the S3 bucket name {bucket:?} is not valid: use 3 to 63 lower-case letters, digits, dots \
         and hyphens, starting and ending with a letter or digit"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> S3Config {
        S3Config {
            endpoint: "http://127.0.0.1:9000/".into(),
            bucket: "backups".into(),
            region: String::new(),
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "very-secret".into(),
            prefix: "/nightly/".into(),
            ca_file: None,
        }
    }

    #[test]
    fn new_normalises_the_config_and_describe_hides_the_keys() {
        let s3 = S3::new(config()).unwrap();
        assert_eq!(s3.describe(), "s3://backups/nightly/ at http://127.0.0.1:9000");
        assert_eq!(s3.config.region, "us-east-1");
        assert!(!format!("{:?}", s3.config).contains("very-secret"));
        let (full, _) = s3.object("db/x y+1.dump").unwrap();
        assert_eq!(full, "nightly/db/x y+1.dump");
        let plain = S3::new(S3Config { endpoint: "http://minio".into(), prefix: String::new(), ..config() });
        assert_eq!(plain.unwrap().describe(), "s3://backups at http://minio");
    }

    #[test]
    fn new_rejects_bad_endpoints_buckets_and_keys() {
        let bad = |c: S3Config| S3::new(c).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(bad(S3Config { endpoint: "127.0.0.1:9000".into(), ..config() }).contains("http"));
        assert!(
            bad(S3Config { endpoint: "http://h:9000/bucket".into(), ..config() }).contains("only a scheme")
        );
        assert!(S3::new(S3Config { endpoint: "https://s3.example.com".into(), ..config() }).is_ok());
        assert!(bad(S3Config { endpoint: "ftp://s3.example.com".into(), ..config() }).contains("https://"));
        let missing = S3Config { ca_file: Some("/nonexistent/ca.pem".into()), ..config() };
        assert!(bad(missing).contains("CA certificate file"));
        let with_key = bad(S3Config { endpoint: "http://AK:very-secret@h".into(), ..config() });
        assert!(with_key.contains("credentials") && !with_key.contains("very-secret"), "{with_key}");
        for bucket in ["", "ab", "Backups", "-backups", "back_ups", "a..b"] {
            assert!(bad(S3Config { bucket: bucket.into(), ..config() }).contains("bucket name"), "{bucket}");
        }
        assert!(bad(S3Config { secret_key: String::new(), ..config() }).contains("secret key"));
        let s3 = S3::new(config()).unwrap();
        for key in ["", "a/../b", "a//b", "./a", "a/"] {
            assert!(s3.object(key).is_err(), "{key}");
        }
    }

    /// A client of a server at `addr` that gives up after `idle` of silence.
    fn impatient(addr: std::net::SocketAddr, idle: Duration) -> S3 {
        S3::with_idle_timeout(S3Config { endpoint: format!("http://{addr}"), ..config() }, idle).unwrap()
    }

    #[tokio::test]
    async fn a_server_that_never_answers_fails_the_request_in_time() {
        // The kernel accepts connections; nobody reads or answers.
        let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s3 = impatient(hole.local_addr().unwrap(), Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = s3.put_bytes("a/b.manifest.json", b"{}".to_vec()).await.unwrap_err().to_string();
        assert!(err.starts_with("S3 PUT of nightly/a/b.manifest.json failed: "), "{err}");
        assert!(err.contains("did not answer in time"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_download_that_stops_midway_fails_and_leaves_no_file() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The first request gets the start of an answer and then silence; the ones object_store
        // sends to resume the download get silence only.
        let server = tokio::spawn(async move {
            let mut first = true;
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let answer = std::mem::take(&mut first);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    if answer {
                        let head = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nETag: \"x\"\r\n\
                                    Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\n\r\n0123456789";
                        let _ = conn.write_all(head.as_bytes()).await;
                    }
                    tokio::time::sleep(Duration::from_secs(120)).await;
                });
            }
        });
        let s3 = impatient(addr, Duration::from_millis(300));
        let path = std::env::temp_dir().join(format!("paas-s3-stall-{}.dump", std::process::id()));
        let err = s3.get_to_file("x.dump", &path).await.unwrap_err().to_string();
        assert!(err.contains("did not answer in time"), "{err}");
        assert!(!path.exists(), "a partial download was left behind");
        server.abort();
    }

    #[test]
    fn s3_error_bodies_become_code_and_message() {
        let body = "Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error>\
                    <Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does \
                    not match &amp; so on</Message><StringToSign>x</StringToSign></Error>";
        assert_eq!(
            s3_detail(body).as_deref(),
            Some("SignatureDoesNotMatch (The request signature we calculated does not match & so on)")
        );
        assert_eq!(s3_detail("<Error><Code>NoSuchBucket</Code></Error>").as_deref(), Some("NoSuchBucket"));
        assert_eq!(s3_detail("<html>proxy</html>"), None);
    }
}

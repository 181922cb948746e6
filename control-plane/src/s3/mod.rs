//! S3 client for database backups: streams files to and from any S3-compatible bucket over
//! path-style URLs signed with SigV4, using multipart uploads for large files. Built on reqwest
//! alone so the control plane carries no AWS SDK. No call can hang: connecting, every wait for
//! an answer and every pause in a body sent or received is bounded.

mod sign;

use anyhow::Context;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, ETAG};
use reqwest::{Method, StatusCode};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::time::Instant;

/// Files up to this size go up in one PUT, larger ones as multipart parts of this size. 64 MiB
/// keeps the part count low (S3 allows 10,000, so files up to 625 GiB) while a failed part costs
/// little to send again.
pub const PART_SIZE: u64 = 64 * 1024 * 1024;
/// The most parts S3 accepts in one multipart upload.
const MAX_PARTS: u64 = 10_000;
/// Region used when none is configured; S3-compatible servers generally accept any.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Deadline for requests with small or no bodies. Streamed bodies get none: a large backup on a
/// slow link may legitimately take hours, as long as bytes keep moving ([`IDLE_TIMEOUT`]).
const SHORT_TIMEOUT: Duration = Duration::from_secs(120);
/// Connecting to the endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest S3 may stay silent: no answer to a request whose body was sent, no body bytes
/// taken from us, no bytes of an answer's body. S3 answers within seconds; a peer that accepts
/// and then says nothing has hung, and the backup fails with the reason instead of waiting.
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Completing a multipart upload makes S3 assemble the parts, which can take minutes (AWS
/// answers at once and then sends spaces while it works; others answer only at the end).
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const COMPLETE_IDLE: Duration = Duration::from_secs(120);
/// A streamed PUT (whole object or part) is re-read from disk and sent again this many times in
/// all when S3 is briefly unavailable, so one dropped connection does not lose a long backup.
const UPLOAD_ATTEMPTS: u32 = 3;
/// Error bodies are read only this far: a misconfigured endpoint may answer with a huge page.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

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

/// A failed S3 request, as one sentence for users. Reachable through `anyhow::Error::downcast_ref`
/// for callers that need to tell a missing object from other failures.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct S3Error {
    /// HTTP status; `None` when the endpoint could not be reached or the connection broke.
    pub status: Option<u16>,
    /// S3's error code (`NoSuchKey`, `AccessDenied`, ...), when the answer carried one.
    pub code: Option<String>,
    message: String,
}

impl S3Error {
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404) || matches!(self.code.as_deref(), Some("NoSuchKey" | "NoSuchBucket"))
    }

    /// Worth sending again: the server was unreachable, overloaded or failed internally.
    fn is_transient(&self) -> bool {
        matches!(self.status, None | Some(500 | 502 | 503 | 504))
            || matches!(self.code.as_deref(), Some("SlowDown" | "RequestTimeout" | "InternalError"))
    }
}

#[derive(Clone)]
pub struct S3 {
    inner: Arc<Inner>,
}

struct Inner {
    config: S3Config,
    /// `http://host:port`, to which encoded paths are appended.
    origin: String,
    /// The `Host` header as the HTTP client will send it (port only when not the default), which
    /// the signature must cover exactly.
    host: String,
    http: reqwest::Client,
    /// [`IDLE_TIMEOUT`]; shorter in tests.
    idle: Duration,
}

/// When a request last moved: sent, or body bytes taken by the connection. A request whose
/// progress stops for the idle timeout has hung.
#[derive(Clone)]
struct Progress {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Progress {
    fn new() -> Self {
        Self { start: Instant::now(), last_ms: Arc::default() }
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `idle`.
    async fn stalled(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            if last.elapsed() >= idle {
                return;
            }
            tokio::time::sleep_until(last + idle).await;
        }
    }
}

/// One request, described for [`S3::send`].
struct Call<'a> {
    method: Method,
    /// URI-encoded, starting with `/bucket`.
    path: &'a str,
    /// URI-encoded pairs; a parameter without a value has an empty one.
    query: Vec<(String, String)>,
    /// The body and its length; S3 needs a `Content-Length` even for streamed bodies.
    body: Option<(reqwest::Body, u64)>,
    payload_hash: String,
    timeout: Option<Duration>,
    /// How long S3 may stay silent before the answer (see [`Progress`]); the client's idle
    /// timeout unless set.
    idle: Option<Duration>,
    progress: Progress,
    /// What errors name: the full key, or `bucket NAME`.
    what: &'a str,
}

impl<'a> Call<'a> {
    fn new(method: Method, path: &'a str, what: &'a str) -> Self {
        Self {
            method,
            path,
            query: Vec::new(),
            body: None,
            payload_hash: sign::sha256_hex(b""),
            timeout: Some(SHORT_TIMEOUT),
            idle: None,
            progress: Progress::new(),
            what,
        }
    }

    fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push((sign::uri_encode(name, false), sign::uri_encode(value, false)));
        self
    }

    /// A small body, signed with its real hash.
    fn bytes(mut self, body: Vec<u8>) -> Self {
        self.payload_hash = sign::sha256_hex(&body);
        let len = body.len() as u64;
        self.body = Some((body.into(), len));
        self
    }
}

impl S3 {
    /// Checks the endpoint, bucket and keys; nothing is sent until the first request.
    pub fn new(mut config: S3Config) -> anyhow::Result<Self> {
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
        let host = url.host_str().context("the S3 endpoint has no host")?;
        let host = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let origin = format!("{}://{host}", url.scheme());
        check_bucket(&config.bucket)?;
        anyhow::ensure!(
            !config.access_key.is_empty() && !config.secret_key.is_empty(),
            "S3 needs both an access key and a secret key"
        );
        if config.region.trim().is_empty() {
            config.region = DEFAULT_REGION.to_string();
        }
        config.region = config.region.trim().to_string();
        // A leading slash would make every key start with an empty path segment.
        config.prefix = config.prefix.trim_start_matches('/').to_string();
        config.endpoint = origin.clone();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(Duration::from_secs(60));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the S3 CA certificate file {}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|_| anyhow::anyhow!("{} holds no PEM certificate", path.display()))?;
            anyhow::ensure!(!certs.is_empty(), "{} holds no PEM certificate", path.display());
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().context("building the S3 HTTP client")?;
        Ok(Self { inner: Arc::new(Inner { config, origin, host, http, idle: IDLE_TIMEOUT }) })
    }

    /// `s3://bucket/prefix at http://host:port`, for logs and messages; never the keys.
    pub fn describe(&self) -> String {
        let c = &self.inner.config;
        let place = if c.prefix.is_empty() { c.bucket.clone() } else { format!("{}/{}", c.bucket, c.prefix) };
        format!("s3://{place} at {}", c.endpoint)
    }

    /// Uploads a file without reading it into memory: one PUT up to [`PART_SIZE`], a multipart
    /// upload above, which is aborted if any part fails so the bucket keeps no orphaned parts.
    /// (If this future is dropped mid-upload the abort cannot run; a bucket lifecycle rule for
    /// incomplete uploads cleans those up.)
    pub async fn put_file(&self, key: &str, path: &Path) -> anyhow::Result<()> {
        let (full, url_path) = self.object(key)?;
        let size = tokio::fs::metadata(path)
            .await
            .with_context(|| format!("reading the size of {}", path.display()))?
            .len();
        if size <= PART_SIZE {
            self.upload(&url_path, &full, Vec::new(), path, 0, size).await?;
            return Ok(());
        }
        let parts = size.div_ceil(PART_SIZE);
        anyhow::ensure!(
            parts <= MAX_PARTS,
            "{} is {size} bytes, more than S3 accepts in one upload ({MAX_PARTS} parts of {PART_SIZE} bytes)",
            path.display()
        );
        tracing::debug!(key = %full, size, parts, "starting a multipart upload");
        let initiated =
            self.send(Call::new(Method::POST, &url_path, &full).query("uploads", "").bytes(vec![]));
        let answer = self.read_text(initiated.await?, "POST", &full).await?;
        let upload_id = xml_tag(&answer, "UploadId")
            .with_context(|| format!("S3 POST of {full} failed: the answer carried no UploadId"))?;
        match self.upload_parts(&url_path, &full, &upload_id, path, size).await {
            Ok(()) => Ok(()),
            Err(err) => {
                let abort = Call::new(Method::DELETE, &url_path, &full).query("uploadId", &upload_id);
                if let Err(abort_err) = self.send(abort).await {
                    tracing::warn!(key = %full, error = %abort_err, "could not abort a failed multipart upload");
                }
                Err(err)
            }
        }
    }

    async fn upload_parts(
        &self,
        url_path: &str,
        full: &str,
        upload_id: &str,
        path: &Path,
        size: u64,
    ) -> anyhow::Result<()> {
        let mut complete = String::from("<CompleteMultipartUpload>");
        for (index, offset) in (0..size).step_by(PART_SIZE as usize).enumerate() {
            let number = (index + 1).to_string();
            let len = PART_SIZE.min(size - offset);
            let query = vec![("partNumber", number.as_str()), ("uploadId", upload_id)];
            let resp = self.upload(url_path, full, query, path, offset, len).await?;
            let etag = resp.headers().get(ETAG).and_then(|v| v.to_str().ok()).with_context(|| {
                format!("S3 PUT of part {number} of {full} failed: the answer had no ETag")
            })?;
            complete.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
                xml_escape(etag)
            ));
        }
        complete.push_str("</CompleteMultipartUpload>");
        let mut call =
            Call::new(Method::POST, url_path, full).query("uploadId", upload_id).bytes(complete.into_bytes());
        call.timeout = Some(COMPLETE_TIMEOUT);
        call.idle = Some(COMPLETE_IDLE);
        // S3 may answer 200 and still report a failure in the body, once assembly has begun.
        let answer = self.read_text(self.send(call).await?, "POST", full).await?;
        if answer.contains("<Error>") {
            return Err(s3_error("POST", full, StatusCode::OK, answer.as_bytes()).into());
        }
        Ok(())
    }

    /// PUTs `len` bytes of `file` from `offset`, streamed from disk with an unsigned payload, and
    /// sends them again after transient failures.
    async fn upload(
        &self,
        url_path: &str,
        full: &str,
        query: Vec<(&str, &str)>,
        file: &Path,
        offset: u64,
        len: u64,
    ) -> anyhow::Result<reqwest::Response> {
        let mut attempt = 1;
        loop {
            let mut handle = tokio::fs::File::open(file)
                .await
                .with_context(|| format!("opening {} to upload it", file.display()))?;
            handle.seek(std::io::SeekFrom::Start(offset)).await?;
            let mut call = Call::new(Method::PUT, url_path, full);
            for (name, value) in &query {
                call = call.query(name, value);
            }
            // Each chunk the connection takes is progress; a peer that stops reading stalls it.
            let progress = call.progress.clone();
            let stream = tokio_util::io::ReaderStream::with_capacity(handle.take(len), 256 * 1024)
                .inspect(move |_| progress.touch());
            call.body = Some((reqwest::Body::wrap_stream(stream), len));
            call.payload_hash = sign::UNSIGNED_PAYLOAD.to_string();
            call.timeout = None;
            match self.send(call).await {
                Ok(resp) => return Ok(resp),
                Err(err) if attempt < UPLOAD_ATTEMPTS && err.is_transient() => {
                    tracing::warn!(key = %full, offset, attempt, error = %err, "S3 upload failed; sending it again");
                    tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))).await;
                    attempt += 1;
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// Downloads an object to `path` (created or truncated only once S3 has answered), returning
    /// its size. A partial file is removed on failure so it cannot be mistaken for a backup.
    pub async fn get_to_file(&self, key: &str, path: &Path) -> anyhow::Result<u64> {
        let (full, url_path) = self.object(key)?;
        let mut call = Call::new(Method::GET, &url_path, &full);
        call.timeout = None;
        let resp = self.send(call).await?;
        let expected = resp.content_length();
        let file =
            tokio::fs::File::create(path).await.with_context(|| format!("creating {}", path.display()))?;
        let written = async {
            // Network chunks are small; batching them saves a blocking write per chunk.
            let mut out = tokio::io::BufWriter::with_capacity(1024 * 1024, file);
            let mut stream = std::pin::pin!(self.body("GET", &full, resp));
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                out.write_all(&chunk).await.with_context(|| format!("writing {}", path.display()))?;
                written += chunk.len() as u64;
            }
            out.flush().await.with_context(|| format!("writing {}", path.display()))?;
            out.get_ref().sync_all().await.with_context(|| format!("writing {}", path.display()))?;
            if let Some(expected) = expected {
                anyhow::ensure!(
                    written == expected,
                    "S3 GET of {full} failed: received {written} of {expected} bytes"
                );
            }
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
        let (full, url_path) = self.object(key)?;
        let mut call = Call::new(Method::GET, &url_path, &full);
        call.timeout = None;
        let resp = self.send(call).await?;
        Ok(self.body("GET", &full, resp).map(|chunk| chunk.map_err(Into::into)).boxed())
    }

    /// The object's size, or `None` when there is no such object.
    pub async fn head(&self, key: &str) -> anyhow::Result<Option<u64>> {
        let (full, url_path) = self.object(key)?;
        match self.send(Call::new(Method::HEAD, &url_path, &full)).await {
            // Read from the header: the client knows a HEAD answer has no body and says 0.
            Ok(resp) => {
                let size = resp
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("S3 HEAD of {full} failed: the answer had no Content-Length"))?;
                Ok(Some(size))
            }
            Err(err) if err.status == Some(404) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes the object; deleting one that does not exist succeeds, as in S3.
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let (full, url_path) = self.object(key)?;
        self.send(Call::new(Method::DELETE, &url_path, &full)).await?;
        Ok(())
    }

    /// Stores a small object (a manifest) from memory.
    pub async fn put_bytes(&self, key: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let (full, url_path) = self.object(key)?;
        self.send(Call::new(Method::PUT, &url_path, &full).bytes(body)).await?;
        Ok(())
    }

    /// Reads a small object into memory.
    pub async fn get_bytes(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let (full, url_path) = self.object(key)?;
        let resp = self.send(Call::new(Method::GET, &url_path, &full)).await?;
        Ok(self.read_all("GET", &full, resp, usize::MAX).await?)
    }

    /// Creates the bucket unless it exists (and is ours).
    pub async fn create_bucket_if_missing(&self) -> anyhow::Result<()> {
        let c = &self.inner.config;
        let url_path = format!("/{}", c.bucket);
        let what = format!("bucket {}", c.bucket);
        match self.send(Call::new(Method::HEAD, &url_path, &what)).await {
            Ok(_) => return Ok(()),
            Err(err) if err.status == Some(404) => {}
            Err(err) => return Err(err.into()),
        }
        // Outside us-east-1, S3 wants the region restated in the body.
        let body = if c.region == DEFAULT_REGION {
            Vec::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml_escape(&c.region)
            )
            .into_bytes()
        };
        match self.send(Call::new(Method::PUT, &url_path, &what).bytes(body)).await {
            Ok(_) => Ok(()),
            // Created by someone else with our credentials in the meantime.
            Err(err) if err.code.as_deref() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// The full key (prefix included) and its URI-encoded path.
    fn object(&self, key: &str) -> anyhow::Result<(String, String)> {
        let c = &self.inner.config;
        let full = format!("{}{key}", c.prefix);
        anyhow::ensure!(!key.is_empty(), "an S3 object key cannot be empty");
        anyhow::ensure!(full.len() <= 1024, "the S3 object key {full:?} is longer than 1024 bytes");
        // URL parsing would silently resolve `.` and `..` segments and address another object.
        anyhow::ensure!(
            !full.split('/').any(|segment| segment == "." || segment == ".."),
            "the S3 object key {full:?} cannot contain `.` or `..` path segments"
        );
        let url_path = format!("/{}/{}", c.bucket, sign::uri_encode(&full, true));
        Ok((full, url_path))
    }

    /// Signs and sends one request; an answer other than 2xx becomes an [`S3Error`].
    async fn send(&self, call: Call<'_>) -> Result<reqwest::Response, S3Error> {
        let inner = &*self.inner;
        let c = &inner.config;
        let amz_date = sign::amz_date(time::OffsetDateTime::now_utc());
        let headers = [
            ("host", inner.host.as_str()),
            ("x-amz-content-sha256", call.payload_hash.as_str()),
            ("x-amz-date", amz_date.as_str()),
        ];
        let request = sign::Request {
            method: call.method.as_str(),
            path: call.path,
            query: &call.query,
            headers: &headers,
            payload_hash: &call.payload_hash,
        };
        let authorization = sign::authorization(&c.access_key, &c.secret_key, &c.region, &amz_date, &request);
        // Sent as `?uploads`, not `?uploads=`: some servers only recognise the bare form.
        let query: Vec<String> = call
            .query
            .iter()
            .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") })
            .collect();
        let mut url = format!("{}{}", inner.origin, call.path);
        if !query.is_empty() {
            url = format!("{url}?{}", query.join("&"));
        }
        let op = call.method.to_string();
        let mut req = inner
            .http
            .request(call.method, url)
            .header("x-amz-date", &amz_date)
            .header("x-amz-content-sha256", &call.payload_hash)
            .header(AUTHORIZATION, authorization);
        if let Some((body, len)) = call.body {
            req = req.header(CONTENT_LENGTH, len).body(body);
        }
        if let Some(timeout) = call.timeout {
            req = req.timeout(timeout);
        }
        tracing::debug!(method = %op, path = call.path, "S3 request");
        let idle = call.idle.unwrap_or(inner.idle);
        call.progress.touch();
        let resp = tokio::select! {
            resp = req.send() => resp.map_err(|e| transport_error(&op, call.what, &inner.origin, e))?,
            () = call.progress.stalled(idle) => return Err(stalled(&op, call.what, &inner.origin, idle)),
        };
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // An error body that does not arrive in time leaves only the status to report.
        let body = self.read_all(&op, call.what, resp, ERROR_BODY_LIMIT).await.unwrap_or_default();
        Err(s3_error(&op, call.what, status, &body))
    }

    /// An answer's body as it arrives; a pause longer than the idle timeout ends it with an
    /// error, so a peer that stops sending mid-body cannot hang a download.
    fn body(
        &self,
        op: &str,
        what: &str,
        resp: reqwest::Response,
    ) -> impl Stream<Item = Result<Bytes, S3Error>> + Send + 'static {
        let (op, what, origin, idle) =
            (op.to_string(), what.to_string(), self.inner.origin.clone(), self.inner.idle);
        futures_util::stream::unfold(Some(Box::pin(resp.bytes_stream())), move |stream| {
            let (op, what, origin) = (op.clone(), what.clone(), origin.clone());
            async move {
                let mut stream = stream?;
                match tokio::time::timeout(idle, stream.next()).await {
                    Ok(None) => None,
                    Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(stream))),
                    Ok(Some(Err(e))) => Some((Err(transport_error(&op, &what, &origin, e)), None)),
                    Err(_) => Some((Err(stalled(&op, &what, &origin, idle)), None)),
                }
            }
        })
    }

    /// Reads an answer's body into memory, at most `limit` bytes of it.
    async fn read_all(
        &self,
        op: &str,
        what: &str,
        resp: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, S3Error> {
        let mut body = Vec::new();
        let mut stream = std::pin::pin!(self.body(op, what, resp));
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk?);
            if body.len() >= limit {
                break;
            }
        }
        Ok(body)
    }

    async fn read_text(&self, resp: reqwest::Response, op: &str, what: &str) -> Result<String, S3Error> {
        let body = self.read_all(op, what, resp, usize::MAX).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
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

/// "S3 GET of KEY failed: could not reach ENDPOINT: Connection refused": the endpoint named, the
/// innermost cause kept (that is where "connection refused" or a DNS failure is said).
fn transport_error(op: &str, what: &str, endpoint: &str, err: reqwest::Error) -> S3Error {
    let why = if err.is_connect() {
        format!("could not reach {endpoint}")
    } else if err.is_timeout() {
        format!("{endpoint} did not answer in time")
    } else {
        format!("the connection to {endpoint} failed")
    };
    let cause = match std::error::Error::source(&err) {
        // Without the URL: the endpoint is already named, and the path adds nothing.
        None => err.without_url().to_string(),
        Some(mut cause) => {
            while let Some(next) = cause.source() {
                cause = next;
            }
            cause.to_string()
        }
    };
    S3Error { status: None, code: None, message: format!("S3 {op} of {what} failed: {why}: {cause}") }
}

/// "S3 PUT of KEY failed: 403 SignatureDoesNotMatch (The request signature ...)", from S3's XML
/// error body when it has one, else from the status alone.
fn s3_error(op: &str, what: &str, status: StatusCode, body: &[u8]) -> S3Error {
    let body = String::from_utf8_lossy(body);
    let code = xml_tag(&body, "Code").filter(|c| !c.is_empty());
    let detail = match (&code, xml_tag(&body, "Message").filter(|m| !m.is_empty())) {
        (Some(code), Some(message)) => format!("{code} ({})", shorten(&message)),
        (Some(code), None) => code.clone(),
        (None, _) => status.canonical_reason().unwrap_or("error").to_string(),
    };
    S3Error {
        status: Some(status.as_u16()),
        message: format!("S3 {op} of {what} failed: {} {detail}", status.as_u16()),
        code,
    }
}

fn shorten(message: &str) -> String {
    const LIMIT: usize = 300;
    match message.char_indices().nth(LIMIT) {
        Some((end, _)) => format!("{}...", &message[..end]),
        None => message.to_string(),
    }
}

/// "S3 PUT of KEY failed: http://host:port did not answer in time: nothing moved for 20 seconds".
fn stalled(op: &str, what: &str, endpoint: &str, idle: Duration) -> S3Error {
    S3Error {
        status: None,
        code: None,
        message: format!(
            "S3 {op} of {what} failed: {endpoint} did not answer in time: nothing moved for {} seconds",
            idle.as_secs()
        ),
    }
}

/// The text of the first `<tag>...</tag>`. S3's answers are flat and predictable enough that this
/// is all the XML parsing the client needs.
fn xml_tag(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(xml_unescape(xml[start..end].trim()))
}

fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
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
        assert_eq!(s3.inner.config.region, "us-east-1");
        assert_eq!(s3.inner.host, "127.0.0.1:9000");
        assert!(!format!("{:?}", s3.inner.config).contains("very-secret"));
        let (full, path) = s3.object("db/x y+1.dump").unwrap();
        assert_eq!(full, "nightly/db/x y+1.dump");
        assert_eq!(path, "/backups/nightly/db/x%20y%2B1.dump");
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
        assert!(s3.object("").is_err());
        assert!(s3.object("a/../b").is_err());
    }

    /// A client of a server at `addr` that gives up after `idle` of silence.
    fn impatient(addr: std::net::SocketAddr, idle: Duration) -> S3 {
        let mut s3 = S3::new(S3Config { endpoint: format!("http://{addr}"), ..config() }).unwrap();
        Arc::get_mut(&mut s3.inner).unwrap().idle = idle;
        s3
    }

    /// A server that accepts connections (the kernel does) and never reads or answers.
    fn black_hole() -> (std::net::TcpListener, std::net::SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[tokio::test]
    async fn a_server_that_never_answers_fails_the_request_after_the_idle_timeout() {
        let (_hole, addr) = black_hole();
        let s3 = impatient(addr, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = s3.put_bytes("a/b.manifest.json", b"{}".to_vec()).await.unwrap_err().to_string();
        assert!(err.contains("did not answer in time"), "{err}");
        assert!(err.contains("a/b.manifest.json"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_server_that_stops_reading_a_streamed_body_fails_the_upload() {
        let (_hole, addr) = black_hole();
        let s3 = impatient(addr, Duration::from_millis(500));
        // Far more than the socket buffers hold: once they are full nothing moves.
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        let endless = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
        let (full, path) = s3.object("big.dump").unwrap();
        let mut call = Call::new(Method::PUT, &path, &full);
        let progress = call.progress.clone();
        let body = endless.inspect(move |_| progress.touch());
        call.body = Some((reqwest::Body::wrap_stream(body), 1 << 40));
        call.payload_hash = sign::UNSIGNED_PAYLOAD.to_string();
        call.timeout = None;
        let started = std::time::Instant::now();
        let err = s3.send(call).await.unwrap_err();
        assert!(err.is_transient() && err.to_string().contains("nothing moved"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_download_that_stops_midway_fails_and_leaves_no_file() {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await; // and then nothing
        });
        let s3 = impatient(addr, Duration::from_millis(300));
        let path = std::env::temp_dir().join(format!("paas-s3-stall-{}.dump", std::process::id()));
        let err = s3.get_to_file("x.dump", &path).await.unwrap_err().to_string();
        assert!(err.contains("nothing moved for"), "{err}");
        assert!(!path.exists(), "a partial download was left behind");
        server.abort();
    }

    #[test]
    fn errors_carry_the_status_and_s3s_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request \
                    signature we calculated does not match &amp; so on</Message><StringToSign>x</StringToSign></Error>";
        let err = s3_error("PUT", "backups/x.dump", StatusCode::FORBIDDEN, body.as_bytes());
        assert_eq!(
            err.to_string(),
            "S3 PUT of backups/x.dump failed: 403 SignatureDoesNotMatch (The request signature we \
             calculated does not match & so on)"
        );
        assert_eq!(err.code.as_deref(), Some("SignatureDoesNotMatch"));
        assert!(!err.is_transient());
        let err = s3_error("GET", "k", StatusCode::BAD_GATEWAY, b"<html>proxy</html>");
        assert_eq!(err.to_string(), "S3 GET of k failed: 502 Bad Gateway");
        assert!(err.is_transient());
    }
}

//! The backup S3 client (object_store underneath) against a real S3-compatible server, moto's:
//! bucket creation, small and multipart uploads, streamed downloads, deletes, and the errors users
//! see, with moto checking every request's signature; and https with a private CA.

use futures_util::StreamExt;
use paas_control_plane::s3::{S3Config, PART_SIZE, S3};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "moto-test-secret-key";

/// A moto server on a free loopback port, killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
    log: PathBuf,
    access_key: String,
    secret_key: String,
}

/// moto checks signatures only when told how many requests to let through unchecked first: the
/// three that create an IAM user allowed everything, and its keys.
const UNCHECKED_SETUP_REQUESTS: &str = "3";

impl Moto {
    /// A server that checks signatures against IAM keys it issues (see [`Moto::issue_keys`]).
    async fn start_verifying(dir: &Path) -> Self {
        let mut moto = Self::launch(dir, &[("INITIAL_NO_AUTH_ACTION_COUNT", UNCHECKED_SETUP_REQUESTS)]);
        moto.issue_keys().await;
        moto
    }

    /// A server that accepts any signature.
    fn start_lenient(dir: &Path) -> Self {
        Self::launch(dir, &[])
    }

    /// A lenient server speaking https with a certificate for 127.0.0.1 signed by a private CA
    /// (made with openssl); returns it and the CA certificate's path.
    fn start_tls(dir: &Path) -> (Self, PathBuf) {
        let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
        let (ca, ca_key, cert, key, csr, ext) = (
            path("ca.pem"),
            path("ca.key"),
            path("cert.pem"),
            path("key.pem"),
            path("cert.csr"),
            path("ext.cnf"),
        );
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).output().expect("running openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=paas test CA",
            "-keyout",
            &ca_key,
            "-out",
            &ca,
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &key,
            "-out",
            &csr,
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ]);
        let mut moto = Self::launch_with(dir, &[], &["-c", &cert, "-k", &key]);
        moto.endpoint = moto.endpoint.replace("http://", "https://");
        (moto, PathBuf::from(ca))
    }

    fn launch(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::launch_with(dir, env, &[])
    }

    fn launch_with(dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> Self {
        let (program, args) = moto_command();
        // Bind-and-drop finds a port no one holds; moto binds it again right away.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = dir.join("moto.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting moto's S3 server ({program}): {e}"));
        let mut moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: SECRET.into(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // A loop of connects to a free port can connect to itself (TCP simultaneous open).
        let listening = || {
            TcpStream::connect(("127.0.0.1", port)).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
        };
        while !listening() {
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto's S3 server exited ({status}) before serving:\n{}", moto.output());
            }
            assert!(
                Instant::now() < deadline,
                "moto's S3 server did not listen within 60 s:\n{}",
                moto.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// Creates an IAM user that may do anything and takes its keys, through moto's IAM query
    /// API; these are the requests moto lets through unchecked, so their signatures are dummies.
    async fn issue_keys(&mut self) {
        let policy =
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        let policy = format!("&PolicyName=all&PolicyDocument={}", form_encode(policy));
        let mut answer = String::new();
        for (action, extra) in
            [("CreateUser", ""), ("PutUserPolicy", policy.as_str()), ("CreateAccessKey", "")]
        {
            let resp = reqwest::Client::new()
                .post(format!("{}/", self.endpoint))
                .header("content-type", "application/x-www-form-urlencoded")
                .header(
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/iam/aws4_request, \
                     SignedHeaders=host, Signature=0",
                )
                .body(format!("Action={action}&Version=2010-05-08&UserName=backup{extra}"))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            answer = resp.text().await.unwrap();
            assert!(status.is_success(), "moto's IAM {action} failed: {status} {answer}\n{}", self.output());
        }
        self.access_key = xml_text(&answer, "AccessKeyId");
        self.secret_key = xml_text(&answer, "SecretAccessKey");
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn config(&self, prefix: &str) -> S3Config {
        S3Config {
            endpoint: self.endpoint.clone(),
            bucket: "paas-backups".into(),
            region: "us-east-1".into(),
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            prefix: prefix.into(),
            ca_file: None,
        }
    }

    fn client(&self, prefix: &str) -> S3 {
        S3::new(self.config(prefix)).unwrap()
    }
}

fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn xml_text(xml: &str, tag: &str) -> String {
    let start =
        xml.find(&format!("<{tag}>")).unwrap_or_else(|| panic!("no <{tag}> in {xml}")) + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>")).unwrap();
    xml[start..end].to_string()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prefers the module of the `python3` that `.ci/run` installs it into; a missing moto is a
/// failure, not a skip, so CI cannot pass without having run these tests.
fn moto_command() -> (&'static str, &'static [&'static str]) {
    let importable = Command::new("python3")
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if importable {
        return ("python3", &["-m", "moto.server"]);
    }
    let on_path = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return ("moto_server", &[]);
    }
    panic!(
        "moto's S3 server is not installed (neither `python3 -m moto.server` nor `moto_server` works): \
         install it with `pip install 'moto[server]'` (.ci/run does this)"
    );
}

/// A directory of its own under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("paas-s3-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `size` bytes that do not repeat (xorshift), so a misplaced or duplicated part changes
/// the hash, and returns their SHA-256.
fn write_file(path: &Path, size: u64, seed: u64) -> String {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hash = Sha256::new();
    let mut state = seed | 1;
    let mut chunk = vec![0u8; 1024 * 1024];
    let mut left = size;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..n]).unwrap();
        hash.update(&chunk[..n]);
        left -= n as u64;
    }
    out.flush().unwrap();
    hex::encode(hash.finalize())
}

fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hash = Sha256::new();
    std::io::copy(&mut file, &mut hash).unwrap();
    hex::encode(hash.finalize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_round_trip_through_an_s3_compatible_server() {
    let dir = TempDir::new("round-trip");
    let moto = Moto::start_verifying(&dir.0).await;
    let s3 = moto.client("backups/");
    assert_eq!(s3.describe(), format!("s3://paas-backups/backups/ at {}", moto.endpoint));
    s3.create_bucket_if_missing().await.unwrap();
    s3.create_bucket_if_missing().await.expect("creating an existing bucket is a no-op");

    // Small objects (a space exercises the path encoding the signature covers).
    let key = "db/2024-01-01 nightly.json";
    s3.put_bytes(key, b"{\"version\":1}".to_vec()).await.unwrap();
    assert_eq!(s3.get_bytes(key).await.unwrap(), b"{\"version\":1}");
    assert_eq!(s3.head(key).await.unwrap(), Some(13));
    // The prefix is part of the stored key: a client without it sees the same object there.
    assert_eq!(moto.client("").get_bytes(&format!("backups/{key}")).await.unwrap(), b"{\"version\":1}");

    // A wrong secret is refused, and the error says so without repeating either secret.
    let wrong = S3::new(S3Config { secret_key: SECRET.into(), ..moto.config("backups/") }).unwrap();
    let err = format!("{:#}", wrong.put_bytes("x.json", b"{}".to_vec()).await.unwrap_err());
    assert!(err.starts_with("S3 PUT of backups/x.json failed: SignatureDoesNotMatch ("), "{err}");
    assert!(!err.contains(SECRET) && !err.contains(&moto.secret_key), "{err}");

    // A file small enough for one PUT, and an empty one.
    let small = dir.0.join("small.dump");
    let small_sha = write_file(&small, 100 * 1024 + 7, 1);
    s3.put_file("small.dump", &small).await.unwrap();
    assert_eq!(s3.head("small.dump").await.unwrap(), Some(100 * 1024 + 7));
    let back = dir.0.join("small.back");
    assert_eq!(s3.get_to_file("small.dump", &back).await.unwrap(), 100 * 1024 + 7);
    assert_eq!(sha256_file(&back), small_sha);
    let empty = dir.0.join("empty.dump");
    write_file(&empty, 0, 2);
    s3.put_file("empty.dump", &empty).await.unwrap();
    assert_eq!(s3.head("empty.dump").await.unwrap(), Some(0));
    assert_eq!(s3.get_bytes("empty.dump").await.unwrap(), b"");

    // Three parts of a multipart upload, the last one short.
    let size = 2 * PART_SIZE as u64 + 12_345;
    let big = dir.0.join("big.dump");
    let big_sha = write_file(&big, size, 42);
    s3.put_file("big.dump", &big).await.unwrap();
    assert_eq!(s3.head("big.dump").await.unwrap(), Some(size));
    let back = dir.0.join("big.back");
    assert_eq!(s3.get_to_file("big.dump", &back).await.unwrap(), size);
    assert_eq!(sha256_file(&back), big_sha, "the downloaded file differs from the uploaded one");
    std::fs::remove_file(&back).unwrap();
    std::fs::remove_file(&big).unwrap();

    let mut stream = s3.get_stream("big.dump").await.unwrap();
    let mut hash = Sha256::new();
    let mut streamed = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        streamed += chunk.len() as u64;
        hash.update(&chunk);
    }
    assert_eq!(streamed, size);
    assert_eq!(hex::encode(hash.finalize()), big_sha, "the streamed object differs from the uploaded one");

    s3.delete("big.dump").await.unwrap();
    assert_eq!(s3.head("big.dump").await.unwrap(), None);
    s3.delete("big.dump").await.expect("deleting a missing object succeeds");

    // A missing object: the error names the key and S3's code, never the secret, and no file is
    // left behind.
    let err = format!("{:#}", s3.get_bytes("missing.dump").await.unwrap_err());
    assert!(err.starts_with("S3 GET of backups/missing.dump failed: NoSuchKey ("), "{err}");
    assert!(!err.contains(&moto.secret_key), "{err}");
    let target = dir.0.join("missing.back");
    let err = format!("{:#}", s3.get_to_file("missing.dump", &target).await.unwrap_err());
    assert!(err.contains("NoSuchKey"), "{err}");
    assert!(!target.exists());
    let err = format!("{:#}", s3.get_stream("missing.dump").await.err().unwrap());
    assert!(err.contains("NoSuchKey"), "{err}");
}

/// Keys with bytes outside the unreserved set round-trip. moto's signature check re-encodes the
/// path its own way for some of these (as it does for AWS's SDKs), so this server accepts any
/// signature.
#[tokio::test]
async fn keys_that_need_uri_encoding_round_trip() {
    let dir = TempDir::new("encoding");
    let moto = Moto::start_lenient(&dir.0);
    let s3 = moto.client("");
    s3.create_bucket_if_missing().await.unwrap();
    for key in ["db/2024-01-01 nightly+1 (ü).json", "a=b&c;d/e%20f~g*h'i.json"] {
        s3.put_bytes(key, key.as_bytes().to_vec()).await.unwrap();
        assert_eq!(s3.get_bytes(key).await.unwrap(), key.as_bytes(), "{key}");
        assert_eq!(s3.head(key).await.unwrap(), Some(key.len() as u64), "{key}");
        s3.delete(key).await.unwrap();
        assert_eq!(s3.head(key).await.unwrap(), None, "{key}");
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_named_in_the_error() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let s3 = S3::new(S3Config {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: "paas-backups".into(),
        region: String::new(),
        access_key: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_key: SECRET.into(),
        prefix: String::new(),
        ca_file: None,
    })
    .unwrap();
    let err = format!("{:#}", s3.put_bytes("x.json", b"{}".to_vec()).await.unwrap_err());
    assert!(
        err.starts_with(&format!("S3 PUT of x.json failed: could not reach http://127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains(SECRET), "{err}");
}

#[tokio::test]
async fn https_endpoints_work_with_a_private_ca_and_refuse_an_unknown_one() {
    let dir = TempDir::new("tls");
    let (moto, cert) = Moto::start_tls(&dir.0);
    let trusted = S3::new(S3Config { ca_file: Some(cert), ..moto.config("tls/") }).unwrap();
    trusted.create_bucket_if_missing().await.unwrap();
    trusted.put_bytes("m.json", b"{\"ok\":true}".to_vec()).await.unwrap();
    assert_eq!(trusted.get_bytes("m.json").await.unwrap(), b"{\"ok\":true}");
    // Without the CA, the self-signed certificate is refused: nothing is sent in the clear.
    let untrusted = moto.client("tls/");
    let err = format!("{:#}", untrusted.get_bytes("m.json").await.unwrap_err());
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");
}

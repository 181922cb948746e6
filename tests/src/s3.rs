//! A real S3-compatible server for end-to-end tests: moto's server mode on a free loopback
//! port, killed when dropped. Objects can be read and overwritten with plain HTTP (moto accepts
//! through boto3 (which moto brings), so a test can check or damage what paas stored.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

impl Moto {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
        let log = std::env::temp_dir().join(format!("paas-moto-{port}.log"));
        let out = std::fs::File::create(&log).expect("moto log file");
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("starting moto's S3 server (python3 -m moto.server)");
        let addr = format!("127.0.0.1:{port}");
        let mut moto = Self { child, endpoint: format!("http://{addr}"), addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !listening(&moto.addr) {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto's S3 server exited ({status}); install it with `pip install 'moto[server]'`:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "moto's S3 server did not listen within 30s");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }
}

/// One object operation through boto3: `get` prints the object, `put` stores stdin.
const BOTO: &str = r#"
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id="test-key", aws_secret_access_key="test-secret")
op, bucket, key = sys.argv[2:5]
if op == "get":
    sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
else:
    s3.put_object(Bucket=bucket, Key=key, Body=sys.stdin.buffer.read())
"#;

impl Moto {
    /// The object's bytes, or `None` when it cannot be read.
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let out = Command::new("python3")
            .args(["-c", BOTO, &self.endpoint, "get", bucket, key])
            .output()
            .expect("running python3");
        out.status.success().then_some(out.stdout)
    }

    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        use std::io::Write;
        let mut child = Command::new("python3")
            .args(["-c", BOTO, &self.endpoint, "put", bucket, key])
            .stdin(Stdio::piped())
            .spawn()
            .expect("running python3");
        child.stdin.take().expect("stdin").write_all(body).expect("writing the object");
        assert!(child.wait().expect("python3").success(), "putting {key} into moto failed");
    }
}

/// Whether a server accepts connections at `addr`. A connection to a free loopback port can
/// succeed by connecting to itself (TCP simultaneous open) when tried in a loop; that one is not
/// a server.
pub fn listening(addr: &str) -> bool {
    TcpStream::connect(addr).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

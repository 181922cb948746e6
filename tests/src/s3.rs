//! A real S3-compatible server for end-to-end tests: moto's server mode on a free loopback
//! port, killed when dropped. Objects can be read and overwritten with plain HTTP (moto accepts
//! unsigned requests unless told otherwise), so a test can check or damage what paas stored.

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
        while TcpStream::connect(&moto.addr).is_err() {
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

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

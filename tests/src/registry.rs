//! A real container registry for end-to-end tests: Debian's `docker-registry` (the
//! distribution project's registry) on a free loopback port, with a login from an htpasswd
//! file and its storage in a temporary directory; killed when dropped. Docker counts registries
//! on 127.0.0.0/8 as insecure, so the engine pushes to it and pulls from it over plain HTTP.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub user: String,
    pub password: String,
}

impl Registry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a directory for the registry");
        let (user, password) = ("paas-test".to_string(), format!("pw-{}", crate::rand_suffix()));
        let htpasswd = Command::new("htpasswd").args(["-Bbn", &user, &password]).output();
        let htpasswd = htpasswd.expect("running htpasswd (Debian's apache2-utils)");
        assert!(htpasswd.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).expect("writing htpasswd");
        let port = crate::free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n\
             auth:\n  htpasswd:\n    realm: paas-test\n    path: {}\n",
            dir.path().join("data").display(),
            dir.path().join("htpasswd").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("writing the registry's config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .args(["serve", &dir.path().join("config.yml").to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry (Debian's docker-registry package)");
        let mut registry = Self { child, dir, addr, user, password };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&registry.addr).is_err() {
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited ({status}):\n{}", registry.log());
            }
            assert!(Instant::now() < deadline, "docker-registry did not listen within 30s");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The tags of `repository` (the path after the host), through the registry's API with the
    /// login; `None` when the registry does not know it.
    pub fn tags(&self, repository: &str) -> Option<Vec<String>> {
        let url = format!("http://{}/v2/{repository}/tags/list", self.addr);
        let login = format!("{}:{}", self.user, self.password);
        let out = Command::new("curl").args(["-sf", "-u", &login, &url]).output().expect("running curl");
        if !out.status.success() {
            return None;
        }
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let tags = body["tags"].as_array()?;
        Some(tags.iter().filter_map(|t| t.as_str().map(String::from)).collect())
    }

    /// Bytes the registry stores (its blobs).
    pub fn stored_bytes(&self) -> u64 {
        fn walk(path: &std::path::Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(path) else { return 0 };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir.path().join("data"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Test harness: starts the real `paas` binary (`paas up`) on free ports with its own data dir,
//! config and node name, runs CLI commands against it, speaks HTTP to its ingress, and removes
//! only the Docker objects it created (by its node label and its apps' labels).

pub mod cut;
pub mod db;
pub mod http;
pub mod load;
pub mod pebble;
pub mod pg;
pub mod registry;
pub mod s3;
pub mod split;
pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace").to_path_buf()
}

/// Builds the `paas` binary once per test process (a no-op when it is up to date) and the
/// local base images (there is no registry to pull them from).
pub fn paas_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        // Benchmarks may run another build (`PAAS_BIN=target/release/paas`).
        let chosen = std::env::var_os("PAAS_BIN").map(PathBuf::from);
        if chosen.is_none() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-q", "-p", "paas-cli", "--bin", "paas"])
                .current_dir(&root)
                .status()
                .expect("running cargo build");
            assert!(status.success(), "building the paas binary failed");
        }
        let status = Command::new("bash")
            .arg(root.join("scripts/base-images.sh"))
            .status()
            .expect("running base-images.sh");
        assert!(status.success(), "building the base images failed");
        anchor_build_cache(&root);
        if let Some(bin) = chosen {
            return std::fs::canonicalize(&bin).unwrap_or(bin);
        }
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        target.join("debug").join("paas")
    })
}

/// Tests build the examples in parallel and remove their own images when done; removing an image
/// also deletes its untagged parent layers, which a concurrent build may be using as cache. Tag
/// the examples' shared first layers (same parent, same instruction: the same cached layer), so
/// they always have a tagged owner that no test removes.
fn anchor_build_cache(root: &Path) {
    for example in ["hello", "notes"] {
        let dockerfile =
            std::fs::read_to_string(root.join("examples").join(example).join("Dockerfile")).unwrap();
        // Everything up to the first instruction that depends on the app's files.
        let prefix: String = dockerfile
            .lines()
            .take_while(|l| !l.trim_start().starts_with("COPY") && !l.trim_start().starts_with("ADD"))
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("Dockerfile"), prefix).unwrap();
        let status = Command::new("docker")
            .args(["build", "-q", "--network", "host", "-t", &format!("paas-test/cache-{example}:anchor")])
            .arg(dir.path())
            // The classic builder, like paas's own builds: BuildKit keeps a separate cache.
            .env("DOCKER_BUILDKIT", "0")
            .stdout(Stdio::null())
            .status()
            .expect("running docker build");
        assert!(status.success(), "building the {example} cache anchor failed");
    }
}

pub fn rand_suffix() -> String {
    format!("{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// A copy of `examples/<name>` in a temporary directory, safe to modify.
pub fn example_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&workspace_root().join("examples").join(name), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// The token of a CLI config file (`token = "..."`), read by hand: the file is flat string keys.
pub fn config_token(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == "token")
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no token in {}:\n{text}", path.display()))
}

/// `git ARGS` in `dir`, with a committer set and no prompts.
pub fn git(dir: &Path, args: &[&str]) -> Run {
    Command::new("git")
        .args(["-c", "user.email=dev@example.com", "-c", "user.name=Dev", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("running git")
        .into()
}

/// The result of one CLI invocation.
#[derive(Debug)]
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
    #[track_caller]
    pub fn expect_ok(self) -> Self {
        assert!(self.ok, "command failed:\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self
    }
    /// Asserts a clean failure: non-zero exit and an `error:` sentence mentioning `needle`.
    #[track_caller]
    pub fn expect_err(self, needle: &str) -> Self {
        assert!(!self.ok, "command unexpectedly succeeded:\n{}\n{}", self.stdout, self.stderr);
        assert!(
            self.stderr.contains("error: ") && self.stderr.contains(needle),
            "stderr does not explain with {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// A command running `bin`, handed `passed` as systemd's socket activation does: the socket is
/// descriptor 3 and `LISTEN_FDS` says how many follow.
fn socket_command(bin: &Path, passed: Option<&std::net::TcpListener>) -> Command {
    let Some(listener) = passed else { return Command::new(bin) };
    let fd = std::os::fd::AsRawFd::as_raw_fd(listener);
    let moved = if fd == 3 { String::new() } else { format!("exec 3<&{fd} {fd}<&- && ") };
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(format!("{moved}LISTEN_FDS=1 exec \"$0\" \"$@\"")).arg(bin);
    cmd
}

/// One `paas up` with its own data dir, config, node name and ports.
pub struct Platform {
    pub dir: tempfile::TempDir,
    pub node: String,
    pub api_url: String,
    pub ingress: String,
    /// The HTTPS ingress, `127.0.0.1:<port>`.
    pub https: String,
    /// The local CA's certificate (what HTTPS clients trust).
    pub ca_file: PathBuf,
    /// The agent listener (mutual TLS), `https://127.0.0.1:<port>`.
    pub agent_url: String,
    api_addr: String,
    child: Option<Child>,
    apps: Vec<String>,
    /// Extra nodes joined with `paas agent`: the process and its node name.
    agents: Vec<(Child, String)>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    /// The binary `paas up` runs from (the built one unless a test gives another).
    bin: PathBuf,
    /// The lock on this platform's share of the test network range (see [`network_slot`]).
    _network_slot: Option<std::fs::File>,
    /// The ingress's listening socket when the test passes it in (socket activation).
    passed: Option<std::net::TcpListener>,
    /// The PostgreSQL server the state lives in, when the platform runs on one (after the
    /// fields above: it stops after the platform).
    pub pg: Option<pg::PgServer>,
    /// What agents are given to join (`--join`): every control plane's agent address.
    join_urls: Option<String>,
}

impl Platform {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts `paas up` with extra flags (e.g. `--deploy-timeout 20`).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// Like [`Platform::start_with`], with environment variables for `paas up` (secrets that
    /// must not be on its command line).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_from(paas_bin(), extra, env)
    }

    /// Starts `paas up` from the binary at `bin` (a copy a test may replace while it runs).
    pub fn start_from(bin: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut p = Self::prepare(bin, extra, env, None);
        p.launch();
        p
    }

    /// Starts `paas up` with its HTTP ingress on a listening socket this test made and passes
    /// in, as systemd's socket activation does (`LISTEN_FDS`); every restart gets the same
    /// socket, which stays open in between.
    pub fn start_with_passed_ingress() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listening socket");
        let addr = listener.local_addr().unwrap().to_string();
        // Open across exec, for `paas up` to inherit (see `launch`).
        rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::empty()).unwrap();
        let mut p = Self::prepare(paas_bin(), &["--http-addr", &addr], &[], Some(listener));
        p.launch();
        p
    }

    fn prepare(
        bin: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        passed: Option<std::net::TcpListener>,
    ) -> Self {
        paas_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env: Vec<(String, String)> =
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        // In the environment, which a binary from before network pools ignores.
        let slot = (!extra.contains(&"--network-pool")).then(|| {
            let (lock, pool) = network_slot();
            env.push(("PAAS_NETWORK_POOL".into(), pool));
            lock
        });
        let mut p = Platform {
            dir,
            node: format!("test-{}", rand_suffix()),
            api_url: String::new(),
            ingress: "127.0.0.1:0".into(),
            https: "127.0.0.1:0".into(),
            ca_file: PathBuf::new(),
            agent_url: "https://127.0.0.1:0".into(),
            api_addr: "127.0.0.1:0".into(),
            child: None,
            apps: Vec::new(),
            agents: Vec::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env,
            bin: bin.to_path_buf(),
            _network_slot: slot,
            passed,
            pg: None,
            join_urls: None,
        };
        // `PAAS_TEST_STORE=postgres` runs a test's platform on PostgreSQL instead of SQLite.
        if std::env::var("PAAS_TEST_STORE").as_deref() == Ok("postgres") {
            p.on_postgres();
        }
        p
    }

    /// Keeps the state in a PostgreSQL server of its own (`--database-url`, in the environment).
    fn on_postgres(&mut self) {
        let pg = pg::PgServer::start();
        self.env.push(("PAAS_DATABASE_URL".into(), pg.url("postgres")));
        self.pg = Some(pg);
    }

    fn launch(&mut self) {
        let mut cmd = socket_command(&self.bin, self.passed.as_ref());
        let agent_addr = self.agent_url.trim_start_matches("https://").to_string();
        cmd.args(["up", "--output", "json", "--api-addr", &self.api_addr, "--https-addr", &self.https]);
        // A test may fix the ingress's port itself (an ACME server must know where to look).
        if !self.extra.iter().any(|a| a == "--http-addr") {
            cmd.args(["--http-addr", &self.ingress]);
        }
        cmd.args(["--agent-addr", &agent_addr])
            .args(["--node-name", &self.node, "--build-network", "host"])
            .stderr(
                std::fs::File::create(self.dir.path().join("up.log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            );
        self.control_plane_args(&mut cmd);
        let mut child = cmd.spawn().expect("starting paas up");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reading paas up output");
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("paas up did not start ({e}): {line}\n{}", self.log()));
        self.api_url = ready["api_url"].as_str().unwrap().to_string();
        self.api_addr = self.api_url.split_once("://").map_or(self.api_url.as_str(), |(_, a)| a).to_string();
        self.ingress = ready["ingress_addr"].as_str().unwrap().to_string();
        self.https = ready["https_addr"].as_str().unwrap().to_string();
        self.ca_file = PathBuf::from(ready["ca_file"].as_str().unwrap());
        self.agent_url = ready["agent_url"].as_str().unwrap().to_string();
        self.child = Some(child);
    }

    /// What `paas up` and `paas server` both get: the data dir, the test's flags and
    /// environment, the CLI config's home, logging, and stdout to read the addresses from.
    fn control_plane_args(&self, cmd: &mut Command) {
        self.control_plane_args_in(cmd, "data")
    }

    /// The control plane's flags and environment, with data directory `data` under the test's.
    fn control_plane_args_in(&self, cmd: &mut Command, data: &str) {
        cmd.arg("--data-dir")
            .arg(self.dir.path().join(data))
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("PAAS_LOG", "info")
            .stdout(Stdio::piped());
    }

    /// The process id of `paas up` (control plane, agent and ingress in one process).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("paas up is running").id()
    }

    /// The API's address (`127.0.0.1:port`).
    pub fn api_addr(&self) -> &str {
        &self.api_addr
    }

    /// The admin API token `paas up` wrote to the CLI config.
    pub fn token(&self) -> String {
        config_token(&self.dir.path().join("config/paas/config.toml"))
    }

    /// The platform's own log (stderr of `paas up`), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    /// Stops `paas up` the way Ctrl-C does and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "paas up exited with {status}:\n{}", self.log());
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            panic!("paas up did not stop within 20s after SIGINT:\n{}", self.log());
        }
    }

    /// Kills `paas up` with SIGKILL, as a crash or the OOM killer would: no graceful shutdown,
    /// nothing recorded on the way out. App and database containers keep running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The admin token of this platform, for calling its API directly.
    pub fn admin_token(&self) -> String {
        let token = std::fs::read_to_string(self.dir.path().join("data").join("admin-token"));
        token.expect("the admin token").trim().to_string()
    }

    /// Starts `paas up` again on the same data dir and ports (stopping it first, if it runs).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Waits until the app's database primary (and replica, when it has one) is healthy and
    /// returns `paas db info`. The first start builds the image: allow a few minutes.
    pub fn wait_db_healthy(&self, app: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let info = self.paas(&["db", "info", "--app", app, "-o", "json"]).expect_ok().json();
            let replica_ok = info["replica"].is_null() || info["replica"]["healthy"] == true;
            if info["primary"]["healthy"] == true && replica_ok {
                return info;
            }
            assert!(Instant::now() < deadline, "the database never became healthy: {info}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Runs SQL with `paas db psql` (tuples only) and returns its trimmed output.
    pub fn psql(&self, app: &str, extra: &[&str], sql: &str) -> String {
        let mut args = vec!["db", "psql", "--app", app];
        args.extend_from_slice(extra);
        args.extend(["--", "-tAc", sql]);
        self.paas(&args).expect_ok().stdout.trim().to_string()
    }

    /// A one-time join token from `paas nodes token --ttl TTL`.
    pub fn join_token(&self, ttl: &str) -> String {
        let made = self.paas(&["nodes", "token", "--ttl", ttl, "-o", "json"]).expect_ok().json();
        made["token"].as_str().expect("a join token").to_string()
    }

    /// Joins another node with `paas agent` (no ingress) and a fresh join token, whose
    /// containers publish on `private_addr` (another loopback address, like a second machine's
    /// private address), and waits until the control plane lists it. Returns its node name.
    pub fn join_agent(&mut self, private_addr: &str) -> String {
        self.join_agent_with(private_addr, &[])
    }

    /// Joins a node with extra `paas agent` flags (`--memory 64M`, say).
    pub fn join_agent_with(&mut self, private_addr: &str, extra: &[&str]) -> String {
        self.join_agent_at(&self.join_url(), private_addr, extra)
    }

    /// Joins a node that reaches the control plane at `server` (a proxy a test can cut, say).
    pub fn join_agent_at(&mut self, server: &str, private_addr: &str, extra: &[&str]) -> String {
        let node = format!("{}-b{}", self.node, self.agents.len() + 1);
        let token = self.join_token("10m");
        let child = self.spawn_agent(server, &node, private_addr, extra, Some(token.trim()), None);
        self.agents.push((child, node.clone()));
        let deadline = Instant::now() + Duration::from_secs(30);
        // Listed once the control plane recorded it; its identity file is written after the answer.
        let identity = self.dir.path().join(&node).join("node-identity.json");
        while !self.paas(&["nodes", "list"]).expect_ok().stdout.contains(&node) || !identity.exists() {
            assert!(Instant::now() < deadline, "node {node} did not join:\n{}", self.agent_log(&node));
            std::thread::sleep(Duration::from_millis(200));
        }
        node
    }

    /// Starts `paas agent` for `node`, logging to `<node>.log`, handed `passed` (an ingress's
    /// socket) when given.
    fn spawn_agent(
        &self,
        server: &str,
        node: &str,
        private_addr: &str,
        extra: &[&str],
        token: Option<&str>,
        passed: Option<&std::net::TcpListener>,
    ) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{node}.log")))
            .expect("agent log");
        let mut cmd = socket_command(paas_bin(), passed);
        cmd.args(["agent", "--join", server, "--node-name", node, "--private-addr", private_addr])
            .args(["--build-network", "host", "--state-dir"])
            .arg(self.dir.path().join(node))
            .args(extra)
            .env("PAAS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(token) = token {
            cmd.env("PAAS_JOIN_TOKEN", token);
        }
        cmd.spawn().expect("starting paas agent")
    }

    /// Kills a joined node's agent with SIGKILL; its containers keep running.
    pub fn kill_agent(&mut self, node: &str) {
        let (child, _) = self.agents.iter_mut().find(|(_, n)| n == node).expect("a joined node");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Loses a joined node as a dead machine would: its agent killed with SIGKILL and its
    /// containers gone.
    pub fn kill_node(&mut self, node: &str) {
        self.kill_agent(node);
        let ids = docker(&["ps", "-aq", "--filter", &format!("label={}={node}", protocol::labels::NODE)]);
        let mut rm = vec!["rm", "-f"];
        rm.extend(ids.split_whitespace());
        docker(&rm);
    }

    /// Starts a joined node's agent again (killing it first), on its state dir, reaching the
    /// control plane at `server` (`None`: directly).
    pub fn restart_agent(&mut self, node: &str, server: Option<&str>, private_addr: &str) {
        self.kill_agent(node);
        let server = server.map_or_else(|| self.join_url(), str::to_string);
        let child = self.spawn_agent(&server, node, private_addr, &[], None, None);
        let slot = self.agents.iter_mut().find(|(_, n)| n == node).expect("a joined node");
        slot.0 = child;
    }

    /// The node of each running, healthy replica of `app`, sorted.
    pub fn placement(&self, app: &str) -> Vec<String> {
        let ps = self.paas(&["ps", "--app", app, "-o", "json"]).expect_ok().json();
        let ps = ps.as_array().unwrap().iter();
        let healthy = ps.filter(|c| c["state"] == "running" && c["healthy"] == true);
        let mut nodes: Vec<String> = healthy.map(|c| c["node"].as_str().unwrap().to_string()).collect();
        nodes.sort();
        nodes
    }

    /// One node as `paas nodes list -o json` shows it.
    pub fn node_view(&self, node: &str) -> serde_json::Value {
        let nodes = self.paas(&["nodes", "list", "-o", "json"]).expect_ok().json();
        nodes.as_array().unwrap().iter().find(|n| n["name"] == node).cloned().expect("the node is listed")
    }

    pub fn agent_log(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{node}.log"))).unwrap_or_default()
    }

    /// A fresh app name this platform cleans up after.
    pub fn app_name(&mut self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", rand_suffix());
        self.apps.push(name.clone());
        name
    }

    /// `name` as an app this platform cleans up after (for tests that need related names).
    pub fn app_named(&mut self, name: &str) -> String {
        self.apps.push(name.to_string());
        name.to_string()
    }

    /// Runs `paas ARGS` against this platform.
    pub fn paas(&self, args: &[&str]) -> Run {
        self.paas_env(args, &[])
    }

    /// `paas ARGS` run inside `dir` (where a linked paas.toml names the app).
    pub fn paas_in(&self, dir: &Path, args: &[&str]) -> Run {
        Command::new(paas_bin())
            .args(args)
            .current_dir(dir)
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env_remove("PAAS_TOKEN")
            .env_remove("PAAS_APP")
            .output()
            .expect("running paas")
            .into()
    }

    pub fn paas_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(paas_bin());
        cmd.args(args).env("XDG_CONFIG_HOME", self.dir.path().join("config")).env_remove("PAAS_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("running paas").into()
    }

    /// `paas ARGS` at a terminal of 31 x 97 (a pseudo-terminal), following `steps`: `["wait",
    /// TEXT]`, `["send", TEXT]`, `["resize", ROWS, COLS]` (see tests/scripts/pty_run.py). Its
    /// stdout is everything the terminal showed.
    pub fn paas_at_terminal(&self, steps: serde_json::Value, args: &[&str]) -> Output {
        Command::new("python3")
            .arg(workspace_root().join("tests/scripts/pty_run.py"))
            .arg(steps.to_string())
            .arg(paas_bin())
            .args(args)
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env_remove("PAAS_TOKEN")
            .output()
            .expect("running python3 for a pseudo-terminal")
    }

    /// `paas logs ARGS --output json`: the lines, one JSON object each.
    pub fn logs(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["logs"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--output", "json"]);
        let out = self.paas(&all).expect_ok();
        out.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }

    /// The `XDG_CONFIG_HOME` whose CLI config holds this platform's server and token, for
    /// `paas` commands a test starts itself.
    pub fn config_home(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// The platform's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Ids of the app's running containers on this platform's node.
    pub fn containers(&self, app: &str) -> Vec<String> {
        let node = format!("label={}={}", protocol::labels::NODE, self.node);
        let app = format!("label={}={app}", protocol::labels::APP);
        docker(&["ps", "-q", "--filter", &node, "--filter", &app])
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    pub fn host(&self, app: &str) -> String {
        format!("{app}.localhost")
    }

    /// GET through the ingress with the given Host header.
    pub fn get(&self, host: &str, path: &str) -> http::Response {
        http::get(&self.ingress, host, path)
    }

    /// Polls the ingress until `host` answers 200 with a body containing `needle`.
    #[track_caller]
    pub fn wait_for_body(&self, host: &str, needle: &str, timeout: Duration) -> http::Response {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.get(host, "/");
            if r.status == 200 && r.body.contains(needle) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{host} never served {needle:?}; last answer {r:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for (mut agent, node) in std::mem::take(&mut self.agents) {
            let _ = agent.kill();
            let _ = agent.wait();
            docker_rm_labelled("container", &format!("paas.node={node}"));
            docker_rm_labelled("network", &format!("paas.node={node}"));
            docker_rm_labelled("volume", &format!("paas.node={node}"));
        }
        // Only what this platform made: containers, networks and volumes with its node label,
        // images of its apps.
        docker_rm_labelled("container", &format!("paas.node={}", self.node));
        docker_rm_labelled("network", &format!("paas.node={}", self.node));
        docker_rm_labelled("volume", &format!("paas.node={}", self.node));
        for app in &self.apps {
            docker_rm_labelled("image", &format!("paas.app={app}"));
        }
        // A failed test's logs and state, kept for a look when asked.
        if std::thread::panicking() && std::env::var_os("PAAS_KEEP_FAILED").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir")).keep();
            eprintln!("kept the failed test's directory: {}", kept.display());
        }
    }
}

/// A `paas.toml` for the hello example: `replicas` web replicas checked on /healthz every
/// second, live as soon as healthy, drained for up to `drain` before they stop.
pub fn replicas_manifest(replicas: u32, drain: &str) -> String {
    format!(
        "[processes.web]\nreplicas = {replicas}\nhealthcheck = {{ path = \"/healthz\", interval = \"1s\" }}\n\
         [deploy]\nstability_window = \"0s\"\ndrain_timeout = \"{drain}\"\nstop_grace = \"2s\"\n"
    )
}

/// A tiny app on the local base image (no package download): its release number in a file,
/// healthy by a command, `extra` Dockerfile lines after the shared first step. It copies
/// `v.txt`, which the test writes (a release number, say) before deploying.
pub fn tiny_app(marker: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "FROM debian:bookworm-slim\nRUN echo {marker} > /shared\n{extra}COPY v.txt /v.txt\nCMD [\"sleep\", \"infinity\"]\n"
    );
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    let manifest = r#"
[processes.web]
healthcheck = { type = "command", command = ["true"], interval = "1s" }
[deploy]
stability_window = "500ms"
drain_timeout = "1s"
stop_grace = "1s"
"#;
    std::fs::write(dir.path().join("paas.toml"), manifest).unwrap();
    dir
}

/// Runs `work(i)` for every `i` in `1..=n`, `at_once` at a time.
pub fn parallel(n: usize, at_once: usize, work: impl Fn(usize) + Sync) {
    let next = std::sync::atomic::AtomicUsize::new(1);
    std::thread::scope(|s| {
        for _ in 0..at_once {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i > n {
                    break;
                }
                work(i);
            });
        }
    });
}

/// Platforms of parallel tests share one Docker engine, where two control planes handing out
/// the same subnets would collide: each takes one of 64 /20s of 10.124.0.0/14 (64 environments
/// of /26 each), held by a lock file until it is dropped (or its process dies). A /20 still
/// holding a network a crashed test left behind is skipped.
fn network_slot() -> (std::fs::File, String) {
    use rustix::fs::{flock, FlockOperation};
    let dir = std::env::temp_dir().join("paas-test-network-slots");
    std::fs::create_dir_all(&dir).expect("a directory for network slot locks");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let ids = docker(&["network", "ls", "-q", "--filter", "label=paas.managed=true"]);
        let mut args = vec!["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}"];
        args.extend(ids.split_whitespace());
        let used = if args.len() > 4 { docker(&args) } else { String::new() };
        let start = rand::random::<usize>() % 64;
        for k in (0..64).map(|i| (start + i) % 64) {
            let prefix = format!("10.{}.", 124 + k / 16);
            let in_slot = |subnet: &str| {
                let third =
                    subnet.strip_prefix(&prefix).and_then(|r| r.split('.').next()?.parse::<usize>().ok());
                third.is_some_and(|t| t / 16 == k % 16)
            };
            if used.split_whitespace().any(in_slot) {
                continue;
            }
            let file =
                std::fs::File::create(dir.join(format!("{k}.lock"))).expect("a network slot lock file");
            if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
                return (file, format!("{prefix}{}.0/20", (k % 16) * 16));
            }
        }
        assert!(Instant::now() < deadline, "no free test network slot for 10 minutes");
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn docker_rm_labelled(kind: &str, label: &str) {
    let filter = format!("label={label}");
    let (list, mut args) = match kind {
        "container" => (docker(&["ps", "-aq", "--filter", &filter]), vec!["rm", "-f"]),
        "network" => (docker(&["network", "ls", "-q", "--filter", &filter]), vec!["network", "rm"]),
        "volume" => (docker(&["volume", "ls", "-q", "--filter", &filter]), vec!["volume", "rm", "-f"]),
        _ => (docker(&["images", "-q", "--filter", &filter]), vec!["rmi", "-f"]),
    };
    let ids: Vec<&str> = list.split_whitespace().collect();
    if ids.is_empty() {
        return;
    }
    args.extend(ids);
    docker(&args);
}

/// Runs the docker CLI, returning stdout.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("running docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loopback port free right now (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `check` answers something, or fails with `what` after `secs`.
#[track_caller]
pub fn wait_for<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// CPU seconds (user + system) process `pid` used so far, from `/proc` (benchmarks).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at `) `.
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

//! A platform as separate processes, as on several machines: `paas server` (the control plane
//! alone) and `paas agent` with the ingress, on a listening socket the test passes in as
//! systemd's socket activation does (so restarting that agent refuses no connection: they wait
//! in the socket's backlog); workers join as usual ([`Platform::join_agent`]).

use crate::{paas_bin, Platform};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A second control plane on the platform's PostgreSQL database, killed when dropped.
pub struct SecondServer {
    pub child: std::process::Child,
    pub api_url: String,
    pub agent_url: String,
}

impl Drop for SecondServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Platform {
    /// Starts `paas server` and an ingress agent named [`Platform::node`] on 127.0.0.1.
    pub fn start_split(extra: &[&str]) -> Self {
        Self::split(extra, false, false).0
    }

    /// [`Platform::start_split`] with the state in a PostgreSQL server of its own
    /// (`paas server --database-url`), whatever `PAAS_TEST_STORE` says.
    pub fn start_split_on_postgres(extra: &[&str]) -> Self {
        Self::split(extra, true, false).0
    }

    /// Two `paas server`s on one PostgreSQL database (the harness's own leads; the second, with
    /// its own data directory and ports, stands by), then the ingress agent. Agents join with
    /// both agent addresses and the CLI config names both API addresses.
    pub fn start_two_control_planes(extra: &[&str]) -> (Self, SecondServer) {
        let (p, second) = Self::split(extra, true, true);
        (p, second.expect("a second server"))
    }

    /// `agent --join`'s value: every control plane's agent address.
    pub fn join_url(&self) -> String {
        self.join_urls.clone().unwrap_or_else(|| self.agent_url.clone())
    }

    fn split(extra: &[&str], postgres: bool, two: bool) -> (Self, Option<SecondServer>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listening socket");
        // Open across exec, for the agent to inherit.
        rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::empty()).unwrap();
        let ingress = listener.local_addr().unwrap().to_string();
        let mut p = Self::prepare(paas_bin(), extra, &[], Some(listener));
        if postgres && p.pg.is_none() {
            p.on_postgres();
        }
        p.ingress = ingress;
        p.launch_server();
        let second = two.then(|| p.launch_second_server());
        if let Some(s) = &second {
            p.join_urls = Some(format!("{},{}", p.agent_url, s.agent_url));
            let toml = format!("server = \"{},{}\"\ntoken = {:?}\n", p.api_url, s.api_url, p.admin_token());
            std::fs::write(p.dir.path().join("config/paas/config.toml"), toml).unwrap();
        }
        let token = p.join_token("10m");
        let child = p.ingress_agent(Some(&token));
        p.agents.push((child, p.node.clone()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.paas(&["nodes", "list"]).expect_ok().stdout.contains(&p.node) {
            assert!(Instant::now() < deadline, "the ingress agent did not join:\n{}", p.agent_log(&p.node));
            std::thread::sleep(Duration::from_millis(200));
        }
        (p, second)
    }

    /// Starts `paas server` alone, no node (benchmarks simulate agents against it).
    pub fn start_server_only(extra: &[&str]) -> Self {
        let mut p = Self::prepare(paas_bin(), extra, &[], None);
        p.launch_server();
        p
    }

    /// Kills `paas server` with SIGKILL, as a crash or a lost machine would.
    pub fn kill_server(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops `paas server` the way systemd does (SIGINT here) and starts it again on the same
    /// data dir and addresses.
    pub fn restart_server(&mut self) {
        self.stop();
        self.launch_server();
    }

    /// Stops the ingress agent as systemd does (SIGTERM: it answers what it has in flight, then
    /// exits) and starts it again on the passed socket.
    pub fn restart_ingress_agent(&mut self) {
        let node = self.node.clone();
        let (running, _) = self.agents.iter_mut().find(|(_, n)| *n == node).expect("the ingress agent");
        let _ = Command::new("kill").args(["-TERM", &running.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while running.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "the ingress agent did not stop within 30s after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let child = self.ingress_agent(None);
        let slot = self.agents.iter_mut().find(|(_, n)| *n == node).expect("the ingress agent");
        slot.0 = child;
    }

    fn ingress_agent(&self, token: Option<&str>) -> std::process::Child {
        let extra = ["--http-addr", self.ingress.as_str()];
        self.spawn_agent(&self.join_url(), &self.node, "127.0.0.1", &extra, token, self.passed.as_ref())
    }

    /// Starts a second `paas server` on this platform's database, with data directory `data2`.
    fn launch_second_server(&self) -> SecondServer {
        let log = std::fs::File::create(self.dir.path().join("second.log")).expect("a log");
        let (child, api, agent) = self.spawn_server("data2", "127.0.0.1:0", "127.0.0.1:0", log);
        SecondServer { child, api_url: api, agent_url: agent }
    }

    /// Starts `paas server` on data directory `data` (under the test's), answering the process
    /// and the API and agent URLs it printed.
    fn spawn_server(
        &self,
        data: &str,
        api_addr: &str,
        agent_addr: &str,
        log: std::fs::File,
    ) -> (std::process::Child, String, String) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["server", "--api-addr", api_addr, "--agent-addr", agent_addr]).stderr(Stdio::from(log));
        self.control_plane_args_in(&mut cmd, data);
        let mut child = cmd.spawn().expect("starting paas server");
        // Both lines it prints, so it never writes to a closed pipe.
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let (mut first, mut second) = (String::new(), String::new());
        out.read_line(&mut first).expect("reading paas server output");
        out.read_line(&mut second).expect("reading paas server output");
        let addresses = first.trim().strip_prefix("paas control plane at ");
        let Some((api, agent)) = addresses.and_then(|a| a.split_once("/, agent address ")) else {
            panic!("paas server did not start: {first}\n{}", self.log());
        };
        (child, api.to_string(), agent.to_string())
    }

    fn launch_server(&mut self) {
        let agent_addr = self.agent_url.trim_start_matches("https://").to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("up.log"))
            .expect("the server's log");
        let (child, api, agent) = self.spawn_server("data", &self.api_addr, &agent_addr, log);
        let api = api.as_str();
        self.api_url = api.to_string();
        self.api_addr = api.split_once("://").map_or(api, |(_, a)| a).to_string();
        self.agent_url = agent;
        let config = self.dir.path().join("config/paas");
        std::fs::create_dir_all(&config).unwrap();
        let toml = format!("server = {:?}\ntoken = {:?}\n", self.api_url, self.admin_token());
        std::fs::write(config.join("config.toml"), toml).unwrap();
        self.child = Some(child);
    }
}

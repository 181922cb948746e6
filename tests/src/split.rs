//! A platform as separate processes, as on several machines: `paas server` (the control plane
//! alone) and `paas agent` with the ingress, on a listening socket the test passes in as
//! systemd's socket activation does (so restarting that agent refuses no connection: they wait
//! in the socket's backlog); workers join as usual ([`Platform::join_agent`]).

use crate::{paas_bin, Platform};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

impl Platform {
    /// Starts `paas server` and an ingress agent named [`Platform::node`] on 127.0.0.1.
    pub fn start_split(extra: &[&str]) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listening socket");
        // Open across exec, for the agent to inherit.
        rustix::io::fcntl_setfd(&listener, rustix::io::FdFlags::empty()).unwrap();
        let ingress = listener.local_addr().unwrap().to_string();
        let mut p = Self::prepare(paas_bin(), extra, &[], Some(listener));
        p.ingress = ingress;
        p.launch_server();
        let token = p.join_token("10m");
        let child = p.ingress_agent(Some(&token));
        p.agents.push((child, p.node.clone()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !p.paas(&["nodes", "list"]).expect_ok().stdout.contains(&p.node) {
            assert!(Instant::now() < deadline, "the ingress agent did not join:\n{}", p.agent_log(&p.node));
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// Starts `paas server` alone, no node (benchmarks simulate agents against it).
    pub fn start_server_only(extra: &[&str]) -> Self {
        let mut p = Self::prepare(paas_bin(), extra, &[], None);
        p.launch_server();
        p
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
        self.spawn_agent(&self.agent_url, &self.node, "127.0.0.1", &extra, token, self.passed.as_ref())
    }

    fn launch_server(&mut self) {
        let agent_addr = self.agent_url.trim_start_matches("https://").to_string();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("up.log"))
            .expect("the server's log");
        let mut cmd = Command::new(&self.bin);
        cmd.args(["server", "--api-addr", &self.api_addr, "--agent-addr", &agent_addr])
            .stderr(Stdio::from(log));
        self.control_plane_args(&mut cmd);
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
        self.api_url = api.to_string();
        self.api_addr = api.split_once("://").map_or(api, |(_, a)| a).to_string();
        self.agent_url = agent.to_string();
        let config = self.dir.path().join("config/paas");
        std::fs::create_dir_all(&config).unwrap();
        let toml = format!("server = {:?}\ntoken = {:?}\n", self.api_url, self.admin_token());
        std::fs::write(config.join("config.toml"), toml).unwrap();
        self.child = Some(child);
    }
}

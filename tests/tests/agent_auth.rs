//! Node identity on the agent API (mutual TLS on the agent address): each node joins with a
//! one-time join token and gets a certificate for a key it made, and with it reaches only its
//! own work. `paas up`'s node (A) and a node joined with `paas agent` (B) run a deploy, a
//! one-off run and a database backup together, while requests made with one node's certificate
//! for the other's assignment, reports, name, address, build, job, database task or backup are
//! refused with 403; a client without a certificate, with an expired one, with one another CA
//! signed, or with one the CA signed but never recorded is refused; a used or expired join
//! token is refused with 401 and a sentence; a removed node's certificate stops working. Keys
//! and certificates are 0600 in 0700 directories.

use paas_tests::Platform;
use protocol::agent::RegisterNode;
use protocol::tls::{agent_http, JoinRequest, JoinToken, NodeKey};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// An answer of the agent API: its status (0 when TLS refused the client) and body, or the
/// transport error.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

/// The agent API at `base`, called as a node with `client` (its TLS identity, or none).
struct Api {
    base: String,
    rt: tokio::runtime::Runtime,
}

impl Api {
    fn call(
        &self,
        client: &reqwest::Client,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client.request(method, format!("{}{path}", self.base)).json(body);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        self.rt.block_on(async {
            match req.send().await {
                Ok(r) => Answer { status: r.status().as_u16(), body: r.text().await.unwrap_or_default() },
                Err(e) => Answer { status: 0, body: format!("{:?}", anyhow_chain(&e)) },
            }
        })
    }

    /// Asserts the status and that a refusal explains itself in a sentence.
    #[track_caller]
    fn expect(
        &self,
        status: u16,
        client: &reqwest::Client,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Answer {
        self.expect_bearer(status, client, method, path, None, body)
    }

    #[track_caller]
    fn expect_bearer(
        &self,
        status: u16,
        client: &reqwest::Client,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &Value,
    ) -> Answer {
        let r = self.call(client, method, path, bearer, body);
        assert_eq!(r.status, status, "{method} {path}: {r:?}");
        if status >= 400 {
            let error: Value = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("not JSON: {r:?}"));
            assert!(error["error"].as_str().is_some_and(|e| e.len() > 20), "no sentence: {r:?}");
        }
        r
    }
}

/// The error and its sources, so a TLS alert's name shows.
fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}

/// A node's stored identity (key, certificate, CA), checked to be private.
fn identity(state_dir: &Path) -> Value {
    let file = state_dir.join("node-identity.json");
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

fn client_of(id: &Value) -> reqwest::Client {
    let key = NodeKey::from_pem(id["key"].as_str().unwrap()).unwrap();
    agent_http(id["ca"].as_str().unwrap(), Some((&key, id["certificate"].as_str().unwrap()))).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn watch(node: &str) -> String {
    format!("/agent/v1/nodes/{node}/watch?index=0")
}

/// A certificate for `node` signed with the platform's own CA key (read from its data
/// directory, as an attacker who stole it would) but never recorded; expired in 2021, or valid.
fn forged(data: &Path, ca_pem: &str, node: &str, expired: bool) -> reqwest::Client {
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(data.join("ca.key")).unwrap()).unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name.push(rcgen::DnType::CommonName, "paas control plane CA");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let issuer = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, node);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        (params.not_before, params.not_after) =
            (rcgen::date_time_ymd(2020, 1, 1), rcgen::date_time_ymd(2021, 1, 1));
    }
    let cert = params.signed_by(&key, &issuer, &ca_key).unwrap();
    let node_key = NodeKey::from_pem(&key.serialize_pem()).unwrap();
    agent_http(ca_pem, Some((&node_key, &cert.pem()))).unwrap()
}

/// A certificate for `node` that another CA signed.
fn foreign(ca_pem: &str, node: &str) -> reqwest::Client {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![node.to_string()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    agent_http(ca_pem, Some((&NodeKey::from_pem(&key.serialize_pem()).unwrap(), &cert.pem()))).unwrap()
}

/// Calls the public API as the admin.
fn admin_post(p: &Platform, admin: &str, path: &str, body: &Value) -> Value {
    let auth = format!("Bearer {admin}");
    let headers = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    let r = paas_tests::http::request(p.api_addr(), "POST", "localhost", path, &headers, &body.to_string());
    assert_eq!(r.status, 202, "{path}: {r:?}");
    serde_json::from_str(&r.body).unwrap()
}

fn join_request(node: &str, addr: &str, key: &NodeKey) -> Value {
    let reg = RegisterNode::new(node, addr, false);
    serde_json::to_value(JoinRequest { node: reg, key: key.proof(node) }).unwrap()
}

#[test]
fn each_node_reaches_only_its_own_work() {
    let mut p = Platform::start();
    // Made first and used last, when it has expired.
    let short = p.join_token("1m");
    let short_made = Instant::now();
    let b = p.join_agent("127.0.0.3");
    let a = p.node.clone();
    let data = p.dir.path().join("data");
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_string();
    let api = Api {
        base: p.agent_url.clone(),
        rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
    };
    let (a_id, b_id) = (identity(&data.join("agent")), identity(&p.dir.path().join(&b)));
    let ca = std::fs::read_to_string(data.join("ca.crt")).unwrap();
    assert_eq!(a_id["ca"].as_str(), Some(ca.as_str()));
    let (a_tls, b_tls) = (client_of(&a_id), client_of(&b_id));
    let anonymous = agent_http(&ca, None).unwrap();
    let none = json!({});

    // Files at rest: the owner's only. The long-lived join token is gone.
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("agent")), 0o700);
    assert_eq!(mode(&p.dir.path().join(&b)), 0o700);
    for file in ["secret.key", "admin-token", "ca.key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert!(!data.join("agent-token").exists());
    assert_eq!(mode(&p.dir.path().join("config/paas/config.toml")), 0o600);

    // The public address serves no agent route, and says where they went.
    let public = paas_tests::http::request(p.api_addr(), "GET", "localhost", &watch(&a), &[], "");
    assert_eq!(public.status, 404, "{public:?}");
    assert!(public.body.contains("agent address"), "{public:?}");

    // Each node reads its own assignment, and only its own.
    api.expect(200, &a_tls, "GET", &watch(&a), &none);
    api.expect(200, &b_tls, "GET", &watch(&b), &none);
    api.expect(403, &a_tls, "GET", &watch(&b), &none);
    api.expect(403, &b_tls, "GET", &watch(&a), &none);
    api.expect(403, &a_tls, "POST", &format!("/agent/v1/nodes/{b}/report"), &json!({ "containers": [] }));
    // No certificate: nothing but the CA and joining, whatever bearer token comes along.
    api.expect(401, &anonymous, "GET", &watch(&a), &none);
    api.expect_bearer(401, &anonymous, "GET", &watch(&a), Some(&admin), &none);
    api.expect_bearer(401, &anonymous, "GET", &watch(&a), Some(&short), &none);
    let served_ca = api.call(&anonymous, "GET", "/agent/v1/ca", None, &none);
    assert_eq!((served_ca.status, served_ca.body.as_str()), (200, ca.as_str()));
    // A certificate from another CA, or an expired one from this CA, fails the handshake; one
    // this CA signed but never recorded (a stolen CA key) is refused by the store.
    let r = api.call(&foreign(&ca, &a), "GET", &watch(&a), None, &none);
    assert_eq!(r.status, 0, "{r:?}");
    let r = api.call(&forged(&data, &ca, &a, true), "GET", &watch(&a), None, &none);
    assert_eq!(r.status, 0, "{r:?}");
    assert!(r.body.to_lowercase().contains("expired"), "{r:?}");
    let r = api.expect(401, &forged(&data, &ca, &a, false), "GET", &watch(&a), &none);
    assert!(r.body.contains("no longer on record"), "{r:?}");

    // Names and addresses: a node registers itself again, never another node or its address.
    let reg = |name: &str, addr: &str, ingress: bool| json!({ "name": name, "private_addr": addr, "ingress": ingress });
    api.expect(200, &a_tls, "POST", "/agent/v1/nodes", &reg(&a, "127.0.0.1", true));
    api.expect(403, &a_tls, "POST", "/agent/v1/nodes", &reg(&b, "127.0.0.3", false));
    api.expect(403, &a_tls, "POST", "/agent/v1/nodes", &reg(&a, "127.0.0.3", true));
    api.expect(401, &anonymous, "POST", "/agent/v1/nodes", &reg(&format!("{a}-x"), "127.0.0.9", false));
    // Joining needs a token, and a name that has no valid certificate.
    let key = NodeKey::generate().unwrap();
    api.expect(
        401,
        &anonymous,
        "POST",
        "/agent/v1/join",
        &join_request(&format!("{a}-x"), "127.0.0.9", &key),
    );
    let fresh = p.join_token("10m");
    let secret = JoinToken::parse(&fresh).unwrap().secret;
    let taken = join_request(&b, "127.0.0.9", &key);
    api.expect_bearer(403, &anonymous, "POST", "/agent/v1/join", Some(&secret), &taken);

    // Builds: only the node building a release fetches its source; names are checked before
    // they become a path.
    let app = p.app_name("auth");
    p.paas(&["apps", "create", &app]).expect_ok();
    // The database first: its image may need building, which goes on while the app deploys.
    p.paas(&["db", "create", "--app", &app, "--replicas", "0"]).expect_ok();
    let src = paas_tests::example_copy("hello");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let source = format!("/agent/v1/builds/{app}/production/1/source");
    let answers =
        [api.call(&a_tls, "GET", &source, None, &none), api.call(&b_tls, "GET", &source, None, &none)];
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, vec![200, 403], "exactly the build node fetches the source: {answers:?}");
    for path in
        ["/agent/v1/builds/a%2fb/production/1/source", &format!("/agent/v1/builds/{app}/a%2fb/1/source")]
    {
        let r = api.expect(422, &a_tls, "GET", path, &none);
        assert!(r.body.contains("invalid"), "{r:?}");
    }

    // Jobs: only the node running a job writes its output.
    let run = admin_post(
        &p,
        &admin,
        &format!("/api/v1/apps/{app}/envs/production/runs"),
        &json!({ "command": ["sleep", "20"] }),
    );
    let log = format!("/agent/v1/jobs/{}/log", run["id"].as_str().unwrap());
    let lines = json!({ "lines": ["from a node"] });
    let mut statuses = vec![
        api.call(&a_tls, "POST", &log, None, &lines).status,
        api.call(&b_tls, "POST", &log, None, &lines).status,
    ];
    statuses.sort();
    assert_eq!(statuses, vec![200, 403], "exactly the job's node writes its log");

    // Databases: a backup is dumped and verified by the node that holds its tasks; the other
    // node cannot upload, download or finish anything of it.
    let info = p.wait_db_healthy(&app);
    let holder = info["primary"]["node"].as_str().unwrap().to_string();
    let (other, other_tls) = if holder == a { (&b, &b_tls) } else { (&a, &a_tls) };
    let backup = p.paas(&["db", "backup", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(backup["status"], "stored", "{backup}");
    assert_eq!(backup["verification"], "ok", "{backup}");
    let id = backup["id"].as_str().unwrap();
    let dump =
        Path::new(backup["locations"][0].as_str().unwrap().strip_prefix("local:").unwrap()).to_path_buf();
    assert_eq!(mode(&dump), 0o600, "{}", dump.display());
    let data_path = format!("/agent/v1/backups/{id}/data");
    let r = api.expect(403, other_tls, "GET", &data_path, &none);
    assert!(r.body.contains(other.as_str()), "{r:?}");
    api.expect(403, other_tls, "PUT", &data_path, &none);
    api.expect(401, &anonymous, "GET", &data_path, &none);
    let psql = format!("/api/v1/apps/{app}/envs/production/db/psql");
    let task = admin_post(&p, &admin, &psql, &json!({ "args": ["-c", "SELECT 1"] }));
    let task = task["id"].as_str().unwrap();
    let result = format!("/agent/v1/db-tasks/{task}/result");
    api.expect(403, other_tls, "POST", &result, &json!({ "error": "forged by another node" }));
    api.expect(403, other_tls, "POST", &format!("/agent/v1/db-tasks/{task}/progress"), &none);

    // A node joining now (C, no agent process: this test holds its key) gets a certificate
    // that reads its own assignment only; the token it used is refused next time.
    let c = format!("{a}-c");
    let c_key = NodeKey::generate().unwrap();
    let joined = api.expect_bearer(
        200,
        &anonymous,
        "POST",
        "/agent/v1/join",
        Some(&secret),
        &join_request(&c, "127.0.0.4", &c_key),
    );
    let joined: Value = serde_json::from_str(&joined.body).unwrap();
    let c_tls = agent_http(&ca, Some((&c_key, joined["certificate"].as_str().unwrap()))).unwrap();
    api.expect(200, &c_tls, "GET", &watch(&c), &none);
    api.expect(403, &c_tls, "GET", &watch(&a), &none);
    let d_key = NodeKey::generate().unwrap();
    let d = format!("{a}-d");
    let used = api.expect_bearer(
        401,
        &anonymous,
        "POST",
        "/agent/v1/join",
        Some(&secret),
        &join_request(&d, "127.0.0.5", &d_key),
    );
    assert!(used.body.contains("used already"), "{used:?}");
    // An expired join token is refused with a sentence.
    std::thread::sleep(Duration::from_secs(62).saturating_sub(short_made.elapsed()));
    let short_secret = JoinToken::parse(&short).unwrap().secret;
    let expired = api.expect_bearer(
        401,
        &anonymous,
        "POST",
        "/agent/v1/join",
        Some(&short_secret),
        &join_request(&d, "127.0.0.5", &d_key),
    );
    assert!(expired.body.contains("expired"), "{expired:?}");

    // A removed node's certificate stops working on its next request, on an open connection.
    p.paas(&["nodes", "remove", &c]).expect_ok();
    let r = api.expect(401, &c_tls, "GET", &watch(&c), &none);
    assert!(r.body.contains("no longer on record"), "{r:?}");
    assert!(!p.paas(&["nodes", "list"]).expect_ok().stdout.contains(&c));

    // Both nodes kept working all along: the app serves, and the run finished on its node.
    let r = p.wait_for_body(&p.host(&app), "Hello from paas!", Duration::from_secs(60));
    assert_eq!(r.status, 200);
    assert!(p.agent_log(&b).contains("joined the control plane"), "{}", p.agent_log(&b));
}

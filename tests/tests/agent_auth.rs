//! Node identity on the agent API: each node joins with the join token and gets its own
//! credential, and with it reaches only its own work. `paas up`'s node (A) and a node joined
//! with `paas agent` (B) run a deploy, a one-off run and a database backup together, while
//! requests made with one node's credential for the other's assignment, reports, name, address,
//! build, job, database task or backup are refused with 403, the join token alone reads
//! nothing, and requests without a credential get 401. Keys, tokens and credentials are 0600 in
//! 0700 directories.

use paas_tests::{http, Platform};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

struct Api {
    addr: String,
}

impl Api {
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &Value) -> http::Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        http::request(&self.addr, method, "localhost", path, &headers, &body.to_string())
    }

    /// Asserts the status and that a refusal explains itself in a sentence.
    #[track_caller]
    fn expect(
        &self,
        status: u16,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> http::Response {
        let r = self.call(method, path, token, body);
        assert_eq!(r.status, status, "{method} {path}: {r:?}");
        if status >= 400 {
            let error: Value = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("not JSON: {r:?}"));
            assert!(error["error"].as_str().is_some_and(|e| e.len() > 20), "no sentence: {r:?}");
        }
        r
    }
}

fn credential(state_dir: &Path) -> String {
    let file = state_dir.join("node-credential.json");
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    stored["credential"].as_str().unwrap().to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

fn watch(node: &str) -> String {
    format!("/agent/v1/nodes/{node}/watch?index=0")
}

#[test]
fn each_node_reaches_only_its_own_work() {
    let mut p = Platform::start();
    let b = p.join_agent("127.0.0.3");
    let a = p.node.clone();
    let data = p.dir.path().join("data");
    let api = Api { addr: p.api_url.trim_start_matches("http://").to_string() };
    let a_cred = credential(&data.join("agent"));
    let b_cred = credential(&p.dir.path().join(&b));
    let join = std::fs::read_to_string(data.join("agent-token")).unwrap().trim().to_string();
    let admin = std::fs::read_to_string(data.join("admin-token")).unwrap().trim().to_string();
    let (a_tok, b_tok) = (Some(a_cred.as_str()), Some(b_cred.as_str()));
    let none = json!({});

    // Files at rest: the owner's only.
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("agent")), 0o700);
    assert_eq!(mode(&p.dir.path().join(&b)), 0o700);
    for file in ["secret.key", "admin-token", "agent-token"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&p.dir.path().join("config/paas/config.toml")), 0o600);

    // Each node reads its own assignment, and only its own.
    api.expect(200, "GET", &watch(&a), a_tok, &none);
    api.expect(200, "GET", &watch(&b), b_tok, &none);
    api.expect(403, "GET", &watch(&b), a_tok, &none);
    api.expect(403, "GET", &watch(&a), b_tok, &none);
    api.expect(403, "POST", &format!("/agent/v1/nodes/{b}/report"), a_tok, &json!({ "containers": [] }));
    // The join token reads nothing; no credential, or a user's token, is not an agent at all.
    api.expect(403, "GET", &watch(&a), Some(&join), &none);
    api.expect(
        403,
        "POST",
        &format!("/agent/v1/nodes/{a}/report"),
        Some(&join),
        &json!({ "containers": [] }),
    );
    api.expect(401, "GET", &watch(&a), None, &none);
    api.expect(401, "GET", &watch(&a), Some(&admin), &none);
    api.expect(401, "GET", &watch(&a), Some("paas_not-a-credential"), &none);

    // Names and addresses: a node registers itself again, never another node or its address.
    let reg = |name: &str, addr: &str, ingress: bool| json!({ "name": name, "private_addr": addr, "ingress": ingress });
    let again = api.expect(200, "POST", "/agent/v1/nodes", a_tok, &reg(&a, "127.0.0.1", true));
    assert!(!again.body.contains("credential"), "re-registering issues no new credential: {again:?}");
    api.expect(403, "POST", "/agent/v1/nodes", a_tok, &reg(&b, "127.0.0.3", false));
    api.expect(403, "POST", "/agent/v1/nodes", Some(&join), &reg(&b, "127.0.0.3", false));
    api.expect(403, "POST", "/agent/v1/nodes", a_tok, &reg(&a, "127.0.0.3", true));
    api.expect(403, "POST", "/agent/v1/nodes", Some(&join), &reg(&format!("{a}-x"), "127.0.0.3", false));
    api.expect(401, "POST", "/agent/v1/nodes", None, &reg(&format!("{a}-x"), "127.0.0.9", false));

    // Builds: only the node building a release fetches its source; names are checked before
    // they become a path.
    let app = p.app_name("auth");
    p.paas(&["apps", "create", &app]).expect_ok();
    // The database first: its image may need building, which goes on while the app deploys.
    p.paas(&["db", "create", "--app", &app, "--replicas", "0"]).expect_ok();
    let src = paas_tests::example_copy("hello");
    p.paas(&["deploy", src.path().to_str().unwrap(), "--app", &app]).expect_ok();
    let source = format!("/agent/v1/builds/{app}/production/1/source");
    let answers = [api.call("GET", &source, a_tok, &none), api.call("GET", &source, b_tok, &none)];
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, vec![200, 403], "exactly the build node fetches the source: {answers:?}");
    let fetched = answers.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(&fetched.body_bytes[..2], b"\x1f\x8b", "a gzipped tar");
    for path in
        ["/agent/v1/builds/%2e%2e/production/1/source", &format!("/agent/v1/builds/{app}/%2e%2e/1/source")]
    {
        let r = api.expect(422, "GET", path, a_tok, &none);
        assert!(r.body.contains("invalid"), "{r:?}");
    }

    // Jobs: only the node running a job writes its output.
    let run = api.expect(
        202,
        "POST",
        &format!("/api/v1/apps/{app}/envs/production/runs"),
        Some(&admin),
        &json!({ "command": ["sleep", "20"] }),
    );
    let run: Value = serde_json::from_str(&run.body).unwrap();
    let log = format!("/agent/v1/jobs/{}/log", run["id"].as_str().unwrap());
    let lines = json!({ "lines": ["from a node"] });
    let mut statuses =
        vec![api.call("POST", &log, a_tok, &lines).status, api.call("POST", &log, b_tok, &lines).status];
    statuses.sort();
    assert_eq!(statuses, vec![200, 403], "exactly the job's node writes its log");

    // Databases: a backup is dumped and verified by the node that holds its tasks; the other
    // node cannot upload, download or finish anything of it.
    let info = p.wait_db_healthy(&app);
    let holder = info["primary"]["node"].as_str().unwrap().to_string();
    let (other, other_tok) = if holder == a { (&b, b_tok) } else { (&a, a_tok) };
    let backup = p.paas(&["db", "backup", "--app", &app, "-o", "json"]).expect_ok().json();
    assert_eq!(backup["status"], "stored", "{backup}");
    assert_eq!(backup["verification"], "ok", "{backup}");
    let id = backup["id"].as_str().unwrap();
    let dump =
        Path::new(backup["locations"][0].as_str().unwrap().strip_prefix("local:").unwrap()).to_path_buf();
    assert_eq!(mode(&dump), 0o600, "{}", dump.display());
    assert_eq!(mode(&dump.with_extension("manifest.json")), 0o600);
    let data_path = format!("/agent/v1/backups/{id}/data");
    let r = api.expect(403, "GET", &data_path, other_tok, &none);
    assert!(r.body.contains(other.as_str()), "{r:?}");
    api.expect(403, "PUT", &data_path, other_tok, &none);
    api.expect(403, "GET", &data_path, Some(&join), &none);
    let psql = api.expect(
        202,
        "POST",
        &format!("/api/v1/apps/{app}/envs/production/db/psql"),
        Some(&admin),
        &json!({ "args": ["-c", "SELECT 1"] }),
    );
    let task: Value = serde_json::from_str(&psql.body).unwrap();
    let result = format!("/agent/v1/db-tasks/{}/result", task["id"].as_str().unwrap());
    api.expect(403, "POST", &result, other_tok, &json!({ "error": "forged by another node" }));
    let progress = format!("/agent/v1/db-tasks/{}/progress", task["id"].as_str().unwrap());
    api.expect(403, "POST", &progress, other_tok, &json!({}));

    // A node joining now gets its own credential, which reads its own assignment only.
    let c = format!("{a}-c");
    let joined = api.expect(200, "POST", "/agent/v1/nodes", Some(&join), &reg(&c, "127.0.0.4", false));
    let joined: Value = serde_json::from_str(&joined.body).unwrap();
    let c_cred = joined["credential"].as_str().unwrap().to_string();
    api.expect(200, "GET", &watch(&c), Some(&c_cred), &none);
    api.expect(403, "GET", &watch(&a), Some(&c_cred), &none);

    // Both nodes kept working all along: the app serves, and the run finished on its node.
    let r = p.wait_for_body(&p.host(&app), "Hello from paas!", std::time::Duration::from_secs(60));
    assert_eq!(r.status, 200);
    assert!(p.agent_log(&b).contains("joined the control plane"), "{}", p.agent_log(&b));
}

//! Certificate rotation: with node certificates that live 30 seconds (`PAAS_NODE_CERT_SECS`),
//! `paas up`'s own agent and a joined agent both renew theirs (new key, over the current
//! connection) before they end, and keep working after their first certificate has expired,
//! which is then refused.

use paas_tests::Platform;
use protocol::tls::{agent_http, NodeKey};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// The node's stored identity; a joined agent writes it once it has joined, which can be after
/// `join_agent` returns on a busy machine, so this waits for it.
fn identity(state_dir: &Path) -> Value {
    let file = state_dir.join("node-identity.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match std::fs::read(&file) {
            Ok(bytes) => return serde_json::from_slice(&bytes).unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("reading {}: {e}", file.display()),
        }
    }
}

fn client_of(id: &Value) -> reqwest::Client {
    let key = NodeKey::from_pem(id["key"].as_str().unwrap()).unwrap();
    agent_http(id["ca"].as_str().unwrap(), Some((&key, id["certificate"].as_str().unwrap()))).unwrap()
}

#[test]
fn agents_renew_their_certificates_before_they_end() {
    let mut p = Platform::start_with_env(&[], &[("PAAS_NODE_CERT_SECS", "30")]);
    let b = p.join_agent("127.0.0.3");
    let (a_dir, b_dir) = (p.dir.path().join("data/agent"), p.dir.path().join(&b));
    let (a_first, b_first) = (identity(&a_dir), identity(&b_dir));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let watch = |id: &Value, node: &str| -> Result<u16, String> {
        let url = format!("{}/agent/v1/nodes/{node}/watch?index=0", p.agent_url);
        rt.block_on(async { client_of(id).get(url).send().await.map(|r| r.status().as_u16()) })
            .map_err(|e| format!("{e:?}"))
    };
    assert_eq!(watch(&b_first, &b), Ok(200));

    // Past the first certificates' end: both agents hold new ones and still work.
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
    }
    for (node, dir, first) in [(&p.node, &a_dir, &a_first), (&b, &b_dir, &b_first)] {
        let now = identity(dir);
        assert_ne!(now["certificate"], first["certificate"], "{node} renewed");
        assert_ne!(now["key"], first["key"], "{node} made a new key");
        assert_eq!(watch(&now, node), Ok(200), "{node} works with its renewed certificate");
        let old = watch(first, node);
        assert!(old.is_err(), "{node}'s first certificate has ended: {old:?}");
    }
    assert!(p.agent_log(&b).contains("renewed this node's certificate"), "{}", p.agent_log(&b));
    let nodes = p.paas(&["nodes", "list", "-o", "json"]).expect_ok().json();
    for n in nodes.as_array().unwrap() {
        assert_eq!(n["status"], "ready", "{nodes}");
    }
}

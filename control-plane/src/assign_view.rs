//! What every node's assignment shares at one state index (environments, subnets, nodes,
//! databases, kept images, releases with their config unsealed, and the ingress nodes' route
//! table and certificates), read from the store once however many nodes watch; and what each
//! watching node was last sent, so a node whose assignment did not change is not answered.
//!
//! Without it, a change every node may see (an app created, a release placed) made each of a
//! thousand watching agents read all of it again and receive an unchanged assignment.

use crate::state::AppState;
use crate::store::{DatabaseRow, EnvRow, NodeRow};
use protocol::agent::{Assignment, Route, StaticRoute, TlsCertificate};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type EnvKey = (String, String);
type ReleaseKey = (String, String, u32);

/// A view is read again after this long even when the index did not move, so a change that
/// reached the store without a bump still reaches the nodes within a watch or two, as it did
/// when every watch read the store itself.
const VIEW_MAX_AGE: Duration = Duration::from_secs(2);

/// A release as its containers run it: its row and its config snapshot, unsealed.
pub struct OpenRelease {
    pub release: protocol::api::Release,
    pub config: BTreeMap<String, String>,
}

/// The ingress nodes' shared part of an assignment.
pub struct IngressView {
    pub routes: Vec<Route>,
    pub certificates: Vec<TlsCertificate>,
    pub static_prefetch: Vec<StaticRoute>,
}

/// The store as of one state index, as assignments read it.
pub struct View {
    /// Read before anything else: the view holds every change up to this index.
    index: u64,
    read_at: Instant,
    pub envs: Vec<EnvRow>,
    legacy: HashSet<EnvKey>,
    subnets: HashMap<EnvKey, String>,
    pub nodes: Vec<NodeRow>,
    pub databases: Vec<DatabaseRow>,
    pub kept_images: Vec<String>,
    /// The kept images per environment.
    kept_by_env: HashMap<EnvKey, Vec<String>>,
    /// Per node, the environments it built a release of.
    built_by: HashMap<String, HashSet<EnvKey>>,
    releases: Mutex<HashMap<ReleaseKey, Arc<OpenRelease>>>,
    ingress: tokio::sync::OnceCell<Arc<IngressView>>,
}

impl View {
    /// Reads the view now.
    pub async fn read(state: &AppState) -> anyhow::Result<Self> {
        let index = state.index();
        let store = &state.store;
        let envs = store.all_envs().await?;
        let legacy =
            envs.iter().filter(|e| e.legacy_names).map(|e| (e.app.clone(), e.name.clone())).collect();
        let mut kept_by_env: HashMap<EnvKey, Vec<String>> = HashMap::new();
        for (app, env, id) in store.kept_images_by_env().await? {
            kept_by_env.entry((app, env)).or_default().push(id);
        }
        let mut kept_images: Vec<String> = kept_by_env.values().flatten().cloned().collect();
        kept_images.sort();
        kept_images.dedup();
        let mut built_by: HashMap<String, HashSet<EnvKey>> = HashMap::new();
        for (node, app, env) in store.builders().await? {
            built_by.entry(node).or_default().insert((app, env));
        }
        Ok(Self {
            index,
            read_at: Instant::now(),
            envs,
            legacy,
            subnets: store.env_subnets().await?,
            nodes: store.list_nodes().await?,
            databases: store.all_databases().await?,
            kept_images,
            kept_by_env,
            built_by,
            releases: Mutex::default(),
            ingress: tokio::sync::OnceCell::new(),
        })
    }

    /// An environment's Docker network and image repository.
    pub fn docker_names(&self, app: &str, env: &str) -> (String, String) {
        let legacy = self.legacy.contains(&(app.to_string(), env.to_string()));
        let names = protocol::DockerNames { app, env, legacy };
        (names.network(), names.image_repo())
    }

    /// An environment's subnet ("" before it has one).
    pub fn subnet(&self, app: &str, env: &str) -> String {
        self.subnets.get(&(app.to_string(), env.to_string())).cloned().unwrap_or_default()
    }

    /// The images `node`'s prune keeps: the kept images of the environments it runs or ran
    /// something of (`envs`) or built for. Not every kept image of the platform, so a deploy
    /// changes the assignments of the nodes it concerns only, not of a thousand others.
    pub fn kept_for(&self, node: &str, envs: &HashSet<EnvKey>) -> Vec<String> {
        let built = self.built_by.get(node);
        let mut ids: Vec<String> = envs
            .iter()
            .chain(built.into_iter().flatten())
            .filter_map(|e| self.kept_by_env.get(e))
            .flatten()
            .cloned()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// A release with its config unsealed, read once per view.
    pub async fn release(
        &self,
        state: &AppState,
        app: &str,
        env: &str,
        version: u32,
    ) -> anyhow::Result<Arc<OpenRelease>> {
        let key = (app.to_string(), env.to_string(), version);
        if let Some(r) = self.lock_releases().get(&key) {
            return Ok(r.clone());
        }
        let release = state.store.get_release(app, env, version).await?;
        let (sealed, _) = state.store.release_inputs(app, env, version).await?;
        let config = state.secrets.open_map(&sealed)?;
        let open = Arc::new(OpenRelease { release, config });
        self.lock_releases().insert(key, open.clone());
        Ok(open)
    }

    fn lock_releases(&self) -> std::sync::MutexGuard<'_, HashMap<ReleaseKey, Arc<OpenRelease>>> {
        self.releases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The route table, certificates and static directories every ingress node is given.
    pub async fn ingress(&self, state: &AppState) -> anyhow::Result<Arc<IngressView>> {
        let read = || async {
            let mut static_prefetch = Vec::new();
            for env in &self.envs {
                let Some(target) = env.target_release else { continue };
                if let Some(st) = crate::assign::static_route(
                    &self.release(state, &env.app, &env.name, target).await?.release,
                ) {
                    static_prefetch.push(st);
                }
            }
            Ok::<_, anyhow::Error>(Arc::new(IngressView {
                routes: crate::assign::routes(state, self).await?,
                certificates: crate::edge::assigned(state).await?,
                static_prefetch,
            }))
        };
        Ok(self.ingress.get_or_try_init(read).await?.clone())
    }
}

/// The shared view and what each node was last sent.
#[derive(Default)]
pub struct Watches {
    view: tokio::sync::Mutex<Option<Arc<View>>>,
    /// Per node: the state index and digest of the assignment it was last answered.
    sent: Mutex<HashMap<String, (u64, u64)>>,
}

impl Watches {
    /// A view holding every change up to `index`: the last one read if it does and is recent,
    /// else one read now (by one watcher while the others wait for it).
    pub async fn view(&self, state: &AppState, index: u64) -> anyhow::Result<Arc<View>> {
        let mut slot = self.view.lock().await;
        if let Some(v) = slot.as_ref().filter(|v| v.index >= index && v.read_at.elapsed() < VIEW_MAX_AGE) {
            return Ok(v.clone());
        }
        let view = Arc::new(View::read(state).await?);
        *slot = Some(view.clone());
        Ok(view)
    }

    /// Whether `node`, which applied what it was sent at `applied`, was sent exactly
    /// `assignment` then; if so it counts as sent at `index` too.
    pub fn unchanged(&self, node: &str, applied: u64, index: u64, assignment: &Assignment) -> bool {
        let digest = digest(assignment);
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        match sent.get_mut(node) {
            Some(last) if *last == (applied, digest) => {
                *last = (index, digest);
                true
            }
            _ => false,
        }
    }

    /// Records what `node` is answered.
    pub fn sent(&self, node: &str, index: u64, assignment: &Assignment) {
        let digest = digest(assignment);
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).insert(node.to_string(), (index, digest));
    }
}

/// A digest of what a node is sent or reports, of its JSON. A digest that differs only costs
/// work that was not needed.
pub fn digest<T: serde::Serialize + ?Sized>(value: &T) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(value).unwrap_or_default().hash(&mut hasher);
    hasher.finish()
}

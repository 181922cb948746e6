//! Scheduling: where a release's containers and builds go, and what each node is assigned
//! (containers, builds, and for ingress nodes the route table and the HTTPS certificates).

use crate::assign_view::{OpenRelease, View};
use crate::error::{DomainError, Result};
use crate::nodes::{self, Status};
use crate::state::AppState;
use crate::store::{EnvRow, InstanceRow, JobKind, NodeRow};
use protocol::agent::{
    Assignment, BuildKind, BuildTask, Capacity, ContainerSpec, DbRole, JobSpec, Route, StaticRoute,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// A node that has not reported for this long is not pruned on request.
pub const NODE_READY_WINDOW: Duration = Duration::from_secs(30);

pub fn node_is_ready(node: &NodeRow) -> bool {
    let Some(seen) = crate::store::unix_seconds(&node.last_seen) else { return false };
    time::OffsetDateTime::now_utc().unix_timestamp() - seen <= NODE_READY_WINDOW.as_secs() as i64
}

/// The nodes that take new work: reporting, neither draining nor lost.
pub async fn ready_nodes(state: &AppState) -> Result<Vec<NodeRow>> {
    let nodes = state.store.list_nodes().await?;
    Ok(nodes.into_iter().filter(|n| nodes::status(state, n) == Status::Ready).collect())
}

/// The nodes whose ingress serves and confirms route tables: reporting (draining ones too).
pub async fn ingress_nodes(state: &AppState) -> Result<Vec<String>> {
    let nodes = state.store.list_nodes().await?;
    let serving =
        |n: &NodeRow| n.ingress && matches!(nodes::status(state, n), Status::Ready | Status::Draining);
    Ok(nodes.into_iter().filter(serving).map(|n| n.name).collect())
}

/// How long a change of the routes waits for the ingress nodes to apply it.
const ROUTE_PROPAGATION: Duration = Duration::from_secs(10);

/// Publishes a change of the route table (a switch, a domain, a swap) and waits, up to
/// [`ROUTE_PROPAGATION`], until every ingress node applied it, so what the caller answers is
/// already served. Returns the nodes that did not confirm in time. Only the ingress nodes are
/// woken: the other nodes' assignments hold no routes, domains or certificates.
pub async fn publish_routes(state: &AppState) -> Result<Vec<String>> {
    state.bump_routes();
    let at = state.index();
    let late = state.applied.wait_all(&ingress_nodes(state).await?, at, ROUTE_PROPAGATION).await;
    if !late.is_empty() {
        tracing::warn!(nodes = ?late, "ingress nodes did not confirm the new routes in time");
    }
    Ok(late)
}

/// The ready nodes, or why there is nothing to run `what` on.
async fn ready_nodes_for(state: &AppState, what: &str) -> Result<Vec<NodeRow>> {
    let nodes = ready_nodes(state).await?;
    if nodes.is_empty() {
        return Err(DomainError::Unavailable(format!(
            "no node is ready to {what}; is a node agent running (`paas nodes list` shows them)?"
        )));
    }
    Ok(nodes)
}

/// Places the given replica numbers of a release's process on ready nodes with room for the
/// process's reservation: the node with the fewest replicas of this process and release
/// first (spread), then the one with the most memory free. Replicas of the environment's older
/// releases do not count against a node, since these replace them (a blue/green deploy on a
/// full node still fits). A replica that fits nowhere is an error naming the shortfall.
pub async fn place(
    state: &AppState,
    env: &EnvRow,
    process: &str,
    release: u32,
    replicas: std::ops::RangeInclusive<u32>,
) -> Result<Vec<InstanceRow>> {
    place_beside(state, env, process, release, replicas, None).await
}

/// Places a replacement for `old` (a restart, a move off a node): like [`place`], with `old`
/// left out of the spread, since it goes once the replacement serves.
pub async fn place_replacement(state: &AppState, env: &EnvRow, old: &InstanceRow) -> Result<InstanceRow> {
    let mut placed =
        place_beside(state, env, &old.process, old.release, old.replica..=old.replica, Some(&old.name))
            .await?;
    Ok(placed.pop().expect("one replica placed"))
}

async fn place_beside(
    state: &AppState,
    env: &EnvRow,
    process: &str,
    release: u32,
    replicas: std::ops::RangeInclusive<u32>,
    replacing: Option<&str>,
) -> Result<Vec<InstanceRow>> {
    let nodes = ready_nodes_for(state, "run containers").await?;
    let manifest = state.store.get_release(&env.app, &env.name, release).await?.manifest;
    let reserve =
        manifest.processes.get(process).map_or_else(protocol::manifest::default_reserve, |p| p.reserve);
    let mut used = state.store.allocations().await?;
    let mut spread: HashMap<String, u32> = HashMap::new();
    for i in state.store.instances_for_env(&env.app, &env.name).await? {
        if i.release < release {
            if let Some(a) = used.get_mut(&i.node) {
                a.reserved.millicpus = a.reserved.millicpus.saturating_sub(i.reserve_millicpus as u64);
                a.reserved.memory_bytes =
                    a.reserved.memory_bytes.saturating_sub(i.reserve_memory_bytes as u64);
            }
        } else if i.release == release && i.process == process && Some(i.name.as_str()) != replacing {
            *spread.entry(i.node).or_default() += 1;
        }
    }
    let names = env.docker_names();
    let mut out = Vec::new();
    for replica in replicas {
        let free = |n: &NodeRow| {
            let taken = used.get(&n.name).map(|a| a.reserved).unwrap_or_default();
            free_of(n.capacity(), taken)
        };
        let fits = |n: &&NodeRow| {
            let f = free(n);
            f.millicpus >= reserve.millicpus && f.memory_bytes >= reserve.memory_bytes
        };
        let Some(node) = nodes.iter().filter(fits).min_by_key(|n| {
            (
                spread.get(&n.name).copied().unwrap_or(0),
                std::cmp::Reverse(free(n).memory_bytes),
                n.name.clone(),
            )
        }) else {
            return Err(DomainError::Conflict(shortfall(env, process, reserve, &nodes, free)));
        };
        let node = node.name.clone();
        let a = used.entry(node.clone()).or_default();
        a.reserved.millicpus += reserve.millicpus;
        a.reserved.memory_bytes += reserve.memory_bytes;
        *spread.entry(node.clone()).or_default() += 1;
        out.push(InstanceRow::pending(&names, process, release, replica, node, reserve));
    }
    Ok(out)
}

/// What a node has left; a node that reported no capacity is not counted (as if unlimited).
fn free_of(capacity: Capacity, taken: Capacity) -> Capacity {
    let left = |cap: u64, used: u64| if cap == 0 { u64::MAX } else { cap.saturating_sub(used) };
    Capacity {
        millicpus: left(capacity.millicpus, taken.millicpus),
        memory_bytes: left(capacity.memory_bytes, taken.memory_bytes),
    }
}

/// Why a replica fits on no node, with the most any node has free.
fn shortfall(
    env: &EnvRow,
    process: &str,
    need: Capacity,
    nodes: &[NodeRow],
    free: impl Fn(&NodeRow) -> Capacity,
) -> String {
    let what = format!("{process} of {}/{} reserves", env.app, env.name);
    let most_memory = nodes.iter().max_by_key(|n| free(n).memory_bytes).expect("nodes is not empty");
    let most_cpu = nodes.iter().max_by_key(|n| free(n).millicpus).expect("nodes is not empty");
    if free(most_memory).memory_bytes < need.memory_bytes {
        return format!(
            "{what} {} of memory for each replica, and no ready node has that free: the most is {} on {}",
            protocol::bytes_human(need.memory_bytes),
            protocol::bytes_human(free(most_memory).memory_bytes),
            most_memory.name
        );
    }
    if free(most_cpu).millicpus < need.millicpus {
        return format!(
            "{what} {} CPU for each replica, and no ready node has that free: the most is {} on {}",
            cpus(need.millicpus),
            cpus(free(most_cpu).millicpus),
            most_cpu.name
        );
    }
    format!(
        "{what} {} of memory and {} CPU for each replica, and no ready node has both free; lower reserve_memory or reserve_cpus in paas.toml, or add a node",
        protocol::bytes_human(need.memory_bytes),
        cpus(need.millicpus)
    )
}

fn cpus(millicpus: u64) -> String {
    format!("{}", millicpus as f64 / 1000.0)
}

/// Picks the node that builds (or resolves) a release's image, or runs a one-off command.
pub async fn build_node(state: &AppState) -> Result<String> {
    Ok(ready_nodes_for(state, "build on").await?.swap_remove(0).name)
}

/// Picks the nodes of a new database's primary and replica: the replica goes on another node
/// when there is one. A database that reuses kept volumes goes where they are (`on`: the
/// primary's node, the replica's).
pub async fn database_nodes(
    state: &AppState,
    on: (Option<String>, Option<String>),
) -> Result<(String, String)> {
    let nodes = ready_nodes_for(state, "run the database").await?;
    let primary = on.0.unwrap_or_else(|| nodes[0].name.clone());
    let other =
        || nodes.iter().find(|n| n.name != primary).map_or_else(|| primary.clone(), |n| n.name.clone());
    let replica = on.1.unwrap_or_else(other);
    Ok((primary, replica))
}

/// Everything `node` should be doing now, read from the store now.
pub async fn assignment(state: &AppState, node: &str) -> anyhow::Result<Assignment> {
    assignment_in(state, node, &View::read(state).await?).await
}

/// Everything `node` should be doing as of `view`, plus what only concerns it (its replicas,
/// builds, jobs, databases and tasks), read now.
pub async fn assignment_in(state: &AppState, node: &str, view: &View) -> anyhow::Result<Assignment> {
    let store = &state.store;
    let nodes = &view.nodes;
    let primaries = primaries_elsewhere(node, view);
    let mut containers = Vec::new();
    // The environments this node runs something of: their kept images stay on it.
    let mut envs = HashSet::new();
    for i in store.instances_for_node(node).await? {
        envs.insert((i.app.clone(), i.env.clone()));
        let open = view.release(state, &i.app, &i.env, i.release).await?;
        let release = &open.release;
        let Some(image) = release.image_id.clone() else { continue };
        let Some(process) = release.manifest.processes.get(&i.process) else { continue };
        let mut env_vars = BTreeMap::new();
        env_vars.insert("PORT".to_string(), process.port.to_string());
        let config = config_for(&open, &primaries, &i.app, &i.env);
        containers.push(ContainerSpec {
            network: view.docker_names(&i.app, &i.env).0,
            subnet: view.subnet(&i.app, &i.env),
            name: i.name,
            app: i.app,
            env: i.env,
            process: i.process,
            release: i.release,
            replica: i.replica,
            image,
            command: process.command.clone(),
            port: process.port,
            env_vars,
            config,
            healthcheck: process.healthcheck.clone(),
            drain_timeout_ms: release.manifest.deploy.drain_timeout_ms,
            stop_grace_ms: release.manifest.deploy.stop_grace_ms,
            limits: process.limits,
        });
    }
    let builds = store
        .pending_builds(node)
        .await?
        .into_iter()
        .map(|r| BuildTask {
            tag: format!("{}:v{}", view.docker_names(&r.app, &r.env).1, r.version),
            kind: if r.source == "build" {
                BuildKind::Dockerfile
            } else {
                BuildKind::Image { reference: r.source.clone() }
            },
            app: r.app,
            env: r.env,
            release: r.version,
        })
        .collect();
    let this = nodes.iter().find(|n| n.name == node);
    let is_ingress = this.is_some_and(|n| n.ingress);
    let generation = this.map_or(1, |n| n.generation.max(1) as u64);
    let (routes, certificates, static_prefetch) = if is_ingress {
        let ingress = view.ingress(state).await?;
        (ingress.routes.clone(), ingress.certificates.clone(), ingress.static_prefetch.clone())
    } else {
        Default::default()
    };
    let acme_challenges = match (&state.acme, is_ingress) {
        (Some(acme), true) => acme.challenges(),
        _ => Vec::new(),
    };
    let mut jobs = Vec::new();
    for j in store.pending_jobs(node).await? {
        if j.kind == JobKind::Psql {
            // Its command is the server's container, then psql's argv (`attach::start_psql`).
            let Some((server, argv)) = j.command.split_first() else { continue };
            jobs.push(JobSpec {
                id: j.id.clone(),
                app: j.app.clone(),
                env: j.env.clone(),
                release: j.release,
                command: argv.to_vec(),
                process: "psql".into(),
                attach: j.attach_tty.map(|tty| protocol::api::Attach { tty }),
                exec_in: Some(server.clone()),
                ..JobSpec::default()
            });
            continue;
        }
        envs.insert((j.app.clone(), j.env.clone()));
        let open = view.release(state, &j.app, &j.env, j.release).await?;
        let release = &open.release;
        let Some(image) = release.image_id.clone() else { continue };
        let env_vars = BTreeMap::from([("PAAS_RELEASE".to_string(), j.release.to_string())]);
        let (process, timeout_secs) = match j.kind {
            JobKind::Cron => {
                let job = crate::scheduled::job_name(&j.id).and_then(|name| release.manifest.cron.get(name));
                (crate::scheduled::process(&j.id), job.map_or(0, |c| c.timeout_secs))
            }
            JobKind::Release => ("release".into(), 0),
            JobKind::Run | JobKind::Psql => ("run".into(), 0),
        };
        let config = config_for(&open, &primaries, &j.app, &j.env);
        jobs.push(JobSpec {
            network: view.docker_names(&j.app, &j.env).0,
            subnet: view.subnet(&j.app, &j.env),
            id: j.id,
            app: j.app,
            env: j.env,
            release: j.release,
            image,
            mask_output: j.kind == JobKind::Release,
            limits: release.manifest.web().map(|w| w.limits).unwrap_or_default(),
            process,
            timeout_secs,
            attach: j.attach_tty.map(|tty| protocol::api::Attach { tty }),
            exec_in: None,
            command: j.command,
            env_vars,
            config,
        });
    }
    let mut databases = Vec::new();
    for db in store.databases_for_node(node).await? {
        // A switchover stopped the primary: it runs nowhere until the replica took over.
        if db.node == node && !db.fenced {
            databases.push(database_spec(state, &db, DbRole::Primary).await?);
        }
        // Off the primary's node a replica follows the primary's published port: not before
        // that port is known.
        let reachable = db.replica_node == db.node || db.host_port != 0;
        if db.replicas > 0 && db.replica_node == node && reachable {
            databases.push(database_spec(state, &db, DbRole::Replica).await?);
        }
    }
    let mut db_tasks = Vec::new();
    for t in store.pending_db_tasks(node).await? {
        // A task of a database deleted since: the scheduler ends it.
        let Ok(db) = store.get_database(&t.app, &t.env).await else { continue };
        db_tasks.push(protocol::agent::DbTask {
            id: t.id.clone(),
            kind: t.kind,
            server: database_spec(state, &db, t.role).await?,
            backup: t.backup.clone(),
            params: t.params.clone(),
        });
    }
    let keep_images = view.kept_for(node, &envs);
    let send_images = crate::images::wanted_from(state, node, nodes.len(), &view.kept_images).await?;
    let prune = state.upkeep.prune_request(node);
    Ok(Assignment {
        containers,
        builds,
        routes,
        jobs,
        static_prefetch,
        databases,
        db_tasks,
        keep_images,
        prune,
        certificates,
        acme_challenges,
        purges: state.upkeep.purges(node),
        generation,
        send_images,
        registry: state.config.registry.clone(),
    })
}

/// Per environment whose database primary runs on another node than `node`: where that
/// primary is published (its node's private address and port).
fn primaries_elsewhere(node: &str, view: &View) -> HashMap<(String, String), String> {
    let addr: HashMap<&str, &str> =
        view.nodes.iter().map(|n| (n.name.as_str(), n.private_addr.as_str())).collect();
    let mut out = HashMap::new();
    for db in &view.databases {
        if db.node != node && db.host_port != 0 {
            if let Some(a) = addr.get(db.node.as_str()) {
                let host = if a.contains(':') { format!("[{a}]") } else { a.to_string() };
                out.insert((db.app.clone(), db.env.clone()), format!("{host}:{}", db.host_port));
            }
        }
    }
    out
}

/// A release's config as a container of `app`/`env` on this node sees it.
fn config_for(
    open: &OpenRelease,
    primaries: &HashMap<(String, String), String>,
    app: &str,
    env: &str,
) -> BTreeMap<String, String> {
    let mut config = open.config.clone();
    reach_primary(&mut config, primaries.get(&(app.to_string(), env.to_string())));
    config
}

/// Points the platform's `DATABASE_URL` (host `db-primary` on the environment's network, which
/// only the primary's node has) at the primary's published address when the container runs on
/// another node. A URL the user set themselves is left as it is.
fn reach_primary(config: &mut BTreeMap<String, String>, published: Option<&String>) {
    let (Some(published), Some(url)) = (published, config.get_mut("DATABASE_URL")) else { return };
    let local = format!("@{}:5432/", DbRole::Primary.as_str());
    if url.contains(&local) {
        *url = url.replacen(&local, &format!("@{published}/"), 1);
    }
}

/// The route table: every environment with a served release, to its healthy replicas, with the
/// release's `[ingress]` limits and the environment's maintenance mode.
pub async fn routes(state: &AppState, view: &View) -> anyhow::Result<Vec<Route>> {
    let nodes = &view.nodes;
    let addr: HashMap<&str, &str> =
        nodes.iter().map(|n| (n.name.as_str(), n.private_addr.as_str())).collect();
    // Replicas on a suspected or lost node are left out while the route has others.
    let doubtful: HashSet<&str> = nodes
        .iter()
        .filter(|n| matches!(nodes::status(state, n), Status::Suspect | Status::Lost))
        .map(|n| n.name.as_str())
        .collect();
    // Per serving release: its healthy web replicas (on a doubtful node?, address, replica).
    type Backends = Vec<(bool, String, u32)>;
    let mut by_env: HashMap<(String, String, u32), Backends> = HashMap::new();
    for i in state.store.all_instances().await? {
        if i.process != "web" || i.unrouted {
            continue;
        }
        if let (true, Some(port), Some(a)) = (i.healthy, i.host_port, addr.get(i.node.as_str())) {
            let entry = (doubtful.contains(i.node.as_str()), format!("{a}:{port}"), i.replica);
            by_env.entry((i.app, i.env, i.release)).or_default().push(entry);
        }
    }
    let mut domains: HashMap<(String, String), Vec<String>> = HashMap::new();
    for d in state.store.list_domains(None).await? {
        domains.entry((d.app, d.env)).or_default().push(d.domain);
    }
    let mut routes = Vec::new();
    for env in &view.envs {
        let Some(current) = env.current_release else { continue };
        let mut backends = by_env.remove(&(env.app.clone(), env.name.clone(), current)).unwrap_or_default();
        if backends.iter().any(|(doubtful, ..)| !doubtful) {
            backends.retain(|(doubtful, ..)| !doubtful);
        }
        backends.sort();
        let (backends, replicas) = backends.into_iter().map(|(_, b, r)| (b, r)).unzip();
        let release = &view.release(state, &env.app, &env.name, current).await?.release;
        let static_files = static_route(release);
        let route = Route {
            host: env.hostname(&state.config.base_domain),
            app: env.app.clone(),
            env: env.name.clone(),
            release: current,
            backends,
            replicas,
            static_files,
            limits: release.manifest.ingress,
            maintenance: env.maintenance,
        };
        // Custom domains serve exactly what the generated hostname serves.
        for domain in domains.remove(&(route.app.clone(), route.env.clone())).unwrap_or_default() {
            routes.push(Route { host: domain, ..route.clone() });
        }
        routes.push(route);
    }
    Ok(routes)
}

/// Where the ingress gets a release's static files, if its manifest has any.
pub fn static_route(release: &protocol::api::Release) -> Option<StaticRoute> {
    let st = release.manifest.static_files.as_ref()?;
    Some(StaticRoute {
        image: release.image_id.clone()?,
        dir: st.dir.clone(),
        prefix: st.prefix.clone(),
        max_age_secs: st.max_age_secs,
        errors: st.errors.clone(),
    })
}

/// The container of a database row's primary or replica (the passwords unsealed for the agent).
pub async fn database_spec(
    state: &AppState,
    db: &crate::store::DatabaseRow,
    role: DbRole,
) -> anyhow::Result<protocol::agent::DatabaseSpec> {
    let open = |sealed: &[u8]| -> anyhow::Result<String> {
        // Empty only in the moment before `dbroles::fill_missing_secrets` ran.
        if sealed.is_empty() {
            return Ok(String::new());
        }
        Ok(String::from_utf8(state.secrets.open(sealed)?)?)
    };
    let password = open(&db.password)?;
    // On the primary's node the replica reaches it by alias on the environment network;
    // elsewhere through the primary node's private address.
    let (primary_host, primary_port) = if role == DbRole::Replica && db.replica_node != db.node {
        let nodes = state.store.list_nodes().await?;
        let addr =
            nodes.iter().find(|n| n.name == db.node).map(|n| n.private_addr.clone()).unwrap_or_default();
        (addr, db.host_port)
    } else {
        (DbRole::Primary.to_string(), 5432)
    };
    Ok(protocol::agent::DatabaseSpec {
        name: db.docker_names().database(role.as_str()),
        role,
        image: format!("paas/postgres:{}", db.version),
        volume: db.volume(role),
        network: db.docker_names().network(),
        subnet: state.store.env_subnet(&db.app, &db.env).await?,
        version: db.version,
        database: db.database_name(),
        user: db.database_name(),
        password,
        superuser_password: open(&db.superuser_password)?,
        replication_password: open(&db.replication_password)?,
        max_connections: db.max_connections,
        primary_host,
        primary_port,
        host_port: if role == DbRole::Primary { db.host_port } else { 0 },
        archive_timeout_secs: state.config.db_archive_timeout_secs,
        // On one node a failover cannot happen, so a lease would only stop the primary.
        lease_secs: if db.replicas > 0 && role == DbRole::Primary && db.replica_node != db.node {
            crate::failover::lease(state.config.node_lost_after).as_secs() as u32
        } else {
            0
        },
        app: db.app.clone(),
        env: db.env.clone(),
    })
}

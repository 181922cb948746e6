//! `paas up` (control plane + agent + ingress in one process), `paas server` and `paas agent`.

use crate::args::{AgentArgs, DataDir, Global, NodeOpts, Output, ServerArgs, UpArgs};
use crate::config::{self, CliConfig};
use anyhow::Context;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    if let Some(inherited) =
        crate::sockets::take(addr).with_context(|| format!("using the passed socket for the {what}"))?
    {
        return Ok(TcpListener::from_std(inherited)?);
    }
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} for the {what}; is another paas running? choose another address")
    })
}

/// Cancels `token` on Ctrl-C or SIGTERM, so shutdown is ordered.
fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down; app containers keep running");
        token.cancel();
    });
}

/// Plain HTTP only on loopback unless the operator says so: elsewhere tokens and session cookies
/// would cross a network in clear.
fn check_api_exposure(addr: SocketAddr, data: &DataDir) -> anyhow::Result<()> {
    let t = &data.api_tls;
    anyhow::ensure!(
        addr.ip().is_loopback() || t.api_tls || t.insecure_http,
        "the API would listen on {addr} over plain HTTP, so tokens and session cookies would cross the network in clear: add --api-tls (HTTPS with a certificate from the platform's local CA), or --insecure-http if a TLS proxy of your own is in front"
    );
    Ok(())
}

/// The names in the API's certificate under `--api-tls`: localhost, its address (loopback when
/// it listens on every address), and the --api-name given.
fn api_tls_names(addr: SocketAddr, data: &DataDir) -> Option<Vec<String>> {
    if !data.api_tls.api_tls {
        return None;
    }
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
        names.push(addr.ip().to_string());
    }
    names.extend(data.api_tls.api_name.iter().map(|n| n.trim().to_ascii_lowercase()));
    Some(names)
}

fn control_plane_config(
    data: &DataDir,
    ingress_http_port: u16,
    ingress_https_port: u16,
) -> anyhow::Result<control_plane::Config> {
    let data_dir = match &data.data_dir {
        Some(d) => d.clone(),
        None => config::default_data_dir("paas")?,
    };
    anyhow::ensure!(
        !data.base_domain.is_empty() && !data.base_domain.starts_with('.'),
        "--base-domain {:?} is not a domain name",
        data.base_domain
    );
    let b = &data.backups;
    let backup_s3 = match (&b.backup_s3_endpoint, &b.backup_s3_bucket) {
        (Some(endpoint), Some(bucket)) => {
            anyhow::ensure!(
                !b.backup_s3_access_key.is_empty() && !b.backup_s3_secret_key.is_empty(),
                "an S3 backup store needs PAAS_BACKUP_S3_ACCESS_KEY and PAAS_BACKUP_S3_SECRET_KEY in the environment"
            );
            Some(control_plane::s3::S3Config {
                endpoint: endpoint.clone(),
                bucket: bucket.clone(),
                region: b.backup_s3_region.clone(),
                access_key: b.backup_s3_access_key.clone(),
                secret_key: b.backup_s3_secret_key.clone(),
                prefix: b.backup_s3_prefix.clone(),
                ca_file: b.backup_s3_ca_file.clone(),
            })
        }
        _ => None,
    };
    anyhow::ensure!(
        data.log_retention >= Duration::from_secs(60) && data.log_max_mib >= 1,
        "--log-retention must be at least a minute and --log-max-mib at least 1"
    );
    anyhow::ensure!(data.drains.drain_max_backlog >= 1, "--drain-max-backlog must be at least 1");
    if let Some(ca) = &data.drains.drain_ca_file {
        control_plane::drains::check_ca_file(ca).context("--drain-ca-file")?;
    }
    let acme = match (&data.acme.acme_directory, &data.acme.acme_email) {
        (Some(directory), Some(email)) => {
            anyhow::ensure!(
                directory.starts_with("https://"),
                "--acme-directory {directory:?}: give the ACME server's https:// directory URL"
            );
            anyhow::ensure!(
                email.contains('@') && !email.contains(char::is_whitespace),
                "--acme-email {email:?} is not an email address"
            );
            Some(control_plane::edge::acme::AcmeSettings {
                directory: directory.clone(),
                email: email.clone(),
                ca_file: data.acme.acme_ca_file.clone(),
            })
        }
        _ => None,
    };
    let smtp = match (&data.smtp.smtp_url, &data.smtp.smtp_from) {
        (Some(url), Some(from)) => {
            let smtp = control_plane::notify::SmtpSettings { url: url.clone(), from: from.clone() };
            smtp.check()?;
            Some(smtp)
        }
        (Some(_), None) => {
            anyhow::bail!("--smtp-url needs --smtp-from: the address notification emails come from")
        }
        _ => None,
    };
    for name in &data.api_tls.api_name {
        protocol::domains::parse_domain(name).map_err(anyhow::Error::msg).context("--api-name")?;
    }
    Ok(control_plane::Config {
        api_tls: None,
        acme,
        backup_dir: b.backup_dir.clone().unwrap_or_else(|| data_dir.join("backups")),
        db_archive_timeout_secs: b.db_archive_timeout.as_secs() as u32,
        state_passphrase: state_passphrase()?,
        state_backup_every: b.state_backup_every,
        restore_from: b.restore_from.clone(),
        data_dir,
        base_domain: data.base_domain.to_lowercase(),
        ingress_http_port,
        ingress_https_port,
        backup_s3,
        git_max_push_bytes: data.git_max_push_mib.saturating_mul(1 << 20),
        git_push_timeout: Duration::from_secs(data.git_push_timeout_secs),
        network_pool: control_plane::store::NetworkPool::parse(&data.network_pool, data.network_prefix)?,
        node_cert_lifetime: std::time::Duration::from_secs(data.node_cert_secs),
        log_retention: control_plane::logs::Retention {
            age: data.log_retention,
            max_bytes: data.log_max_mib.saturating_mul(1 << 20),
        },
        drains: control_plane::drains::DrainSettings {
            ca_file: data.drains.drain_ca_file.clone(),
            max_backlog: data.drains.drain_max_backlog,
            allow_nets: data.drains.drain_allow_net.clone(),
        },
        metrics_max_series: data.metrics_max_series,
        node_lost_after: data.node_lost_after.max(Duration::from_secs(2)),
        smtp,
        database_url: data.database_url.clone(),
        registry: data.registry.registry()?,
    })
}

fn node_name(opts: &NodeOpts) -> String {
    opts.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "local".into())
    })
}

/// The URL an agent in this process reaches the agent listener at (loopback for a wildcard).
fn local_agent_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

pub async fn up(g: &Global, args: UpArgs) -> anyhow::Result<ExitCode> {
    check_api_exposure(args.api_addr, &args.data)?;
    let api = bind(args.api_addr, "API").await?;
    let http = bind(args.http_addr, "ingress").await?;
    let https = bind(args.https_addr, "HTTPS ingress").await?;
    let agents = bind(args.agent_addr, "agent API").await?;
    crate::sockets::warn_unused();
    let api_addr = api.local_addr()?;
    let scheme = if args.data.api_tls.api_tls { "https" } else { "http" };
    let api_url = format!("{scheme}://{api_addr}");
    let agent_url = local_agent_url(agents.local_addr()?);
    let http_addr = http.local_addr()?;
    let https_addr = https.local_addr()?;
    let mut cp_config = control_plane_config(&args.data, http_addr.port(), https_addr.port())?;
    cp_config.api_tls = api_tls_names(api_addr, &args.data);
    let data_dir = cp_config.data_dir.clone();
    let backup_dir = cp_config.backup_dir.clone();
    let cp = control_plane::ControlPlane::open(cp_config).await?;
    let ca_file = cp.ingress_ca_file();

    let config_path = super::config_path(g)?;
    if !args.no_write_config {
        config::save(
            &config_path,
            &CliConfig {
                server: Some(api_url.clone()),
                token: Some(cp.admin_token.clone()),
                ca_file: args.data.api_tls.api_tls.then(|| ca_file.clone()),
            },
        )?;
    }
    // The local agent needs no join: it makes a key and gets its certificate in-process, anew
    // each start (so it also just works on a data directory from before certificates).
    let node = node_name(&args.node);
    let key = protocol::tls::NodeKey::generate().map_err(anyhow::Error::msg)?;
    let certificate = cp
        .local_node_certificate(&node, &key.proof(&node))
        .await
        .context("issuing the local node's certificate")?;
    let agent_config = node_agent::Config {
        server: agent_url.clone(),
        join_token: None,
        identity: Some(node_agent::GivenIdentity { key_pem: key.pem().to_string(), certificate }),
        node_name: node,
        private_addr: args.node.private_addr,
        build_network: args.node.build_network.clone(),
        state_dir: data_dir.join("agent"),
        trusted_proxies: args.node.trusted_proxies.clone(),
        keep_images: args.node.keep_images,
        prune_every: args.node.prune_every(),
        // The data directory's file system is the state directory's; backups may be elsewhere.
        disk_paths: vec![backup_dir],
        capacity: args.node.capacity()?,
        node_scoped_images: args.node.node_scoped_images,
    };
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let node = agent_config.node_name.clone();
    let ca = std::fs::read(&ca_file).context("reading the local CA")?;
    let client =
        protocol::Client::trusting(&api_url, &cp.admin_token, &ca).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cp_task = tokio::spawn(cp.serve(api, agents, shutdown.clone()));
    let logs = args.node.log_settings();
    let listeners = node_agent::Listeners { http, https: Some(https) };
    let agent_task =
        tokio::spawn(node_agent::run_with_logs(agent_config, logs, Some(listeners), shutdown.clone()));
    // Ready means a deploy works: the local node has registered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if client.nodes().await.is_ok_and(|ns| ns.iter().any(|n| n.name == node)) {
            break;
        }
        if agent_task.is_finished() || cp_task.is_finished() || tokio::time::Instant::now() >= deadline {
            tracing::warn!("the local node agent has not registered yet");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = serde_json::json!({
        "api_url": api_url,
        "console_url": format!("{api_url}/"),
        "ingress_addr": http_addr.to_string(),
        "https_addr": https_addr.to_string(),
        "ca_file": ca_file,
        "agent_url": agent_url,
        "data_dir": data_dir,
        "config": if args.no_write_config { None } else { Some(&config_path) },
        "node": node,
    });
    match g.output {
        Output::Json => println!("{ready}"),
        Output::Text => {
            println!("paas is up");
            println!("  API and console: {api_url}/");
            println!("  Agent address:   {agent_url} (other nodes join here: paas nodes token)");
            let domain = &args.data.base_domain;
            println!(
                "  Apps are served at http://<app>.{domain}:{}/ and https://<app>.{domain}:{}/",
                http_addr.port(),
                https_addr.port()
            );
            println!("  HTTPS certificates come from the local CA {}:", ca_file.display());
            println!("    trust it with curl --cacert <that file>, or system-wide (Debian: copy it to");
            println!("    /usr/local/share/ca-certificates/paas.crt, then run update-ca-certificates)");
            println!("  Data directory:  {}", data_dir.display());
            if !args.no_write_config {
                println!("  CLI config:      {} (the CLI is ready to use)", config_path.display());
            }
            println!("Press Ctrl-C to stop; running apps keep running.");
        }
    }

    let agent_result = agent_task.await.context("node agent task")?;
    shutdown.cancel();
    let cp_result = cp_task.await.context("control plane task")?;
    agent_result?;
    cp_result?;
    Ok(ExitCode::SUCCESS)
}

pub async fn server(args: ServerArgs) -> anyhow::Result<ExitCode> {
    check_api_exposure(args.api_addr, &args.data)?;
    // Bad settings are refused before anything listens.
    let mut config = control_plane_config(&args.data, args.ingress_http_port, args.ingress_https_port)?;
    let api = bind(args.api_addr, "API").await?;
    let agents = bind(args.agent_addr, "agent API").await?;
    crate::sockets::warn_unused();
    let api_addr = api.local_addr()?;
    config.api_tls = api_tls_names(api_addr, &args.data);
    let cp = control_plane::ControlPlane::open(config).await?;
    let scheme = if args.data.api_tls.api_tls { "https" } else { "http" };
    let api_url = format!("{scheme}://{api_addr}");
    let agent_addr = agents.local_addr()?;
    println!("paas control plane at {api_url}/, agent address https://{agent_addr}");
    println!(
        "Join a node with: paas agent --join https://<this machine's private address>:{} --join-token <paas nodes token --ttl 1h>",
        agent_addr.port()
    );
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    cp.serve(api, agents, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let ingress = match args.http_addr {
        Some(addr) => {
            let https = match args.https_addr {
                Some(addr) => Some(bind(addr, "HTTPS ingress").await?),
                None => None,
            };
            Some(node_agent::Listeners { http: bind(addr, "ingress").await?, https })
        }
        None => None,
    };
    crate::sockets::warn_unused();
    let state_dir = match args.state_dir {
        Some(d) => d,
        None => config::default_data_dir("paas-agent")?,
    };
    anyhow::ensure!(
        args.join.starts_with("https://"),
        "--join {:?}: give the control plane's agent address, e.g. https://10.0.0.5:7071 (paas server --agent-addr); the agent API is mutual TLS only",
        args.join
    );
    let logs = args.node.log_settings();
    let capacity = args.node.capacity()?;
    let config = node_agent::Config {
        capacity,
        server: args.join,
        join_token: args.join_token,
        identity: None,
        node_name: node_name(&args.node),
        private_addr: args.node.private_addr,
        keep_images: args.node.keep_images,
        prune_every: args.node.prune_every(),
        build_network: args.node.build_network,
        state_dir,
        node_scoped_images: args.node.node_scoped_images,
        trusted_proxies: args.node.trusted_proxies,
        disk_paths: Vec::new(),
    };
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    node_agent::run_with_logs(config, logs, ingress, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// The passphrase that seals the platform's state backups, from the environment only (a
/// command line is visible to every user of the machine).
fn state_passphrase() -> anyhow::Result<Option<control_plane::state_backup::Passphrase>> {
    match std::env::var("PAAS_STATE_PASSPHRASE") {
        Ok(p) if p.chars().count() >= 12 => Ok(Some(control_plane::state_backup::Passphrase(p))),
        Ok(p) if p.is_empty() => Ok(None),
        Ok(_) => anyhow::bail!("PAAS_STATE_PASSPHRASE is too short: give at least 12 characters, it alone protects the platform's keys in its backups"),
        Err(_) => Ok(None),
    }
}

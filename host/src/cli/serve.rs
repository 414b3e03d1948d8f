//! `sigward serve [--config FILE]`: start the listeners and print what an agent needs.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use tokio::net::TcpListener;

use crate::agents::{AgentStore, LiveAgents};
use crate::approval::Approvals;
use crate::audit::AuditLog;
use crate::aws::sts::{CredentialCache, SessionIdentity};
use crate::config::Config;
use crate::pipeline::{Pipeline, Route};
use crate::policy::{Engine, Policies, reload};
use crate::proxy::listener::{self, Tls};
use crate::tls::{CertificateAuthority, LeafResolver};
use crate::upstream::Upstream;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The configuration file (TOML); without it, the embedded defaults.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::defaults(),
    };
    // [cluster] secrets_key_file: the CA and keyring come from the database (or, on the
    // first replica, go there) before anything loads them.
    if let Some(cluster) = config
        .cluster
        .as_ref()
        .filter(|c| c.secrets_key_file.is_some())
    {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime")?
            .block_on(async {
                let database = crate::state::Database::connect(cluster).await?;
                database.migrate(None).await?;
                crate::agents::shared::share_secrets(&database, cluster, &config.state_dir).await?;
                anyhow::Ok(())
            })?;
    }
    let ca = Arc::new(
        CertificateAuthority::load_or_create(&config.state_dir)
            .with_context(|| format!("state.dir {}", config.state_dir.display()))?,
    );

    let (policies, _watcher) = live_policies(&config, args.config.as_deref())?;
    raise_open_file_limit();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let audit_log = runtime.block_on(async move {
        let mut routes = Vec::with_capacity(config.endpoints.len());
        for endpoint in &config.endpoints {
            let upstream = Upstream::new(endpoint.upstream.as_deref(), endpoint.dial_via.as_deref())
                .with_context(|| format!("endpoint {}", endpoint.name))?;
            // Validation guarantees the credential exists.
            let base = config
                .credentials
                .get(&endpoint.credential)
                .with_context(|| format!("endpoint {}: no credential", endpoint.name))?;
            let credentials =
                CredentialCache::new(
                    base,
                    &endpoint.role,
                    &endpoint.region,
                    upstream.clone(),
                    SessionIdentity {
                        endpoint: endpoint.name.clone(),
                        source_identity: endpoint.source_identity.clone(),
                        tags: endpoint.session_tags.clone(),
                    },
                );
            if let Some(reason) = credentials.unavailable() {
                tracing::warn!(endpoint = %endpoint.name, "{reason}: every request will be refused");
            }
            if !endpoint.verify_signatures {
                tracing::warn!(
                    endpoint = %endpoint.name,
                    "verify_signatures = false: agents' signatures are NOT checked; any caller who knows an agent's key id is that agent"
                );
            }
            let webhook = match &endpoint.approval_webhook {
                Some(url) => Some((
                    Upstream::new(None, endpoint.dial_via.as_deref())
                        .with_context(|| format!("endpoint {}", endpoint.name))?,
                    url.clone(),
                )),
                None => None,
            };
            if endpoint.mode == crate::config::Mode::Record {
                tracing::warn!(
                    endpoint = %endpoint.name,
                    "mode = \"record\": every request is allowed; policies' verdicts are only logged"
                );
            }
            routes.push(Route {
                endpoint: endpoint.clone(),
                upstream,
                credentials,
                webhook,
            });
        }
        // [cluster]: the shared database, its schema brought up to date, before anything
        // that reads it. It must be reachable to start: a replica that cannot share its
        // state must not serve as if it could.
        let database = match &config.cluster {
            Some(cluster) => {
                let database = crate::state::Database::connect(cluster).await?;
                let version = database.migrate(None).await?;
                let abandoned = database.abandon_own().await?;
                if abandoned > 0 {
                    tracing::warn!(target: "sigward::cluster", approvals = abandoned, "approvals this replica held before it stopped were abandoned");
                }
                database.start_background();
                tracing::info!(target: "sigward::cluster", replica = %cluster.replica, schema = version, database = %cluster.database, "sharing state through the database");
                Some(database)
            }
            None => None,
        };
        let approvals = match &database {
            Some(database) => Approvals::shared(Arc::clone(database)),
            None => Arc::new(Approvals::default()),
        };
        let issued = match (&database, &config.cluster) {
            (Some(database), Some(cluster)) => {
                LiveAgents::shared(&config.state_dir, Arc::clone(database), cluster.grace).await?
            }
            _ => Arc::new(LiveAgents::new(AgentStore::new(&config.state_dir))),
        };
        let issued_count = issued.current().map_or(0, |a| {
            a.records().iter().filter(|r| r.revoked_at.is_none()).count()
        });
        if config.agents.is_empty() && issued_count == 0 {
            tracing::warn!(
                "no [[agent]] is configured and none was added with `sigward agent add`: every request will be refused"
            );
        }
        let audit = match &config.audit {
            Some(audit) => Some(AuditLog::open_with(
                &audit.path,
                audit.fail_open,
                database.clone(),
            )?),
            None => None,
        };
        let audit_for_exit = audit.clone();
        let pipeline = Arc::new(Pipeline::new(
            &config,
            routes,
            Arc::clone(&policies),
            Arc::clone(&issued),
            approvals,
            audit,
        ));
        let tls = Tls::new(Arc::new(LeafResolver::new(
            Arc::clone(&ca),
            Some("127.0.0.1".into()),
        )))?;

        let proxy = bind(config.listen, "proxy.listen").await?;
        let direct = bind_optional(config.endpoint_listen, "proxy.endpoint_listen").await?;
        if let Some(admin) = &config.admin
            && !admin.listen.ip().is_loopback()
        {
            tracing::warn!(
                listen = %admin.listen,
                "admin.listen is not a loopback address: the admin token and approvals travel in plain HTTP"
            );
        }
        let admin = bind_optional(config.admin.as_ref().map(|a| a.listen), "admin.listen").await?;
        let credentials =
            bind_optional(config.credentials_listen, "proxy.credentials_listen").await?;

        // What agents need, in one write; a reader that went away (a closed pipe) must
        // not stop the proxy.
        let mut banner = format!(
            "HTTPS_PROXY=http://{}\nAWS_CA_BUNDLE={}\n",
            proxy.local_addr()?,
            ca.cert_path.display()
        );
        if let Some(direct) = &direct {
            banner += &format!("AWS_ENDPOINT_URL=https://{}\n", direct.local_addr()?);
        }
        if let Some(credentials) = &credentials {
            // Agents append NAME/ACCOUNT (`sigward env` prints the whole variable).
            banner += &format!(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI=http://{}/agents/\n",
                credentials.local_addr()?
            );
        }
        if let Some(admin) = &admin {
            banner += &format!("SIGWARD_ADMIN=http://{}\n", admin.local_addr()?);
        }
        let mut out = std::io::stdout();
        if let Err(error) = out.write_all(banner.as_bytes()).and_then(|()| out.flush()) {
            tracing::warn!(%error, "could not print the agent settings to stdout");
        }
        tracing::info!(
            listen = %proxy.local_addr()?,
            endpoints = config.endpoints.len(),
            agents = config.agents.len(),
            issued_agents = issued_count,
            "sigward is serving"
        );

        if let (Some(listener), Some(admin)) = (admin, &config.admin) {
            tokio::spawn(crate::admin::serve_admin(
                listener,
                Arc::new(crate::admin::Admin {
                    token: admin.token.clone(),
                    pipeline: Arc::clone(&pipeline),
                }),
            ));
        }
        if let Some(credentials) = credentials {
            tokio::spawn(crate::proxy::credentials::serve_credentials(
                credentials,
                Arc::clone(&issued),
            ));
        }
        let gate = listener::Gate::new(config.connections);
        let direct_task = direct.map(|direct| {
            tokio::spawn(listener::serve_direct(
                direct,
                Arc::clone(&pipeline),
                tls.clone(),
                gate.clone(),
            ))
        });
        let direct_task = direct_task;
        tokio::select! {
            () = listener::serve_proxy(proxy, Arc::clone(&pipeline), tls, gate) => {}
            signal = stop_signal() => {
                // Stop accepting; refuse what new requests come on open connections; let
                // those in flight finish within the grace period.
                if let Some(task) = direct_task {
                    task.abort();
                }
                pipeline.stop();
                let grace = config.connections.shutdown_grace;
                tracing::info!(
                    signal,
                    in_flight = pipeline.in_flight(),
                    grace_ms = grace.as_millis() as u64,
                    "stopping: no new connections; waiting for requests in flight"
                );
                let deadline = tokio::time::Instant::now() + grace;
                while pipeline.in_flight() > 0 && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                tracing::info!(cut_off = pipeline.in_flight(), "stopped");
            }
        }
        Ok::<_, anyhow::Error>(audit_for_exit)
    })?;
    // Requests still running are dropped with the runtime, each recorded as cut off by the
    // shutdown; then whatever the audit log was given is written before the process ends.
    drop(runtime);
    if let Some(audit) = audit_log
        && !audit.wait_written(std::time::Duration::from_secs(5))
    {
        tracing::error!("the audit log was not fully written before exit");
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM (service managers, `kill`) or SIGINT (Ctrl-C): which one came.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

/// Each agent connection is a file descriptor (two with its upstream): raise the soft
/// limit to the hard one, as servers do, and say so.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (limit.current, limit.maximum) else {
        return;
    };
    let target = hard.unwrap_or(soft.max(1 << 20));
    if target <= soft {
        return;
    }
    let raised = rustix::process::Rlimit {
        current: Some(target),
        maximum: hard,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(from = soft, to = target, "raised the open-file limit"),
        Err(error) => tracing::warn!(%error, soft, "could not raise the open-file limit"),
    }
}

/// Listen on `address`; an error names the configuration key it came from.
async fn bind(address: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("{key} {address}"))
}

/// [`bind`] for a listener the configuration may leave out.
async fn bind_optional(
    address: Option<SocketAddr>,
    key: &str,
) -> anyhow::Result<Option<TcpListener>> {
    match address {
        Some(address) => bind(address, key).await.map(Some),
        None => Ok(None),
    }
}

/// The endpoints' policy sets, reloaded when the config file or a policy file changes,
/// and on SIGHUP (keep the watcher alive as long as they are used).
pub(super) fn live_policies(
    config: &Config,
    path: Option<&std::path::Path>,
) -> anyhow::Result<(Arc<Policies>, reload::Watcher)> {
    let engine = Engine::new(config.engine_options())?;
    let specs = config.endpoint_specs();
    let policies = Arc::new(Policies::new(engine, &specs)?);
    let watcher = match path {
        Some(path) => {
            let path = path.to_path_buf();
            let files = reload::watched_files(&specs, std::slice::from_ref(&path));
            reload::watch(Arc::clone(&policies), files, move || {
                Config::load(&path)
                    .map(|c| c.endpoint_specs())
                    .map_err(|e| e.to_string())
            })?
        }
        None => reload::watch(Arc::clone(&policies), Vec::new(), move || Ok(specs.clone()))?,
    };
    Ok((policies, watcher))
}

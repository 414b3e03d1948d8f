//! `sigward serve [--config FILE]`: start the listeners and print what an agent needs.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use crate::aws::sts::CredentialCache;
use crate::config::Config;
use crate::pipeline::{Pipeline, Route};
use crate::policy::{Engine, Policies, reload};
use crate::proxy::forward::Upstream;
use crate::proxy::listener::{self, Tls};
use crate::tls::{CertificateAuthority, LeafResolver};

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
    let ca = Arc::new(
        CertificateAuthority::load_or_create(&config.state_dir)
            .with_context(|| format!("state.dir {}", config.state_dir.display()))?,
    );

    let engine = Engine::new(config.engine_options())?;
    let specs = config.endpoint_specs();
    let policies = Arc::new(Policies::new(engine, &specs)?);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
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
                CredentialCache::new(base, &endpoint.role, &endpoint.region, upstream.clone());
            if let Some(reason) = credentials.unavailable() {
                tracing::warn!(endpoint = %endpoint.name, "{reason}: every request will be refused");
            }
            if !endpoint.verify_signatures {
                tracing::warn!(
                    endpoint = %endpoint.name,
                    "verify_signatures = false: agents' signatures are NOT checked; any caller who knows an agent's key id is that agent"
                );
            }
            routes.push(Route {
                endpoint: endpoint.clone(),
                upstream,
                credentials,
            });
        }
        if config.agents.is_empty() {
            tracing::warn!("no [[agent]] is configured: every request will be refused");
        }
        let pipeline = Arc::new(Pipeline::new(&config, routes, Arc::clone(&policies)));
        let tls = Tls::new(Arc::new(LeafResolver::new(
            Arc::clone(&ca),
            Some("127.0.0.1".into()),
        )))?;

        let proxy = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("proxy.listen {}", config.listen))?;
        let direct = match config.endpoint_listen {
            Some(address) => Some(
                tokio::net::TcpListener::bind(address)
                    .await
                    .with_context(|| format!("proxy.endpoint_listen {address}"))?,
            ),
            None => None,
        };

        // Hot reload: the config file and every policy file, and SIGHUP.
        let _watcher = match &args.config {
            Some(path) => {
                let path = path.clone();
                let files = reload::watched_files(&specs, std::slice::from_ref(&path));
                reload::watch(Arc::clone(&policies), files, move || {
                    Config::load(&path)
                        .map(|c| c.endpoint_specs())
                        .map_err(|e| e.to_string())
                })?
            }
            None => {
                let specs = specs.clone();
                reload::watch(Arc::clone(&policies), Vec::new(), move || Ok(specs.clone()))?
            }
        };

        let mut out = std::io::stdout();
        writeln!(out, "HTTPS_PROXY=http://{}", proxy.local_addr()?)?;
        writeln!(out, "AWS_CA_BUNDLE={}", ca.cert_path.display())?;
        if let Some(direct) = &direct {
            writeln!(out, "AWS_ENDPOINT_URL=https://{}", direct.local_addr()?)?;
        }
        out.flush()?;
        tracing::info!(
            listen = %proxy.local_addr()?,
            endpoints = config.endpoints.len(),
            agents = config.agents.len(),
            "sigward is serving"
        );

        if let Some(direct) = direct {
            tokio::spawn(listener::serve_direct(direct, Arc::clone(&pipeline), tls.clone()));
        }
        tokio::select! {
            () = listener::serve_proxy(proxy, pipeline, tls) => {}
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

//! `sigward authorize` (Envoy `ext_authz` HTTP service) and `sigward squid-helper` (a
//! Squid external ACL helper): sigward's policies for a proxy the operator already runs.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;

use super::agent::ConfigArg;
use crate::authorize::{self, Authorizer};

#[derive(Debug, Args)]
pub struct AuthorizeArgs {
    /// Where Envoy's ext_authz HTTP service points.
    #[arg(long, default_value = "127.0.0.1:9191")]
    listen: SocketAddr,
    /// The `path_prefix` configured in Envoy's ext_authz http_service, stripped from paths.
    #[arg(long, default_value = "")]
    path_prefix: String,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct SquidHelperArgs {
    #[command(flatten)]
    config: ConfigArg,
}

pub fn authorize(args: AuthorizeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let (policies, _watcher) = super::serve::live_policies(&config, args.config.config.as_deref())?;
    let authorizer = Arc::new(Authorizer::new(config, policies));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("--listen {}", args.listen))?;
        let mut out = std::io::stdout();
        writeln!(
            out,
            "ext_authz http_service: http://{}{}",
            listener.local_addr()?,
            args.path_prefix
        )?;
        out.flush()?;
        tokio::select! {
            () = authorize::serve_ext_authz(listener, authorizer, args.path_prefix) => {}
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; stopping"),
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn squid_helper(args: SquidHelperArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let (policies, _watcher) = super::serve::live_policies(&config, args.config.config.as_deref())?;
    authorize::squid_helper(&Authorizer::new(config, policies))?;
    Ok(ExitCode::SUCCESS)
}

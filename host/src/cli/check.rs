//! `sigward check --config FILE`: validate a configuration without starting anything.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::agents::AgentStore;
use crate::config::{BaseCredential, Config};
use crate::policy::{Engine, reload};
use crate::tls::CertificateAuthority;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    // A config that does not parse is one problem, reported as bad input (exit 2).
    let config = Config::load(&args.config)?;
    let mut problems: Vec<String> = Vec::new();

    // Checking writes nothing: no module store.
    let mut options = config.engine_options();
    options.module_store = None;
    let engine = Engine::new(options)?;
    let mut policies = 0;
    for spec in config.endpoint_specs() {
        policies += spec.policies.len();
        if let Err(error) = reload::build_set(&engine, &spec) {
            problems.push(error.to_string());
        }
    }
    for (name, credential) in &config.credentials {
        if *credential == BaseCredential::Environment {
            for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
                if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                    problems.push(format!(
                        "credential.{name}: source = \"environment\" but {var} is not set"
                    ));
                }
            }
        }
    }
    // The CA is created by the first `serve`; once there, it must load (cert and key).
    let ca = config.state_dir.join("ca.pem");
    if (ca.exists() || config.state_dir.join("ca.key").exists())
        && let Err(e) = CertificateAuthority::load_or_create(&config.state_dir)
    {
        problems.push(format!("state.dir: {e}"));
    }
    if let Some(audit) = &config.audit {
        let path = &audit.path;
        let problem = if path.exists() {
            std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .err()
                .map(|e| format!("cannot be appended to: {e}"))
        } else {
            match path.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(dir) if !dir.is_dir() => Some(format!("{} does not exist", dir.display())),
                _ => None,
            }
        };
        if let Some(problem) = problem {
            problems.push(format!("audit.path: {}: {problem}", path.display()));
        }
    }
    let issued = match AgentStore::for_config(&config).load() {
        Ok(agents) => agents
            .records()
            .iter()
            .filter(|r| r.revoked_at.is_none())
            .count(),
        Err(e) => {
            problems.push(format!("state.dir: agents: {e}"));
            0
        }
    };

    let mut out = std::io::stdout();
    for problem in &problems {
        writeln!(out, "{problem}")?;
    }
    if problems.is_empty() {
        writeln!(
            out,
            "{}: ok ({} endpoints, {policies} policies, {} agents in the config, {issued} added with `sigward agent add`)",
            args.config.display(),
            config.endpoints.len(),
            config.agents.len()
        )?;
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

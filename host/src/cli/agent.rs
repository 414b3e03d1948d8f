//! `sigward agent add | list | revoke` and `sigward credentials`: agent identities in the
//! state directory, and a key for one in AWS's `credential_process` format.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::agents::{AgentStore, parse_ttl, timestamp};
use crate::config::Config;

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The configuration file (TOML); without it, the embedded defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    pub fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load_or_defaults(self.config.as_deref())?)
    }
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Create an agent identity that sigward issues short-lived keys to.
    Add(AddArgs),
    /// List agents: those added here and those in the config file.
    List(ListArgs),
    /// Revoke an agent: its keys stop working on the next request.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The agent's name (letters, digits, '-', '_'): it names profiles and log lines.
    name: String,
    /// An account the agent may act in: a 12-digit id or a name from an endpoint's
    /// `accounts`. Repeat for more.
    #[arg(long = "account", required = true)]
    accounts: Vec<String>,
    /// How long each issued key lasts (90s, 30m, 12h, 7d); SDKs fetch a new one before.
    #[arg(long, value_parser = parse_ttl, default_value = "1h")]
    ttl: std::time::Duration,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    name: String,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// The agent the key is for.
    #[arg(long)]
    agent: String,
    /// The account (12-digit id or an endpoint's name for it).
    #[arg(long)]
    account: String,
    #[command(flatten)]
    config: ConfigArg,
}

pub fn agent(command: AgentCommand) -> anyhow::Result<ExitCode> {
    match command {
        AgentCommand::Add(args) => add(args),
        AgentCommand::List(args) => list(args),
        AgentCommand::Revoke(args) => revoke(args),
    }
}

fn add(args: AddArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    if config.agents.iter().any(|a| a.name == args.name) {
        anyhow::bail!(
            "agent {:?} is already an [[agent]] in the config file; choose another name",
            args.name
        );
    }
    let accounts = args
        .accounts
        .iter()
        .map(|a| config.account(a))
        .collect::<Result<Vec<_>, _>>()?;
    let store = AgentStore::for_config(&config);
    let record = store.add(&args.name, &accounts, args.ttl, SystemTime::now())?;
    let labels: Vec<String> = accounts.iter().map(|a| config.account_label(a)).collect();
    let mut out = std::io::stdout();
    writeln!(
        out,
        "agent {}: accounts {}; each key lasts {}s",
        record.name,
        labels.join(", "),
        record.ttl_seconds
    )?;
    writeln!(
        out,
        "next: sigward env --agent {} --account {}{}",
        record.name,
        args.accounts[0],
        config_flag(&args.config)
    )?;
    Ok(ExitCode::SUCCESS)
}

/// ` --config PATH` when one was given, for commands printed for the operator.
fn config_flag(config: &ConfigArg) -> String {
    config
        .config
        .as_ref()
        .map(|p| format!(" --config {}", p.display()))
        .unwrap_or_default()
}

fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let agents = AgentStore::for_config(&config).load()?;
    let mut rows = Vec::new();
    for record in agents.records() {
        rows.push(serde_json::json!({
            "name": record.name,
            "source": "issued",
            "accounts": record.accounts.iter().map(|a| {
                crate::aws::account::AccountId::parse(a)
                    .map_or_else(|| a.clone(), |id| config.account_label(&id))
            }).collect::<Vec<_>>(),
            "ttl_seconds": record.ttl_seconds,
            "created_at": timestamp(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(record.created_at)),
            "status": match record.revoked_at {
                Some(at) => format!("revoked {}", timestamp(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(at))),
                None => "active".into(),
            },
        }));
    }
    for agent in &config.agents {
        rows.push(serde_json::json!({
            "name": agent.name,
            "source": "config",
            "accounts": agent.access_key_ids.iter().filter_map(|k| crate::aws::account::account_of_key(k))
                .map(|id| config.account_label(&id)).collect::<Vec<_>>(),
            "status": "active",
        }));
    }
    let mut out = std::io::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::Value::Array(rows))?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(out, "no agents (sigward agent add NAME --account ACCOUNT)")?;
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<[String; 5]> = rows
        .iter()
        .map(|row| {
            let text = |k: &str| row[k].as_str().unwrap_or_default().to_string();
            let accounts: Vec<&str> = row["accounts"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            let ttl = row["ttl_seconds"]
                .as_u64()
                .map_or_else(|| "-".into(), |t| format!("{t}s"));
            [
                text("name"),
                text("source"),
                accounts.join(", "),
                ttl,
                text("status"),
            ]
        })
        .collect();
    let header = ["NAME", "SOURCE", "ACCOUNTS", "TTL", "STATUS"].map(String::from);
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            std::iter::once(&header)
                .chain(&table)
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&header).chain(&table) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let record = AgentStore::for_config(&config).revoke(&args.name, SystemTime::now())?;
    writeln!(
        std::io::stdout(),
        "agent {} revoked: its keys are refused from the next request on",
        record.name
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `credential_process` output: a fresh key, printed as AWS's `Version: 1` JSON.
pub fn credentials(args: CredentialsArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let account = config.account(&args.account)?;
    let agents = AgentStore::for_config(&config).load()?;
    let key = agents
        .issue(&args.agent, &account, SystemTime::now())
        .with_context(|| format!("sigward credentials for agent {}", args.agent))?;
    let json = serde_json::json!({
        "Version": 1,
        "AccessKeyId": key.access_key_id,
        "SecretAccessKey": key.secret_access_key,
        "SessionToken": key.session_token,
        "Expiration": timestamp(key.expiration),
    });
    writeln!(std::io::stdout(), "{json}")?;
    Ok(ExitCode::SUCCESS)
}

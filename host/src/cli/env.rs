//! `sigward env` (the exports an agent's shell needs) and `sigward profile install |
//! remove` (AWS config profiles whose `credential_process` is `sigward credentials`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};

use super::agent::ConfigArg;
use crate::agents::{AgentRecord, AgentStore};
use crate::aws::account::AccountId;
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Delivery {
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` and its token (needs `credentials_listen`).
    Ecs,
    /// `AWS_PROFILE` naming a profile `sigward profile install` wrote.
    Process,
}

/// The agent's client, for the lines only some clients need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// The AWS CLI (v1 and v2), boto3 and the Go SDK v2: they read `HTTPS_PROXY` and
    /// `AWS_CA_BUNDLE` themselves.
    Shell,
    /// The JavaScript SDK v3 on Node.js: adds `NODE_EXTRA_CA_CERTS` (the SDK reads neither
    /// variable) and says how to hand the SDK the proxy.
    Node,
}

#[derive(Debug, Args)]
pub struct EnvArgs {
    /// The agent's client: `shell` serves the AWS CLI, boto3 and the Go SDK; `node` the
    /// JavaScript SDK v3.
    #[arg(long, value_enum, default_value = "shell", alias = "language")]
    lang: Lang,
    #[arg(long)]
    agent: String,
    /// The account (12-digit id or an endpoint's name for it).
    #[arg(long)]
    account: String,
    /// How the agent gets its keys; the container endpoint when `credentials_listen` is
    /// configured, else the credential-process profile.
    #[arg(long, value_enum)]
    delivery: Option<Delivery>,
    /// The AWS config file the profile is in (for `--delivery process`).
    #[arg(long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Write one `[profile AGENT-ACCOUNT]` per account of the agent into an AWS config file.
    Install(ProfileArgs),
    /// Take exactly the sections `install` wrote for the agent out again.
    Remove(ProfileArgs),
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[arg(long)]
    agent: String,
    /// The AWS config file; default `$AWS_CONFIG_FILE`, else `~/.aws/config`.
    #[arg(long)]
    file: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
}

/// `value`, quoted for a POSIX shell (and for botocore's `credential_process` split) when
/// it needs to be.
fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=,@+%".contains(&b));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

fn aws_config_file(file: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(file) = file {
        return Ok(file.to_path_buf());
    }
    if let Some(file) = std::env::var_os("AWS_CONFIG_FILE").filter(|f| !f.is_empty()) {
        return Ok(PathBuf::from(file));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --file")?;
    Ok(PathBuf::from(home).join(".aws/config"))
}

/// The profile for an agent in an account: `claude-prod`, or `claude-111111111111` when
/// no endpoint names the account.
fn profile_name(config: &Config, agent: &str, account: &AccountId) -> String {
    format!(
        "{agent}-{}",
        config.account_name(account).unwrap_or(account.as_str())
    )
}

fn region(config: &Config) -> &str {
    config
        .endpoints
        .first()
        .map_or("us-east-1", |e| e.region.as_str())
}

fn active_agent(config: &Config, name: &str) -> anyhow::Result<AgentRecord> {
    let agents = AgentStore::for_config(config).load()?;
    Ok(agents.active(name)?.clone())
}

pub fn env(args: EnvArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let account = config.account(&args.account)?;
    let agents = AgentStore::for_config(&config).load()?;
    let record = agents.active(&args.agent)?;
    if !record.accounts.iter().any(|a| a == account.as_str()) {
        anyhow::bail!(
            "agent {} may not use account {} (its accounts: {})",
            record.name,
            config.account_label(&account),
            record.accounts.join(", ")
        );
    }
    let delivery = args
        .delivery
        .unwrap_or(if config.credentials_listen.is_some() {
            Delivery::Ecs
        } else {
            Delivery::Process
        });
    let ca = config.state_dir.join("ca.pem");
    if !ca.exists() {
        eprintln!(
            "sigward env: {} does not exist yet; `sigward serve` creates it",
            ca.display()
        );
    }

    let mut lines = vec![
        format!(
            "# sigward: agent {} in account {}",
            record.name,
            config.account_label(&account)
        ),
        format!("export HTTPS_PROXY=http://{}", config.listen),
        format!(
            "export AWS_CA_BUNDLE={}",
            shell_quote(&ca.display().to_string())
        ),
        format!(
            "export AWS_DEFAULT_REGION=${{AWS_DEFAULT_REGION:-{}}}",
            region(&config)
        ),
        // Keys in the environment would win over the delivery below.
        "unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN".into(),
    ];
    if args.lang == Lang::Node {
        lines.extend([
            "# The JavaScript SDK v3 reads neither HTTPS_PROXY nor AWS_CA_BUNDLE. Node trusts".into(),
            "# sigward's CA through NODE_EXTRA_CA_CERTS; give each client the proxy (npm".into(),
            "# https-proxy-agent, @smithy/node-http-handler):".into(),
            "#   requestHandler: new NodeHttpHandler({ httpsAgent: new HttpsProxyAgent(process.env.HTTPS_PROXY) })".into(),
            format!(
                "export NODE_EXTRA_CA_CERTS={}",
                shell_quote(&ca.display().to_string())
            ),
        ]);
    }
    match delivery {
        Delivery::Ecs => {
            let Some(listen) = config.credentials_listen else {
                anyhow::bail!(
                    "--delivery ecs needs [proxy] credentials_listen in the config (e.g. \"127.0.0.1:8082\")"
                );
            };
            lines.push("unset AWS_PROFILE".into());
            lines.push(format!(
                "export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://{listen}/agents/{}/{account}",
                record.name
            ));
            lines.push(format!(
                "export AWS_CONTAINER_AUTHORIZATION_TOKEN={}",
                agents.container_token(&record.name)?
            ));
        }
        Delivery::Process => {
            let profile = profile_name(&config, &record.name, &account);
            let file = aws_config_file(args.file.as_deref())?;
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if find_block(&text, &record.name).is_none() {
                eprintln!(
                    "sigward env: {} has no profile {profile} yet; run `sigward profile install --agent {}` first",
                    file.display(),
                    record.name
                );
            }
            lines.push(
                "unset AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_AUTHORIZATION_TOKEN".into(),
            );
            if args.file.is_some() {
                lines.push(format!(
                    "export AWS_CONFIG_FILE={}",
                    shell_quote(&file.display().to_string())
                ));
            }
            lines.push(format!("export AWS_PROFILE={profile}"));
        }
    }
    let mut out = std::io::stdout();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn profile(command: ProfileCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProfileCommand::Install(args) => install(args),
        ProfileCommand::Remove(args) => remove(args),
    }
}

const NEWLINE_ADDED: &str = " (a newline was added before this line)";

fn begin_line(agent: &str) -> String {
    format!("# sigward: begin agent {agent}")
}

fn end_line(agent: &str) -> String {
    format!("# sigward: end agent {agent}")
}

/// The byte range of the block `install` wrote for `agent`, including the newline it
/// added before it, if it added one.
fn find_block(text: &str, agent: &str) -> Option<std::ops::Range<usize>> {
    let (begin, end) = (begin_line(agent), end_line(agent));
    let mut offset = 0;
    let mut start: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        match start {
            None if bare == begin => start = Some(offset),
            None if bare.strip_prefix(begin.as_str()) == Some(NEWLINE_ADDED) => {
                start = Some(offset.saturating_sub(1));
            }
            Some(first) if bare == end => return Some(first..offset + line.len()),
            _ => {}
        }
        offset += line.len();
    }
    None
}

fn install(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    let config = args.config.load()?;
    let record = active_agent(&config, &args.agent)?;
    let file = aws_config_file(args.file.as_deref())?;
    let original = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let mut text = original.clone();
    if let Some(range) = find_block(&text, &record.name) {
        text.replace_range(range, "");
    }

    let exe = std::env::current_exe().context("finding the sigward binary")?;
    let config_flag = match &args.config.config {
        Some(path) => format!(
            " --config {}",
            shell_quote(&std::path::absolute(path)?.display().to_string())
        ),
        None => String::new(),
    };
    let ca = config.state_dir.join("ca.pem");
    let mut block = String::new();
    let mut names = Vec::new();
    for account in &record.accounts {
        let id = AccountId::parse(account)
            .with_context(|| format!("agent {}: {account} is not an account id", record.name))?;
        let name = profile_name(&config, &record.name, &id);
        if text
            .lines()
            .any(|l| l.trim() == format!("[profile {name}]"))
        {
            anyhow::bail!(
                "{} already has a [profile {name}] that sigward did not write; remove it or add the agent under another name",
                file.display()
            );
        }
        block.push_str(&format!(
            "[profile {name}]\ncredential_process = {} credentials --agent {} --account {id}{config_flag}\nca_bundle = {}\nregion = {}\n",
            shell_quote(&exe.display().to_string()),
            record.name,
            ca.display(),
            region(&config),
        ));
        names.push(name);
    }
    let separator = !text.is_empty() && !text.ends_with('\n');
    text.push_str(&format!(
        "{}{}{}\n# written by `sigward profile install`; `sigward profile remove --agent {}` takes it out\n{block}{}\n",
        if separator { "\n" } else { "" },
        begin_line(&record.name),
        if separator { NEWLINE_ADDED } else { "" },
        record.name,
        end_line(&record.name),
    ));
    write_atomically(&file, &text)?;
    writeln!(
        std::io::stdout(),
        "{}: profiles {} (use with AWS_PROFILE=… and HTTPS_PROXY=http://{})",
        file.display(),
        names.join(", "),
        config.listen
    )?;
    Ok(ExitCode::SUCCESS)
}

fn remove(args: ProfileArgs) -> anyhow::Result<ExitCode> {
    let file = aws_config_file(args.file.as_deref())?;
    let mut text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let mut out = std::io::stdout();
    match find_block(&text, &args.agent) {
        Some(range) => {
            text.replace_range(range, "");
            write_atomically(&file, &text)?;
            writeln!(
                out,
                "{}: removed agent {}'s profiles",
                file.display(),
                args.agent
            )?;
        }
        None => writeln!(
            out,
            "{}: no profiles of agent {} (nothing to remove)",
            file.display(),
            args.agent
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Replace `file` with `text` in one rename, keeping its permissions.
fn write_atomically(file: &Path, text: &str) -> anyhow::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let temporary = dir.join(format!(
        ".{}.sigward-tmp",
        file.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config")
    ));
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    if let Ok(metadata) = std::fs::metadata(file) {
        std::fs::set_permissions(&temporary, metadata.permissions())?;
    }
    std::fs::rename(&temporary, file).with_context(|| format!("writing {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_found_exactly() {
        let block = |sep: bool| {
            format!(
                "{}{}{}\n[profile a-prod]\nx = 1\n{}\n",
                if sep { "\n" } else { "" },
                begin_line("a"),
                if sep { NEWLINE_ADDED } else { "" },
                end_line("a")
            )
        };
        for original in ["", "[default]\nregion = x\n", "[default]\nregion = x"] {
            let sep = !original.is_empty() && !original.ends_with('\n');
            let text = format!("{original}{}", block(sep));
            let range = find_block(&text, "a").expect("block");
            let mut removed = text.clone();
            removed.replace_range(range, "");
            assert_eq!(removed, original);
            assert!(find_block(&text, "ab").is_none());
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/usr/bin/sigward"), "/usr/bin/sigward");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}

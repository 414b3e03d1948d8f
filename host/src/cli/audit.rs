//! `sigward audit verify | replay` and `sigward approvals list | approve | deny`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt as _, Full};

use super::agent::ConfigArg;
use crate::audit;
use crate::policy::Engine;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the log's hash chain; exit 1 naming the first altered, removed or reordered line.
    /// With `--database`, every replica's chain in `[cluster]`'s database.
    Verify(LogArgs),
    /// Evaluate every recorded facet again with the recorded modules and settings; exit 1
    /// if any verdict differs. With `--database`, every replica's records (with the
    /// modules in this machine's module store).
    Replay(LogArgs),
}

/// Which log: a file, or every replica's records in the database.
#[derive(Debug, Args)]
pub struct LogArgs {
    #[arg(required_unless_present = "database")]
    path: Option<PathBuf>,
    /// Every replica's records in the config's `[cluster]` database.
    #[arg(long, conflicts_with = "path")]
    database: bool,
    #[command(flatten)]
    config: ConfigArg,
}

/// The logs to read: the file, or each replica's records in the database (named
/// `database:REPLICA`).
fn logs(
    LogArgs {
        path,
        database,
        config,
    }: &LogArgs,
) -> anyhow::Result<Vec<(PathBuf, String)>> {
    if !database {
        let path = path.clone().context("a log file, or --database")?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return Ok(vec![(path, text)]);
    }
    let config = config.load()?;
    let cluster = config
        .cluster
        .context("--database needs a [cluster] database in the config")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let logs = runtime.block_on(async {
        let database = crate::state::Database::connect(&cluster).await?;
        audit::mirror::read_all(&database)
            .await
            .map_err(anyhow::Error::msg)
    })?;
    if logs.is_empty() {
        anyhow::bail!("the database {} holds no audit records", cluster.database);
    }
    Ok(logs
        .into_iter()
        .map(|(replica, text)| (PathBuf::from(format!("database:{replica}")), text))
        .collect())
}

pub fn audit(command: AuditCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout();
    match command {
        AuditCommand::Verify(args) => {
            let mut status = ExitCode::SUCCESS;
            for (path, text) in logs(&args)? {
                match audit::verify_text(&path, &text) {
                    Ok(intact) => {
                        writeln!(
                            out,
                            "{}: intact, {} lines; newest line's hash {} (keep it elsewhere to detect a rewritten tail)",
                            path.display(),
                            intact.lines,
                            intact.head
                        )?;
                        for (line, found) in &intact.seals {
                            writeln!(out, "  sealed at line {line}: {found}")?;
                        }
                    }
                    Err(audit::AuditError::Damaged { message, .. }) => {
                        writeln!(out, "{}: {message}", path.display())?;
                        status = ExitCode::FAILURE;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(status)
        }
        AuditCommand::Replay(args) => {
            let logs = logs(&args)?;
            let config = args.config.load()?;
            let mut options = config.engine_options();
            options.module_store = None;
            let engine = Engine::new(options)?;
            let mut status = ExitCode::SUCCESS;
            for (path, text) in logs {
                let replayed = audit::replay_text(&path, &text, &engine, &config.module_store())?;
                for difference in &replayed.differences {
                    writeln!(
                        out,
                        "line {}: policy {}: recorded {} but replayed {}",
                        difference.line,
                        difference.policy,
                        difference.recorded,
                        difference.replayed
                    )?;
                }
                writeln!(
                    out,
                    "{}: {} records, {} evaluations replayed, {} differences",
                    path.display(),
                    replayed.records,
                    replayed.evaluations,
                    replayed.differences.len()
                )?;
                if !replayed.differences.is_empty() {
                    status = ExitCode::FAILURE;
                }
            }
            Ok(status)
        }
    }
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The admin listener's URL; default: `[admin] listen` from the config.
    #[arg(long)]
    admin: Option<String>,
    /// The admin token; default: the config's, else $SIGWARD_ADMIN_TOKEN.
    #[arg(long)]
    token: Option<String>,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// The pending approvals.
    List {
        /// Print the JSON the admin API returns.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Approve a pending request: it goes on.
    Approve(DecideArgs),
    /// Deny a pending request: the agent gets AccessDenied naming you.
    Deny(DecideArgs),
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    id: String,
    /// Who decides (recorded); default: $USER.
    #[arg(long)]
    by: Option<String>,
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

impl AdminArgs {
    fn resolve(&self) -> anyhow::Result<(String, String)> {
        let config = if self.admin.is_none() || self.token.is_none() {
            Some(self.config.load()?)
        } else {
            None
        };
        let configured = config.as_ref().and_then(|c| c.admin.as_ref());
        let url = match (&self.admin, configured) {
            (Some(url), _) => url.trim_end_matches('/').to_string(),
            (None, Some(admin)) => format!("http://{}", admin.listen),
            (None, None) => {
                anyhow::bail!("no admin listener: pass --admin URL or configure [admin] listen")
            }
        };
        let token = self
            .token
            .clone()
            .or_else(|| configured.map(|a| a.token.clone()))
            .or_else(|| std::env::var("SIGWARD_ADMIN_TOKEN").ok())
            .context(
                "no admin token: pass --token, configure [admin] token, or set SIGWARD_ADMIN_TOKEN",
            )?;
        Ok((url, token))
    }
}

/// One request to the admin API: (status, body).
fn call(
    url: &str,
    token: &str,
    method: http::Method,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(u16, String)> {
    let uri: http::Uri = format!("{url}{path}")
        .parse()
        .with_context(|| format!("admin URL {url}"))?;
    let authority = uri
        .authority()
        .context("the admin URL needs host:port")?
        .clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let stream = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .with_context(|| format!("connecting to the admin listener {authority}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::builder()
            .method(method)
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, authority.as_str())
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    })
}

pub fn approvals(command: ApprovalsCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout();
    match command {
        ApprovalsCommand::List { json, admin } => {
            let (url, token) = admin.resolve()?;
            let (status, body) = call(&url, &token, http::Method::GET, "/approvals", None)?;
            if status != 200 {
                anyhow::bail!("{url}/approvals: {status} {body}");
            }
            if json {
                writeln!(out, "{body}")?;
                return Ok(ExitCode::SUCCESS);
            }
            let list: Vec<serde_json::Value> = serde_json::from_str(&body)?;
            if list.is_empty() {
                writeln!(out, "no pending approvals")?;
            }
            for approval in list {
                let text = |k: &str| approval[k].as_str().unwrap_or_default().to_string();
                let approvers: Vec<&str> = approval["approvers"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{}  expires {}  approvers {}\n    {}",
                    text("id"),
                    text("expires_at"),
                    approvers.join(","),
                    text("prompt")
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ApprovalsCommand::Approve(args) => decide(args, "approve"),
        ApprovalsCommand::Deny(args) => decide(args, "deny"),
    }
}

fn decide(args: DecideArgs, action: &str) -> anyhow::Result<ExitCode> {
    let (url, token) = args.admin.resolve()?;
    let by = args
        .by
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".into());
    let body = serde_json::json!({ "by": by, "reason": args.reason }).to_string();
    let path = format!("/approvals/{}/{action}", args.id);
    let (status, answer) = call(&url, &token, http::Method::POST, &path, Some(body))?;
    let mut out = std::io::stdout();
    match status {
        200 => {
            let answer: serde_json::Value = serde_json::from_str(&answer)?;
            writeln!(
                out,
                "{} {} by {}: {}",
                answer["decision"].as_str().unwrap_or(action),
                args.id,
                by,
                answer["prompt"].as_str().unwrap_or_default()
            )?;
            Ok(ExitCode::SUCCESS)
        }
        404 => {
            writeln!(
                out,
                "no pending approval {} (unknown, decided or timed out)",
                args.id
            )?;
            Ok(ExitCode::FAILURE)
        }
        _ => anyhow::bail!("{url}{path}: {status} {answer}"),
    }
}

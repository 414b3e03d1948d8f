//! The configuration file (TOML): parsed once into a raw form that refuses unknown keys,
//! then validated into [`Config`], after which nothing re-checks it. Every problem is
//! reported with the key it is about.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::aws::account::{AccountId, AccountNames, account_of_key};
use crate::policy::{EndpointSpec, Limits, PolicySpec};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where agents' `HTTPS_PROXY` points.
    pub listen: SocketAddr,
    /// Where agents' `AWS_ENDPOINT_URL` points, if enabled.
    pub endpoint_listen: Option<SocketAddr>,
    /// Where agents fetch issued keys (`AWS_CONTAINER_CREDENTIALS_FULL_URI`), if enabled.
    pub credentials_listen: Option<SocketAddr>,
    /// `ca.pem`, `ca.key`, issued keys and the policy store.
    pub state_dir: PathBuf,
    pub credentials: HashMap<String, BaseCredential>,
    pub endpoints: Vec<Endpoint>,
    pub agents: Vec<Agent>,
    /// The admin listener (approvals, metrics), if enabled.
    pub admin: Option<Admin>,
    /// The audit log, if enabled.
    pub audit: Option<Audit>,
    /// Bounds on agents' connections (`[proxy]`).
    pub connections: Connections,
    /// `[cluster]`: replicas sharing state through PostgreSQL; `None` keeps everything in
    /// the state directory.
    pub cluster: Option<Cluster>,
}

/// `[cluster]`: where replicas share approvals, agents and the audit trail.
#[derive(Clone)]
pub struct Cluster {
    /// `postgres://user@host:port/database` (never with a password in it).
    pub database: String,
    /// The database password, read from `password_file` or `password_env` at start.
    pub password: Option<String>,
    /// This replica's name: in its audit records, its metrics, its approvals.
    pub replica: String,
    /// Past this without reaching the database, issued keys are refused (config agents
    /// keep working).
    pub grace: Duration,
    /// The certificates the database's TLS certificate must chain to; default: the
    /// public web roots (webpki-roots).
    pub ca_file: Option<PathBuf>,
    /// With it, the CA and the keyring are kept in the database sealed with this key
    /// (64 hex digits), and every replica takes them from there.
    pub secrets_key_file: Option<PathBuf>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("database", &self.database)
            .field("replica", &self.replica)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// `[proxy]`'s bounds on agents' connections: every wait on an agent ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    /// A TLS handshake (after CONNECT, or on the direct listener) must end within this.
    pub handshake_timeout: Duration,
    /// A request body that sends nothing for this long is abandoned (`RequestTimeout`).
    pub body_timeout: Duration,
    /// At most this many agent connections at once; past it sigward stops accepting
    /// until one ends (the kernel's backlog holds the rest).
    pub max_connections: usize,
    /// The memory all request bodies read whole may use together; past it, `503 SlowDown`.
    pub max_buffered_bytes: usize,
    /// On SIGTERM or SIGINT, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_buffered_bytes: 512 << 20,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// `[admin]`: where humans approve and Prometheus scrapes; every API call needs the token.
#[derive(Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    pub token: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// `[audit]`: one hash-chained JSON line per request.
#[derive(Debug, Clone)]
pub struct Audit {
    pub path: PathBuf,
    /// When the log cannot be written: refuse requests (the default), or serve on.
    pub fail_open: bool,
}

/// What an endpoint does with its policies' verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Verdicts are enforced.
    Enforce,
    /// Everything is allowed; the verdicts policies would have given are logged.
    Record,
}

#[derive(Clone, PartialEq, Eq)]
pub enum BaseCredential {
    Static {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
    /// The standard AWS environment variables, read when first needed.
    Environment,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: String,
    /// Host patterns (`*.amazonaws.com`) sigward intercepts for this endpoint.
    pub hosts: Vec<String>,
    /// The role assumed in each target account.
    pub role: String,
    pub region: String,
    pub credential: String,
    pub accounts: AccountNames,
    /// Forward every request here instead of to the real host (tests, emulators).
    pub upstream: Option<String>,
    /// An HTTP CONNECT proxy that carries API calls and STS.
    pub dial_via: Option<String>,
    pub verify_signatures: bool,
    pub policies: Vec<PolicySpec>,
    pub limits: Limits,
    /// How long a request waits for a human before it is denied.
    pub approval_timeout: Duration,
    /// How long the upstream may take to start answering (`504` past it).
    pub response_timeout: Duration,
    /// The assumed-role sessions' source identity (`sts:SetSourceIdentity`), a template of
    /// `{agent}`, `{endpoint}`, `{account}`.
    pub source_identity: Option<String>,
    /// The assumed-role sessions' tags (`sts:TagSession`), values templates as above.
    pub session_tags: Vec<(String, String)>,
    /// Told of each new pending approval (JSON with a Slack-compatible `text`).
    pub approval_webhook: Option<String>,
    pub mode: Mode,
}

#[derive(Clone)]
pub struct Agent {
    pub name: String,
    pub access_key_ids: Vec<String>,
    pub secret_access_key: String,
}

// Debug output never shows a secret: configs end up in logs and panics.
impl std::fmt::Debug for BaseCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BaseCredential::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
            BaseCredential::Environment => f.write_str("Environment"),
        }
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("name", &self.name)
            .field("access_key_ids", &self.access_key_ids)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Read `path`, or the embedded defaults without one.
    pub fn load_or_defaults(path: Option<&Path>) -> Result<Self, ConfigError> {
        path.map_or_else(|| Ok(Self::defaults()), Self::load)
    }

    /// The account `text` names: a 12-digit id, or a name some endpoint's `accounts` gives.
    pub fn account(&self, text: &str) -> Result<AccountId, ConfigError> {
        if let Some(id) = AccountId::parse(text) {
            return Ok(id);
        }
        self.endpoints
            .iter()
            .find_map(|e| e.accounts.id_of(text))
            .ok_or_else(|| {
                let mut known: Vec<String> = self
                    .endpoints
                    .iter()
                    .flat_map(|e| e.accounts.labels())
                    .collect();
                known.sort();
                known.dedup();
                ConfigError(format!(
                    "account {text:?} is neither a 12-digit id nor a name in an endpoint's accounts{}",
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", known.join(", "))
                    }
                ))
            })
    }

    /// `prod (111111111111)` when some endpoint names the account, else the id.
    pub fn account_label(&self, account: &AccountId) -> String {
        match self.account_name(account) {
            Some(name) => format!("{name} ({account})"),
            None => account.to_string(),
        }
    }

    /// The operator's name for `account`, if an endpoint gives one.
    pub fn account_name(&self, account: &AccountId) -> Option<&str> {
        self.endpoints.iter().find_map(|e| e.accounts.name(account))
    }

    /// The policy sets the engine builds, one per endpoint.
    pub fn endpoint_specs(&self) -> Vec<EndpointSpec> {
        self.endpoints
            .iter()
            .map(|e| EndpointSpec {
                name: e.name.clone(),
                policies: e.policies.clone(),
                limits: e.limits.clone(),
            })
            .collect()
    }

    /// The engine's pool, sized for the largest memory limit any endpoint sets (at least
    /// the default 64 MiB, so a reload may raise limits up to that).
    pub fn engine_options(&self) -> crate::policy::engine::EngineOptions {
        let defaults = crate::policy::engine::EngineOptions::default();
        let largest = self
            .endpoints
            .iter()
            .map(|e| e.limits.memory_bytes)
            .max()
            .unwrap_or(0);
        crate::policy::engine::EngineOptions {
            max_memory_bytes: largest.max(defaults.max_memory_bytes),
            // With an audit log, every module is kept for `sigward audit replay`.
            module_store: self.audit.as_ref().map(|_| self.module_store()),
            ..defaults
        }
    }

    /// Where modules are kept by digest for replay: `<state>/policies`.
    pub fn module_store(&self) -> PathBuf {
        self.state_dir.join("policies")
    }

    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text, path.parent())
    }

    /// Validate config text; relative policy paths resolve against `base` (the file's folder).
    pub fn parse(text: &str, base: Option<&Path>) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError(one_line(&e.to_string())))?;
        raw.validate(base)
    }

    /// The embedded defaults: listen on 127.0.0.1:8080, intercept `*.amazonaws.com`, the
    /// two built-in policies, the base credential from the environment.
    pub fn defaults() -> Self {
        // INVARIANT: the embedded default config is valid; `defaults_are_valid` tests it.
        Self::parse(DEFAULT_CONFIG, None).expect("the embedded default config is valid")
    }
}

/// What `sigward serve` runs with when no config is given.
pub const DEFAULT_CONFIG: &str = r#"
[proxy]
listen = "127.0.0.1:8080"

[credential.base]
source = "environment"

[[endpoint]]
name = "default"
hosts = ["*.amazonaws.com"]
role = "sigward"
region = "us-east-1"
credential = "base"
policies = [
  { module = "builtin:read-only", settings = { approvers = ["oncall"] } },
  { module = "builtin:no-secrets" },
]
"#;

/// A configuration problem, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    proxy: RawProxy,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    credential: HashMap<String, RawCredential>,
    #[serde(default)]
    endpoint: Vec<RawEndpoint>,
    #[serde(default)]
    agent: Vec<RawAgent>,
    admin: Option<RawAdmin>,
    audit: Option<RawAudit>,
    cluster: Option<RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    database: String,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    replica: Option<String>,
    grace: Option<String>,
    ca_file: Option<PathBuf>,
    secrets_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
    token: Option<String>,
    token_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: PathBuf,
    on_failure: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    listen: Option<String>,
    endpoint_listen: Option<String>,
    credentials_listen: Option<String>,
    handshake_timeout: Option<String>,
    body_timeout: Option<String>,
    max_connections: Option<usize>,
    max_buffered_mib: Option<usize>,
    shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    source: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    hosts: Vec<String>,
    role: String,
    region: String,
    credential: String,
    #[serde(default)]
    accounts: Vec<String>,
    upstream: Option<String>,
    dial_via: Option<String>,
    verify_signatures: Option<bool>,
    #[serde(default)]
    policies: Vec<PolicySpec>,
    memory_mib: Option<usize>,
    deadline_ms: Option<u64>,
    fuel: Option<u64>,
    approval_timeout: Option<String>,
    response_timeout: Option<String>,
    source_identity: Option<String>,
    #[serde(default)]
    tags: std::collections::BTreeMap<String, String>,
    approval_webhook: Option<String>,
    mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: String,
    access_key_ids: Vec<String>,
    secret_access_key: String,
}

/// A timeout: `500ms`, `10s`, `5m`, `1h`; at least 1 ms.
fn timeout(key: &str, text: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(text) = text.map(str::trim) else {
        return Ok(default);
    };
    let bad = || {
        ConfigError(format!(
            "{key}: {text:?} is not a timeout like 500ms, 10s or 5m"
        ))
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    if duration.is_zero() {
        return Err(ConfigError(format!("{key}: {text:?} must be at least 1ms")));
    }
    Ok(duration)
}

fn address(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse().map_err(|_| {
        ConfigError(format!(
            "{key}: {text:?} is not an address like 127.0.0.1:8080"
        ))
    })
}

fn url(key: &str, text: &str) -> Result<String, ConfigError> {
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"));
    match rest {
        Some(authority) if !authority.is_empty() && !authority.starts_with('/') => {
            Ok(text.trim_end_matches('/').to_string())
        }
        _ => Err(ConfigError(format!(
            "{key}: {text:?} is not an http:// or https:// URL"
        ))),
    }
}

impl RawConfig {
    fn validate(self, base: Option<&Path>) -> Result<Config, ConfigError> {
        let listen = address(
            "proxy.listen",
            self.proxy.listen.as_deref().unwrap_or("127.0.0.1:8080"),
        )?;
        let endpoint_listen = self
            .proxy
            .endpoint_listen
            .as_deref()
            .map(|a| address("proxy.endpoint_listen", a))
            .transpose()?;
        let credentials_listen = self
            .proxy
            .credentials_listen
            .as_deref()
            .map(|a| address("proxy.credentials_listen", a))
            .transpose()?;
        if let Some(address) = credentials_listen
            && !address.ip().is_loopback()
        {
            // AWS SDKs fetch container credentials over plain HTTP only from loopback.
            return Err(ConfigError(format!(
                "proxy.credentials_listen: {address} is not a loopback address (AWS SDKs accept http:// credential endpoints only on 127.0.0.1 or ::1)"
            )));
        }
        let defaults = Connections::default();
        let connections = Connections {
            handshake_timeout: timeout(
                "proxy.handshake_timeout",
                self.proxy.handshake_timeout.as_deref(),
                defaults.handshake_timeout,
            )?,
            body_timeout: timeout(
                "proxy.body_timeout",
                self.proxy.body_timeout.as_deref(),
                defaults.body_timeout,
            )?,
            max_connections: match self.proxy.max_connections {
                Some(0) => {
                    return Err(ConfigError(
                        "proxy.max_connections: must be at least 1".into(),
                    ));
                }
                Some(n) => n,
                None => defaults.max_connections,
            },
            max_buffered_bytes: match self.proxy.max_buffered_mib {
                Some(0) => {
                    return Err(ConfigError(
                        "proxy.max_buffered_mib: must be at least 1".into(),
                    ));
                }
                Some(n) => n.saturating_mul(1 << 20),
                None => defaults.max_buffered_bytes,
            },
            shutdown_grace: timeout(
                "proxy.shutdown_grace",
                self.proxy.shutdown_grace.as_deref(),
                defaults.shutdown_grace,
            )?,
        };
        let state_dir = self.state.dir.unwrap_or_else(default_state_dir);

        let mut credentials = HashMap::new();
        for (name, raw) in self.credential {
            let key = format!("credential.{name}");
            let credential = match (
                raw.source.as_deref(),
                raw.access_key_id,
                raw.secret_access_key,
            ) {
                (Some("environment"), None, None) if raw.session_token.is_none() => {
                    BaseCredential::Environment
                }
                (Some("environment"), _, _) => {
                    return Err(ConfigError(format!(
                        "{key}: source = \"environment\" takes no keys"
                    )));
                }
                (Some(other), _, _) => {
                    return Err(ConfigError(format!(
                        "{key}.source: {other:?} is not \"environment\""
                    )));
                }
                (None, Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
                    BaseCredential::Static {
                        access_key_id: id,
                        secret_access_key: secret,
                        session_token: raw.session_token,
                    }
                }
                _ => {
                    return Err(ConfigError(format!(
                        "{key}: needs access_key_id and secret_access_key, or source = \"environment\""
                    )));
                }
            };
            credentials.insert(name, credential);
        }

        let mut names = HashSet::new();
        let mut endpoints = Vec::with_capacity(self.endpoint.len());
        for (i, raw) in self.endpoint.into_iter().enumerate() {
            let key = format!("endpoint[{i}] ({})", raw.name);
            if raw.name.is_empty() || !names.insert(raw.name.clone()) {
                return Err(ConfigError(format!(
                    "{key}.name: empty or used by another endpoint"
                )));
            }
            if raw.hosts.is_empty() || raw.hosts.iter().any(|h| h.is_empty()) {
                return Err(ConfigError(format!(
                    "{key}.hosts: list at least one host pattern"
                )));
            }
            if raw.role.is_empty() {
                return Err(ConfigError(format!("{key}.role: empty")));
            }
            if !crate::aws::host::is_region(&raw.region) {
                return Err(ConfigError(format!(
                    "{key}.region: {:?} is not a region",
                    raw.region
                )));
            }
            if !credentials.contains_key(&raw.credential) {
                let mut have: Vec<&str> = credentials.keys().map(String::as_str).collect();
                have.sort_unstable();
                return Err(ConfigError(format!(
                    "{key}.credential: no [credential.{}] (have: {})",
                    raw.credential,
                    have.join(", ")
                )));
            }
            let accounts = AccountNames::parse(raw.accounts.iter().map(String::as_str))
                .map_err(|e| ConfigError(format!("{key}.accounts: {e}")))?;
            let upstream = raw
                .upstream
                .as_deref()
                .map(|u| url(&format!("{key}.upstream"), u))
                .transpose()?;
            let dial_via = raw
                .dial_via
                .as_deref()
                .map(|u| url(&format!("{key}.dial_via"), u))
                .transpose()?;
            let policies = raw
                .policies
                .into_iter()
                .map(|mut p| {
                    // Relative module paths are relative to the config file.
                    if !p.module.starts_with("builtin:")
                        && let Some(base) = base
                        && Path::new(&p.module).is_relative()
                    {
                        p.module = base.join(&p.module).display().to_string();
                    }
                    p
                })
                .collect();
            let defaults = Limits::default();
            let limits = Limits {
                memory_bytes: raw
                    .memory_mib
                    .map_or(defaults.memory_bytes, |m| m.saturating_mul(1 << 20)),
                deadline: raw
                    .deadline_ms
                    .map_or(defaults.deadline, Duration::from_millis),
                fuel: raw.fuel.unwrap_or(defaults.fuel),
            };
            let approval_timeout = match raw.approval_timeout.as_deref() {
                None => Duration::from_secs(300),
                Some(text) => crate::agents::parse_ttl(text)
                    .map_err(|e| ConfigError(format!("{key}.approval_timeout: {e}")))?,
            };
            let response_timeout = timeout(
                &format!("{key}.response_timeout"),
                raw.response_timeout.as_deref(),
                Duration::from_secs(60),
            )?;
            let template = |what: String, text: &str| -> Result<(), ConfigError> {
                let mut rest = text;
                while let Some(open) = rest.find('{') {
                    let close = rest[open..].find('}').map(|c| open + c).ok_or_else(|| {
                        ConfigError(format!("{what}: {text:?} has a {{ without }}"))
                    })?;
                    let name = &rest[open + 1..close];
                    if !matches!(name, "agent" | "endpoint" | "account") {
                        return Err(ConfigError(format!(
                            "{what}: {{{name}}} is not {{agent}}, {{endpoint}} or {{account}}"
                        )));
                    }
                    rest = &rest[close + 1..];
                }
                Ok(())
            };
            if let Some(text) = &raw.source_identity {
                template(format!("{key}.source_identity"), text)?;
            }
            if raw.tags.len() > 50 {
                return Err(ConfigError(format!(
                    "{key}.tags: {} tags, STS takes at most 50",
                    raw.tags.len()
                )));
            }
            for (name, value) in &raw.tags {
                if name.is_empty() || name.len() > 128 {
                    return Err(ConfigError(format!(
                        "{key}.tags: a tag key must be 1 to 128 characters ({name:?})"
                    )));
                }
                template(format!("{key}.tags.{name}"), value)?;
            }
            let approval_webhook = raw
                .approval_webhook
                .as_deref()
                .map(|u| url(&format!("{key}.approval_webhook"), u))
                .transpose()?;
            let mode = match raw.mode.as_deref() {
                None | Some("enforce") => Mode::Enforce,
                Some("record") => Mode::Record,
                Some(other) => {
                    return Err(ConfigError(format!(
                        "{key}.mode: {other:?} is not \"enforce\" or \"record\""
                    )));
                }
            };
            endpoints.push(Endpoint {
                name: raw.name,
                hosts: raw.hosts,
                role: raw.role,
                region: raw.region,
                credential: raw.credential,
                accounts,
                upstream,
                dial_via,
                verify_signatures: raw.verify_signatures.unwrap_or(true),
                policies,
                limits,
                approval_timeout,
                response_timeout,
                source_identity: raw.source_identity,
                session_tags: raw.tags.into_iter().collect(),
                approval_webhook,
                mode,
            });
        }

        let mut agent_names = HashSet::new();
        let mut key_ids = HashSet::new();
        let mut agents = Vec::with_capacity(self.agent.len());
        for (i, raw) in self.agent.into_iter().enumerate() {
            let key = format!("agent[{i}] ({})", raw.name);
            if raw.name.is_empty() || !agent_names.insert(raw.name.clone()) {
                return Err(ConfigError(format!(
                    "{key}.name: empty or used by another agent"
                )));
            }
            if raw.secret_access_key.is_empty() {
                return Err(ConfigError(format!("{key}.secret_access_key: empty")));
            }
            for id in &raw.access_key_ids {
                if account_of_key(id).is_none() {
                    return Err(ConfigError(format!(
                        "{key}.access_key_ids: {id} names no account (use AKIA<12-digit account>XXXX)"
                    )));
                }
                if !key_ids.insert(id.clone()) {
                    return Err(ConfigError(format!(
                        "{key}.access_key_ids: {id} is also another agent's"
                    )));
                }
            }
            agents.push(Agent {
                name: raw.name,
                access_key_ids: raw.access_key_ids,
                secret_access_key: raw.secret_access_key,
            });
        }

        let admin = self
            .admin
            .map(|raw| {
                let listen = address("admin.listen", &raw.listen)?;
                let token = match (raw.token, raw.token_env) {
                    (Some(token), None) => token,
                    (None, Some(var)) => std::env::var(&var)
                        .map_err(|_| ConfigError(format!("admin.token_env: {var} is not set")))?,
                    _ => {
                        return Err(ConfigError(
                            "admin: set exactly one of token and token_env".into(),
                        ));
                    }
                };
                if token.len() < 16 {
                    return Err(ConfigError(
                        "admin: the token must be at least 16 characters".into(),
                    ));
                }
                Ok(Admin { listen, token })
            })
            .transpose()?;
        let audit = self
            .audit
            .map(|raw| {
                let fail_open = match raw.on_failure.as_deref() {
                    None | Some("deny") => false,
                    Some("allow") => true,
                    Some(other) => {
                        return Err(ConfigError(format!(
                            "audit.on_failure: {other:?} is not \"deny\" or \"allow\""
                        )));
                    }
                };
                let path = match base {
                    Some(base) if raw.path.is_relative() => base.join(&raw.path),
                    _ => raw.path,
                };
                Ok(Audit { path, fail_open })
            })
            .transpose()?;

        let cluster = self.cluster.map(|raw| raw.validate(base)).transpose()?;

        Ok(Config {
            cluster,
            admin,
            audit,
            listen,
            endpoint_listen,
            credentials_listen,
            connections,
            state_dir,
            credentials,
            endpoints,
            agents,
        })
    }
}

impl RawCluster {
    fn validate(self, base: Option<&Path>) -> Result<Cluster, ConfigError> {
        let url = self.database.trim();
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                ConfigError(format!(
                    "cluster.database: {url:?} is not a postgres://user@host:port/database URL"
                ))
            })?;
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if let Some((user, _)) = authority.rsplit_once('@')
            && user.contains(':')
        {
            return Err(ConfigError(
                "cluster.database: the URL holds a password; put it in a file (password_file) or \
                 the environment (password_env), never in the config"
                    .into(),
            ));
        }
        if url.contains("password=") {
            return Err(ConfigError(
                "cluster.database: the URL holds a password parameter; use password_file or password_env"
                    .into(),
            ));
        }
        if let Err(e) = url.parse::<tokio_postgres::Config>() {
            return Err(ConfigError(format!("cluster.database: {e}")));
        }
        let password = match (self.password_file, self.password_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "cluster: set at most one of password_file and password_env".into(),
                ));
            }
            (Some(file), None) => {
                let file = match base {
                    Some(base) if file.is_relative() => base.join(&file),
                    _ => file,
                };
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    ConfigError(format!("cluster.password_file: {}: {e}", file.display()))
                })?;
                Some(text.trim_end_matches(['\n', '\r']).to_string())
            }
            (None, Some(var)) => Some(
                std::env::var(&var)
                    .map_err(|_| ConfigError(format!("cluster.password_env: {var} is not set")))?,
            ),
            (None, None) => None,
        };
        let replica = match self.replica {
            Some(name) => name,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
        };
        if replica.is_empty()
            || replica.len() > 64
            || !replica
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(ConfigError(format!(
                "cluster.replica: {replica:?}: use letters, digits, '-', '_' and '.' (at most 64)"
            )));
        }
        let grace = match self.grace {
            Some(text) => crate::agents::parse_ttl(&text)
                .map_err(|e| ConfigError(format!("cluster.grace: {e}")))?,
            None => Duration::from_secs(5),
        };
        let ca_file = self.ca_file.map(|file| match base {
            Some(base) if file.is_relative() => base.join(file),
            _ => file,
        });
        if let Some(file) = &ca_file
            && !file.is_file()
        {
            return Err(ConfigError(format!(
                "cluster.ca_file: {} is not a file",
                file.display()
            )));
        }
        let secrets_key_file = self.secrets_key_file.map(|file| match base {
            Some(base) if file.is_relative() => base.join(file),
            _ => file,
        });
        if let Some(file) = &secrets_key_file {
            crate::state::secrets::SealingKey::load(file).map_err(ConfigError)?;
        }
        Ok(Cluster {
            database: url.to_string(),
            password,
            replica,
            grace,
            ca_file,
            secrets_key_file,
        })
    }
}

/// `$XDG_STATE_HOME/sigward`, else `~/.local/state/sigward`.
fn default_state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("sigward")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[proxy]
listen = "127.0.0.1:8080"
endpoint_listen = "127.0.0.1:8443"
handshake_timeout = "10s"
body_timeout = "30s"
max_connections = 10000
max_buffered_mib = 512
shutdown_grace = "30s"

[state]
dir = "/var/lib/sigward"

[credential.base]
access_key_id = "AKIAEXAMPLEBASEKEY00"
secret_access_key = "base-secret"

[[endpoint]]
name = "avocet2"
hosts = ["*.amazonaws.com"]
role = "clawpatrol-gateway"
region = "us-east-1"
credential = "base"
accounts = ["111111111111=prod", "222222222222=staging"]
source_identity = "{agent}"
tags = { agent = "{agent}", endpoint = "{endpoint}" }
upstream = "http://127.0.0.1:5000"
approval_timeout = "90s"
approval_webhook = "https://hooks.example.com/sigward"
policies = [
  { module = "builtin:read-only", settings = { approvers = ["oncall"] } },
  { module = "builtin:no-secrets" },
  { module = "policies/mine.wasm" },
]

[[agent]]
name = "claude"
access_key_ids = ["AKIA111111111111XXXX", "AKIA222222222222XXXX"]
secret_access_key = "agent-secret"

[admin]
listen = "127.0.0.1:8081"
token = "admin-secret-token"

[audit]
path = "audit/sigward.jsonl"
"#;

    #[test]
    fn debug_output_shows_no_secret() {
        let config = Config::parse(EXAMPLE, None).expect("valid");
        let shown = format!("{config:?}");
        assert!(shown.contains("AKIAEXAMPLEBASEKEY00") && shown.contains("claude"));
        assert!(
            !shown.contains("base-secret")
                && !shown.contains("agent-secret")
                && !shown.contains("admin-secret"),
            "{shown}"
        );
    }

    #[test]
    fn the_documented_example_parses() {
        let config = Config::parse(EXAMPLE, Some(Path::new("/etc/sigward"))).expect("valid");
        assert_eq!(config.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(
            config.endpoint_listen,
            Some("127.0.0.1:8443".parse().expect("addr"))
        );
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/sigward"));
        let admin = config.admin.as_ref().expect("[admin]");
        assert_eq!(admin.listen, "127.0.0.1:8081".parse().expect("addr"));
        let audit = config.audit.as_ref().expect("[audit]");
        assert_eq!(
            audit.path,
            PathBuf::from("/etc/sigward/audit/sigward.jsonl")
        );
        assert!(!audit.fail_open, "fail closed by default");
        let endpoint = &config.endpoints[0];
        assert_eq!(endpoint.approval_timeout, Duration::from_secs(90));
        assert_eq!(endpoint.mode, Mode::Enforce);
        assert!(endpoint.verify_signatures, "on by default");
        assert_eq!(endpoint.upstream.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(
            endpoint.policies[2].module,
            "/etc/sigward/policies/mine.wasm"
        );
        assert_eq!(endpoint.limits, Limits::default());
        assert_eq!(config.agents[0].access_key_ids.len(), 2);
        assert_eq!(config.endpoint_specs()[0].policies.len(), 3);
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::defaults();
        assert_eq!(config.credentials["base"], BaseCredential::Environment);
        assert_eq!(config.endpoints[0].hosts, ["*.amazonaws.com"]);
        assert_eq!(config.endpoints[0].policies.len(), 2);
        assert_eq!(config.connections, Connections::default());
        assert_eq!(
            config.endpoints[0].response_timeout,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn timeouts_and_the_connection_cap() {
        let config = Config::parse(
            "[proxy]\nhandshake_timeout = \"500ms\"\nbody_timeout = \"2m\"\nmax_connections = 7\n\
             [credential.base]\nsource = \"environment\"\n\
             [[endpoint]]\nname = \"e\"\nhosts = [\"*.amazonaws.com\"]\nrole = \"r\"\nregion = \"us-east-1\"\n\
             credential = \"base\"\nresponse_timeout = \"15m\"",
            None,
        )
        .expect("valid");
        assert_eq!(
            config.connections,
            Connections {
                handshake_timeout: Duration::from_millis(500),
                body_timeout: Duration::from_secs(120),
                max_connections: 7,
                max_buffered_bytes: 512 << 20,
                shutdown_grace: Duration::from_secs(30),
            }
        );
        assert_eq!(
            config.endpoints[0].response_timeout,
            Duration::from_secs(900)
        );
    }

    #[test]
    fn problems_name_their_key() {
        let cases = [
            (
                "[proxy]\nlisten = \"nope\"",
                "proxy.listen: \"nope\" is not an address",
            ),
            ("[proxy]\nlisen = \"127.0.0.1:1\"", "unknown field `lisen`"),
            (
                "[proxy]\nhandshake_timeout = \"10\"",
                "proxy.handshake_timeout: \"10\" is not a timeout like 500ms, 10s or 5m",
            ),
            (
                "[proxy]\nbody_timeout = \"0s\"",
                "proxy.body_timeout: \"0s\" must be at least 1ms",
            ),
            (
                "[proxy]\nmax_connections = 0",
                "proxy.max_connections: must be at least 1",
            ),
            (
                "[[endpoint]]\nname = \"e\"\nhosts = [\"*\"]\nrole = \"r\"\nregion = \"us-east-1\"\ncredential = \"nope\"",
                "endpoint[0] (e).credential: no [credential.nope] (have: )",
            ),
            (
                "[credential.b]\nsource = \"environment\"\n[[endpoint]]\nname = \"e\"\nhosts = [\"*\"]\nrole = \"r\"\nregion = \"moon-1\"\ncredential = \"b\"",
                "endpoint[0] (e).region: \"moon-1\" is not a region",
            ),
            (
                "[credential.b]\nsource = \"environment\"\n[[endpoint]]\nname = \"e\"\nhosts = [\"*\"]\nrole = \"r\"\nregion = \"us-east-1\"\ncredential = \"b\"\naccounts = [\"prod\"]",
                "endpoint[0] (e).accounts: account label \"prod\"",
            ),
            (
                "[credential.b]\nsource = \"environment\"\n[[endpoint]]\nname = \"e\"\nhosts = [\"*\"]\nrole = \"r\"\nregion = \"us-east-1\"\ncredential = \"b\"\nresponse_timeout = \"soon\"",
                "endpoint[0] (e).response_timeout: \"soon\" is not a timeout",
            ),
            (
                "[credential.b]\naccess_key_id = \"A\"",
                "credential.b: needs access_key_id and secret_access_key",
            ),
            (
                "[credential.b]\nsource = \"vault\"",
                "credential.b.source: \"vault\" is not \"environment\"",
            ),
            (
                "[[agent]]\nname = \"a\"\naccess_key_ids = [\"AKIAIOSFODNN7EXAMPLE\"]\nsecret_access_key = \"s\"",
                "agent[0] (a).access_key_ids: AKIAIOSFODNN7EXAMPLE names no account",
            ),
            (
                "[[agent]]\nname = \"a\"\naccess_key_ids = [\"AKIA111111111111XXXX\"]\nsecret_access_key = \"s\"\n[[agent]]\nname = \"b\"\naccess_key_ids = [\"AKIA111111111111XXXX\"]\nsecret_access_key = \"s\"",
                "agent[1] (b).access_key_ids: AKIA111111111111XXXX is also another agent's",
            ),
            (
                "[proxy]\ncredentials_listen = \"0.0.0.0:8082\"",
                "proxy.credentials_listen: 0.0.0.0:8082 is not a loopback address",
            ),
            (
                "[admin]\nlisten = \"127.0.0.1:1\"",
                "admin: set exactly one of token and token_env",
            ),
            (
                "[admin]\nlisten = \"127.0.0.1:1\"\ntoken = \"short\"",
                "admin: the token must be at least 16 characters",
            ),
            (
                "[admin]\nlisten = \"127.0.0.1:1\"\ntoken_env = \"SIGWARD_TEST_UNSET_VARIABLE\"",
                "admin.token_env: SIGWARD_TEST_UNSET_VARIABLE is not set",
            ),
            (
                "[audit]\npath = \"a.jsonl\"\non_failure = \"ignore\"",
                "audit.on_failure: \"ignore\" is not \"deny\" or \"allow\"",
            ),
            (
                "[credential.b]\nsource = \"environment\"\n[[endpoint]]\nname = \"e\"\nhosts = [\"*\"]\nrole = \"r\"\nregion = \"us-east-1\"\ncredential = \"b\"\nmode = \"watch\"",
                "endpoint[0] (e).mode: \"watch\" is not \"enforce\" or \"record\"",
            ),
            (
                "[credential.b]\nsource = \"environment\"\n[[endpoint]]\nname = \"e\"\nhosts = [\"*\"]\nrole = \"r\"\nregion = \"us-east-1\"\ncredential = \"b\"\napproval_timeout = \"soon\"",
                "endpoint[0] (e).approval_timeout: \"soon\" is not a lifetime",
            ),
            (
                "[credential.b]\nsource = \"environment\"\n[[endpoint]]\nname = \"e\"\nhosts = [\"*\"]\nrole = \"r\"\nregion = \"us-east-1\"\ncredential = \"b\"\napproval_webhook = \"hooks.example\"",
                "endpoint[0] (e).approval_webhook: \"hooks.example\" is not an http:// or https:// URL",
            ),
        ];
        for (text, expected) in cases {
            let error = Config::parse(text, None).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}\n→ {error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
    }
}

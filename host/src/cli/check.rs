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
    // [cluster]: the database must answer, at a schema this build knows, with the rights
    // sigward needs. Checking migrates nothing.
    let shared_issued = match &config.cluster {
        Some(cluster) => match database_problems(cluster) {
            Ok((found, issued)) => {
                problems.extend(found);
                issued
            }
            Err(problem) => {
                problems.push(problem);
                None
            }
        },
        None => None,
    };
    let issued = match shared_issued {
        Some(issued) => issued,
        None if config.cluster.is_some() => 0,
        None => match AgentStore::new(&config.state_dir).load() {
            Ok(agents) => agents
                .records()
                .iter()
                .filter(|r| r.revoked_at.is_none())
                .count(),
            Err(e) => {
                problems.push(format!("state.dir: agents: {e}"));
                0
            }
        },
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

/// What is wrong with `[cluster]`'s database, and how many active agents it holds (when
/// its schema has them).
fn database_problems(
    cluster: &crate::config::Cluster,
) -> Result<(Vec<String>, Option<usize>), String> {
    use crate::state::database::SCHEMA_VERSION;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cluster.database: {e}"))?;
    runtime.block_on(async {
        let database = crate::state::Database::connect(cluster)
            .await
            .map_err(|e| format!("cluster.database: {e}"))?;
        let version = database
            .schema_version()
            .await
            .map_err(|e| format!("cluster.database: {e}"))?;
        let mut problems = Vec::new();
        if version > SCHEMA_VERSION {
            problems.push(format!(
                "cluster.database: schema version {version} is newer than this sigward knows ({SCHEMA_VERSION}): upgrade sigward"
            ));
            return Ok((problems, None));
        }
        // Before the first `serve`, sigward creates its tables; after it, it reads and
        // writes them.
        let rights = database
            .run(async move |client| {
                let row = client
                    .query_one(
                        "SELECT has_database_privilege(current_database(), 'CONNECT,TEMPORARY'), \
                         has_schema_privilege('public', 'CREATE')",
                        &[],
                    )
                    .await?;
                let mut missing: Vec<String> = Vec::new();
                let mut agents_readable = true;
                if !row.try_get::<_, bool>(0)? {
                    missing.push("CONNECT on the database".into());
                }
                if version < SCHEMA_VERSION && !row.try_get::<_, bool>(1)? {
                    missing.push("CREATE on schema public (to create sigward's tables)".into());
                }
                for table in ["replicas", "approvals", "agents", "settings", "audit"] {
                    let exists = client
                        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
                        .await?
                        .try_get::<_, bool>(0)?;
                    if exists
                        && !client
                            .query_one(
                                "SELECT has_table_privilege($1, 'SELECT,INSERT,UPDATE')",
                                &[&table],
                            )
                            .await?
                            .try_get::<_, bool>(0)?
                    {
                        missing.push(format!("SELECT, INSERT and UPDATE on {table}"));
                        agents_readable &= table != "agents";
                    }
                }
                let issued = if version >= 2 && agents_readable {
                    let row = client
                        .query_one("SELECT count(*) FROM agents WHERE revoked_at IS NULL", &[])
                        .await?;
                    Some(row.try_get::<_, i64>(0)?.max(0) as usize)
                } else {
                    None
                };
                Ok((missing, issued))
            })
            .await
            .map_err(|e| format!("cluster.database: {e}"))?;
        let (missing, issued) = rights;
        if !missing.is_empty() {
            problems.push(format!(
                "cluster.database: the user lacks {}",
                missing.join(", ")
            ));
        }
        if version < SCHEMA_VERSION {
            tracing::info!(
                "cluster.database: schema version {version}; the next `sigward serve` migrates it to {SCHEMA_VERSION}"
            );
        }
        Ok((problems, issued))
    })
}

//! Agents in the shared database (`[cluster]`): the records every replica reads, written
//! by `sigward agent add|revoke` on any of them; a change is announced (NOTIFY) so every
//! replica reads the records again at once, and each reads them every second anyway, so
//! a revocation holds everywhere within a second. The keyring stays in each replica's
//! state directory (the same `agents.key` on every replica); the database keeps only its
//! fingerprint, so a replica with another keyring is refused rather than quietly refusing
//! every key the others issued.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::{AgentError, AgentRecord, Agents, Keyring, LiveAgents};
use crate::config::Cluster;
use crate::state::database::AGENTS_CHANNEL;
use crate::state::{Database, DbError, Event};

/// How often a replica reads the records even without a notification.
pub const REFRESH: Duration = Duration::from_secs(1);

impl From<DbError> for AgentError {
    fn from(error: DbError) -> Self {
        AgentError::Database(error.to_string())
    }
}

/// Run `work` against the cluster's database from synchronous code (the `sigward agent`
/// commands), on a runtime of its own, after taking the cluster's CA and keyring into
/// `dir` when they are kept in the database.
pub fn blocking<T>(
    cluster: &Cluster,
    dir: &std::path::Path,
    work: impl AsyncFnOnce(&Database) -> Result<T, AgentError>,
) -> Result<T, AgentError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::Database(format!("starting a runtime: {e}")))?;
    runtime.block_on(async {
        let database = Database::connect(cluster).await?;
        database.migrate(None).await?;
        share_secrets(&database, cluster, dir).await?;
        work(&database).await
    })
}

/// With `secrets_key_file`: take the cluster's CA and keyring into `dir`, or (the first
/// replica) share this one's ([`crate::state::secrets`]).
pub async fn share_secrets(
    database: &Database,
    cluster: &Cluster,
    dir: &std::path::Path,
) -> Result<(), AgentError> {
    let Some(key_path) = &cluster.secrets_key_file else {
        return Ok(());
    };
    let key = crate::state::secrets::SealingKey::load(key_path).map_err(AgentError::Database)?;
    crate::state::secrets::share(database, &key, key_path, dir, || {
        crate::tls::CertificateAuthority::load_or_create(dir).map_err(|e| e.to_string())?;
        super::AgentStore::new(dir)
            .ensure_keyring()
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(AgentError::Database)
}

/// The cluster's keyring fingerprint is `fingerprint`, or (`register`) becomes it if no
/// replica has registered one yet.
pub async fn check_keyring(
    database: &Database,
    fingerprint: &str,
    register: bool,
) -> Result<(), AgentError> {
    let ours = fingerprint.to_string();
    let registered: Option<String> = database
        .run(async move |client| {
            if register {
                client
                    .execute(
                        "INSERT INTO settings (name, value) VALUES ('keyring', $1) \
                         ON CONFLICT (name) DO NOTHING",
                        &[&ours],
                    )
                    .await?;
            }
            let row = client
                .query_opt("SELECT value FROM settings WHERE name = 'keyring'", &[])
                .await?;
            Ok(match row {
                Some(r) => Some(r.try_get(0)?),
                None => None,
            })
        })
        .await?;
    match registered {
        Some(value) if value == fingerprint => Ok(()),
        Some(_) => Err(AgentError::OtherKeyring),
        // Nobody has issued a key yet: nothing to disagree with.
        None if !register => Ok(()),
        None => Err(AgentError::Database(
            "the keyring's fingerprint could not be registered".into(),
        )),
    }
}

/// Every agent record.
pub async fn load_records(database: &Database) -> Result<Vec<AgentRecord>, AgentError> {
    let rows = database
        .run(async |client| {
            client
                .query(
                    "SELECT name, id, accounts, ttl_seconds, created_at, revoked_at FROM agents \
                     ORDER BY created_at, id",
                    &[],
                )
                .await
        })
        .await?;
    let bad = |e: tokio_postgres::Error| AgentError::Database(format!("the agents table: {e}"));
    rows.iter()
        .map(|row| {
            let name: String = row.try_get(0).map_err(bad)?;
            let accounts: String = row.try_get(2).map_err(bad)?;
            Ok(AgentRecord {
                accounts: serde_json::from_str(&accounts)
                    .map_err(|e| AgentError::Database(format!("agent {name}: accounts: {e}")))?,
                name,
                id: row.try_get(1).map_err(bad)?,
                ttl_seconds: row.try_get::<_, i64>(3).map_err(bad)?.max(0) as u64,
                created_at: row.try_get::<_, i64>(4).map_err(bad)?.max(0) as u64,
                revoked_at: row
                    .try_get::<_, Option<i64>>(5)
                    .map_err(bad)?
                    .map(|t| t.max(0) as u64),
            })
        })
        .collect()
}

/// Add `record`; a name with an active agent is refused (a unique index says so).
pub async fn add_record(database: &Database, record: &AgentRecord) -> Result<(), AgentError> {
    let accounts =
        serde_json::to_string(&record.accounts).map_err(|e| AgentError::Database(e.to_string()))?;
    let (name, id) = (record.name.clone(), record.id.clone());
    let (ttl, created) = (record.ttl_seconds as i64, record.created_at as i64);
    let inserted = database
        .run(async move |client| {
            client
                .execute(
                    "INSERT INTO agents (id, name, accounts, ttl_seconds, created_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[&id, &name, &accounts, &ttl, &created],
                )
                .await
        })
        .await?;
    if inserted == 0 {
        return Err(AgentError::Exists(record.name.clone()));
    }
    database.notify(AGENTS_CHANNEL, &record.name).await?;
    Ok(())
}

/// Revoke the active agent called `name`, and tell every replica at once.
pub async fn revoke_record(
    database: &Database,
    name: &str,
    now: u64,
) -> Result<AgentRecord, AgentError> {
    let row_name = name.to_string();
    let revoked = database
        .run(async move |client| {
            client
                .query_opt(
                    "UPDATE agents SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL \
                     RETURNING id",
                    &[&row_name, &(now as i64)],
                )
                .await
        })
        .await?;
    let Some(row) = revoked else {
        return Err(AgentError::Unknown(name.into()));
    };
    let id: String = row
        .try_get(0)
        .map_err(|e| AgentError::Database(format!("the agents table: {e}")))?;
    database.notify(AGENTS_CHANNEL, name).await?;
    load_records(database)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| AgentError::Unknown(name.into()))
}

/// The records as a replica last read them.
pub struct Snapshot {
    grace: Duration,
    state: Mutex<(Instant, Arc<Agents>)>,
}

impl Snapshot {
    pub fn new(grace: Duration, agents: Agents) -> Self {
        Self {
            grace,
            state: Mutex::new((Instant::now(), Arc::new(agents))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Instant, Arc<Agents>)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The records, unless the database has not answered for longer than the grace: then
    /// a revocation might have been missed, so nothing issued is trusted.
    pub fn current(&self) -> Result<Arc<Agents>, AgentError> {
        let (read_at, agents) = &*self.lock();
        let age = read_at.elapsed();
        if age > self.grace {
            return Err(AgentError::Database(format!(
                "the database has not answered for {}s (grace {}s), so a revocation could have been missed",
                age.as_secs(),
                self.grace.as_secs()
            )));
        }
        Ok(Arc::clone(agents))
    }

    fn replace(&self, agents: Agents) {
        *self.lock() = (Instant::now(), Arc::new(agents));
    }
}

/// Read the records on every agents notification, after the listening connection comes
/// back, and every [`REFRESH`].
pub(super) async fn refresh_forever(
    live: Weak<LiveAgents>,
    database: Arc<Database>,
    keyring: Keyring,
) {
    let mut events = database.subscribe();
    let mut ticker = tokio::time::interval(REFRESH);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(Event::Notified { channel, .. }) if channel != AGENTS_CHANNEL => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                _ => {}
            },
            _ = ticker.tick() => {}
        }
        let Some(live) = live.upgrade() else { return };
        let Some(snapshot) = &live.shared else { return };
        match load_records(&database).await {
            Ok(records) => {
                if failing {
                    tracing::info!(target: "sigward::cluster", "the agents can be read from the database again");
                    failing = false;
                }
                snapshot.replace(Agents {
                    records,
                    keyring: Some(keyring.clone()),
                });
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(target: "sigward::cluster", %error, "cannot read the agents from the database; issued keys are refused after the grace");
                    failing = true;
                }
            }
        }
    }
}

//! The PostgreSQL side of `[cluster]`: a connection pool (deadpool-postgres), the schema's
//! versioned migrations (refinery, `migrations/V*.sql`), one connection that LISTENs for
//! what other replicas announce, and this replica's heartbeat.
//!
//! Every statement is bounded: connecting within [`CONNECT_TIMEOUT`], each query within
//! [`QUERY_TIMEOUT`]; a database that does not answer is an error the caller turns into
//! a refusal, never a wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::StreamExt as _;
use tokio::sync::broadcast;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::Cluster;

mod embedded {
    refinery::embed_migrations!("src/state/migrations");
}

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 4;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a replica says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A replica silent this long has died: its pending approvals are abandoned.
pub const ABANDON_AFTER: Duration = Duration::from_secs(5);

/// The channels replicas announce changes on.
pub const APPROVALS_CHANNEL: &str = "sigward_approvals";
pub const AGENTS_CHANNEL: &str = "sigward_agents";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database {url}: {message}")]
    Unavailable { url: String, message: String },
    #[error("the database {url} did not answer within {}s", QUERY_TIMEOUT.as_secs())]
    Timeout { url: String },
    #[error(
        "the database {url}: schema version {found} is newer than this sigward knows ({SCHEMA_VERSION}): upgrade sigward"
    )]
    TooNew { url: String, found: i32 },
    #[error("the database {url}: migrating the schema failed: {message}")]
    Migration { url: String, message: String },
}

/// What another replica (or this one) announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `NOTIFY channel, payload`.
    Notified { channel: String, payload: String },
    /// The listening connection was re-established: notifications may have been missed,
    /// so whoever caches anything reads it again.
    Resync,
}

/// A replica's connection to the shared database.
pub struct Database {
    pool: Pool,
    /// The URL as configured (no password in it), for messages.
    pub url: String,
    pub replica: String,
    config: tokio_postgres::Config,
    events: broadcast::Sender<Event>,
    /// Whether the listening connection is up (the agents cache goes stale without it).
    listening: AtomicBool,
    tls: MakeRustlsConnect,
}

/// TLS to the database (rustls): used as the URL's `sslmode` says — `require` insists,
/// `prefer` (the default) uses it when the server offers it, `disable` never. The
/// server's certificate is always verified, against `ca_file` or the web's roots.
fn tls(cluster: &Cluster) -> Result<MakeRustlsConnect, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    match &cluster.ca_file {
        Some(file) => {
            let certificates = CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("cluster.ca_file {}: {e}", file.display()))?;
            for certificate in certificates {
                let certificate =
                    certificate.map_err(|e| format!("cluster.ca_file {}: {e}", file.display()))?;
                roots
                    .add(certificate)
                    .map_err(|e| format!("cluster.ca_file {}: {e}", file.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "cluster.ca_file {}: no certificate in it",
                    file.display()
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn error_text(error: &dyn std::error::Error) -> String {
    crate::upstream::error_chain(error)
}

impl Database {
    /// Connect (within [`CONNECT_TIMEOUT`]) and check the database answers; no migration.
    pub async fn connect(cluster: &Cluster) -> Result<Arc<Database>, DbError> {
        let url = cluster.database.clone();
        let unavailable = |message: String| DbError::Unavailable {
            url: url.clone(),
            message,
        };
        let mut config: tokio_postgres::Config = cluster
            .database
            .parse()
            .map_err(|e: tokio_postgres::Error| unavailable(error_text(&e)))?;
        if let Some(password) = &cluster.password {
            config.password(password.as_bytes());
        }
        let remote = config.get_hosts().iter().any(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => {
                !matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1")
            }
            tokio_postgres::config::Host::Unix(_) => false,
        });
        if remote && config.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
            tracing::warn!(target: "sigward::cluster", url = %url, "the database is not on this machine and its URL does not say sslmode=require: the connection may be unencrypted");
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        // A connection whose peer vanished without a word (a partition) is found within
        // seconds, not the system's two hours: the listening one above all, whose silence
        // would otherwise look like a quiet cluster.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        config.application_name(format!("sigward-{}", cluster.replica));
        let tls = tls(cluster).map_err(unavailable)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .wait_timeout(Some(QUERY_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(QUERY_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| unavailable(e.to_string()))?;
        let (events, _) = broadcast::channel(1024);
        let database = Arc::new(Database {
            pool,
            url: url.clone(),
            replica: cluster.replica.clone(),
            config,
            events,
            listening: AtomicBool::new(false),
            tls,
        });
        drop(database.client().await?);
        Ok(database)
    }

    /// A pooled connection, within the bounds.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Timeout(_) => DbError::Timeout {
                url: self.url.clone(),
            },
            other => DbError::Unavailable {
                url: self.url.clone(),
                message: error_text(&other),
            },
        })
    }

    /// Run `work` on a pooled connection, the whole of it bounded by [`QUERY_TIMEOUT`].
    pub async fn run<T, F>(&self, work: F) -> Result<T, DbError>
    where
        F: AsyncFnOnce(&deadpool_postgres::Client) -> Result<T, tokio_postgres::Error>,
    {
        let url = self.url.clone();
        let attempt = async {
            let client = self.client().await?;
            work(&client).await.map_err(|e| DbError::Unavailable {
                url: self.url.clone(),
                message: error_text(&e),
            })
        };
        match tokio::time::timeout(QUERY_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(DbError::Timeout { url }),
        }
    }

    /// The schema version the database is at (0: none yet).
    pub async fn schema_version(&self) -> Result<i32, DbError> {
        self.run(async |client| {
            let exists = client
                .query_one(
                    "SELECT to_regclass('refinery_schema_history') IS NOT NULL",
                    &[],
                )
                .await?
                .try_get::<_, bool>(0)?;
            if !exists {
                return Ok(0);
            }
            let row = client
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM refinery_schema_history",
                    &[],
                )
                .await?;
            row.try_get::<_, i32>(0)
        })
        .await
    }

    /// Bring the schema to `target` (the newest when `None`), refusing a database newer
    /// than this build. Migrations run in one transaction each; replicas starting at once
    /// serialise on an advisory lock.
    pub async fn migrate(&self, target: Option<i32>) -> Result<i32, DbError> {
        let found = self.schema_version().await?;
        if found > SCHEMA_VERSION {
            return Err(DbError::TooNew {
                url: self.url.clone(),
                found,
            });
        }
        let migration = |message: String| DbError::Migration {
            url: self.url.clone(),
            message,
        };
        let mut client = self.client().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        client
            .execute("SELECT pg_advisory_lock(7365776172)", &[])
            .await
            .map_err(|e| migration(error_text(&e)))?;
        let mut runner = embedded::migrations::runner().set_grouped(false);
        if let Some(version) = target {
            runner = runner.set_target(refinery::Target::Version(version as u32));
        }
        let result = runner.run_async(client).await;
        let _ = client
            .execute("SELECT pg_advisory_unlock(7365776172)", &[])
            .await;
        result.map_err(|e| migration(error_text(&e)))?;
        self.schema_version().await
    }

    /// Announce `payload` on `channel` to every replica (this one included).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), DbError> {
        let (channel, payload) = (channel.to_string(), payload.to_string());
        self.run(async move |client| {
            client
                .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                .await
                .map(|_| ())
        })
        .await
    }

    /// What replicas announce, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Keep one connection LISTENing on the channels until the process ends, reconnecting
    /// (with a [`Event::Resync`]) whenever it drops; and say every [`HEARTBEAT`] that this
    /// replica is alive, abandoning what dead replicas held.
    pub fn start_background(self: &Arc<Self>) {
        let database = Arc::clone(self);
        tokio::spawn(async move { database.listen_forever().await });
        let database = Arc::clone(self);
        tokio::spawn(async move { database.heartbeat_forever().await });
    }

    async fn listen_forever(self: Arc<Self>) {
        let mut delay = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            if let Err(message) = self.listen_once().await
                && self.listening.swap(false, Ordering::AcqRel)
            {
                tracing::warn!(target: "sigward::cluster", url = %self.url, error = %message, "lost the database's notifications; reconnecting");
            }
            if started.elapsed() > Duration::from_secs(10) {
                delay = Duration::from_millis(100);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn listen_once(&self) -> Result<(), String> {
        let (client, mut connection) =
            tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(self.tls.clone()))
                .await
                .map_err(|_| "connecting timed out".to_string())?
                .map_err(|e| error_text(&e))?;
        let (messages_tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = stream.next().await {
                match message {
                    Ok(message) => {
                        if messages_tx.send(Ok(message)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = messages_tx.send(Err(error_text(&e)));
                        return;
                    }
                }
            }
            let _ = messages_tx.send(Err("the connection closed".to_string()));
        });
        let listen = async {
            client
                .batch_execute(&format!(
                    "LISTEN {APPROVALS_CHANNEL}; LISTEN {AGENTS_CHANNEL}"
                ))
                .await
        };
        let outcome = match tokio::time::timeout(QUERY_TIMEOUT, listen).await {
            Ok(Ok(())) => {
                self.listening.store(true, Ordering::Release);
                tracing::info!(target: "sigward::cluster", url = %self.url, replica = %self.replica, "listening for other replicas");
                let _ = self.events.send(Event::Resync);
                loop {
                    match messages.recv().await {
                        Some(Ok(AsyncMessage::Notification(n))) => {
                            let _ = self.events.send(Event::Notified {
                                channel: n.channel().to_string(),
                                payload: n.payload().to_string(),
                            });
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break Err(e),
                        None => break Err("the connection closed".into()),
                    }
                }
            }
            Ok(Err(e)) => Err(error_text(&e)),
            Err(_) => Err("LISTEN timed out".into()),
        };
        driver.abort();
        drop(client);
        outcome
    }

    async fn heartbeat_forever(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(HEARTBEAT);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let replica = self.replica.clone();
        let abandon_ms = ABANDON_AFTER.as_millis() as f64;
        loop {
            ticker.tick().await;
            let replica = replica.clone();
            let result = self
                .run(async move |client| {
                    client
                        .execute(
                            "INSERT INTO replicas (id) VALUES ($1) \
                             ON CONFLICT (id) DO UPDATE SET seen_at = now()",
                            &[&replica],
                        )
                        .await?;
                    // What a dead replica held can never be answered: abandoned.
                    let abandoned = client
                        .execute(
                            "UPDATE approvals SET status = 'abandoned', decided_at = now() \
                             WHERE status = 'pending' AND (replica IN \
                               (SELECT id FROM replicas WHERE seen_at < now() - $1 * interval '1 millisecond') \
                               OR expires_at < now() - $1 * interval '1 millisecond')",
                            &[&abandon_ms],
                        )
                        .await?;
                    Ok(abandoned)
                })
                .await;
            match result {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(target: "sigward::cluster", approvals = n, "approvals held by a replica that stopped answering were abandoned");
                }
                Err(error) => {
                    tracing::debug!(target: "sigward::cluster", %error, "heartbeat failed");
                }
            }
        }
    }

    /// At start: approvals this replica held before it stopped cannot be answered now.
    pub async fn abandon_own(&self) -> Result<u64, DbError> {
        let replica = self.replica.clone();
        self.run(async move |client| {
            client
                .execute(
                    "UPDATE approvals SET status = 'abandoned', decided_at = now() \
                     WHERE status = 'pending' AND replica = $1",
                    &[&replica],
                )
                .await
        })
        .await
    }
}

//! Agents sigward issues keys to (`sigward agent add`): their records in the state
//! directory, the short-lived keys delivered to them, and checking those keys.
//!
//! Nothing secret is stored per key. `agents.key` (32 random bytes, 0600, like `ca.key`)
//! is the one secret: a key's secret is HMAC(agents.key, key id), and its session token
//! carries (agent id, account, key id, expiry) under another HMAC of it. So any number of
//! keys can be issued without writing anything, and checking one takes two HMACs and a
//! look at the agent's record — which is why revoking an agent, or a key's expiry, takes
//! effect on the very next request. The keys work only with sigward: they are not AWS's.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64, BASE64URL_NOPAD};
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::aws::account::{AccountId, account_of_key};

pub mod shared;

/// The agents' records, in the state directory.
pub const STORE_FILE: &str = "agents.json";
/// The secret every issued key derives from.
pub const KEY_FILE: &str = "agents.key";
/// How long an issued key lasts unless `agent add --ttl` says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const TOKEN_PREFIX: &str = "sigward1.";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("no agent named {0:?} (`sigward agent list` shows them)")]
    Unknown(String),
    #[error("agent {0:?} was revoked")]
    Revoked(String),
    #[error("agent {0:?} already exists; revoke it first or choose another name")]
    Exists(String),
    #[error("agent {agent:?} may not use account {account} (its accounts: {have})")]
    NoAccount {
        agent: String,
        account: String,
        have: String,
    },
    #[error("invalid agent name {0:?}: use letters, digits, '-' and '_' (at most 64)")]
    BadName(String),
    #[error("{KEY_FILE} is missing from the state directory: sigward cannot issue keys")]
    MissingKeyring,
    #[error("cannot read random bytes from the operating system")]
    Random,
    #[error("{0}")]
    Database(String),
    #[error(
        "this replica's {KEY_FILE} is not the one the other replicas issue keys with: copy the same {KEY_FILE} into every replica's state directory"
    )]
    OtherKeyring,
}

/// Why an issued key was refused; the proxy answers `InvalidClientTokenId`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no session token came with the key")]
    MissingToken,
    #[error("the session token is not one sigward issued")]
    BadToken,
    #[error("the session token was issued for another key")]
    WrongKey,
    #[error("the key expired at {0}")]
    Expired(String),
    #[error("the key's agent ({0}) was revoked")]
    Revoked(String),
    #[error("the key's agent no longer exists")]
    UnknownAgent,
    #[error("no agent has been issued keys")]
    NoKeyring,
}

/// One agent identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecord {
    pub name: String,
    /// Random, new for each `agent add`: a re-added name never revives old keys.
    pub id: String,
    /// 12-digit account ids.
    pub accounts: Vec<String>,
    pub ttl_seconds: u64,
    /// Unix seconds.
    pub created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    agents: Vec<AgentRecord>,
}

/// A key delivered to an agent.
pub struct IssuedKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: SystemTime,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("access_key_id", &self.access_key_id)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// Who an issued key belongs to, and the secret its signatures are checked with.
pub struct KeyOwner {
    pub agent: String,
    pub secret_access_key: String,
}

#[derive(Clone)]
struct Keyring {
    key: hmac::Key,
}

impl Keyring {
    /// Names this keyring without revealing it: replicas compare it (`[cluster]`).
    fn fingerprint(&self) -> String {
        hex::encode(&self.tag("fingerprint", "sigward keyring").as_ref()[..16])
    }

    fn tag(&self, purpose: &str, data: &str) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(purpose.as_bytes());
        context.update(&[0]);
        context.update(data.as_bytes());
        context.sign()
    }

    /// 40 base64 characters, the length of an AWS secret access key.
    fn secret(&self, key_id: &str) -> String {
        BASE64.encode(&self.tag("secret", key_id).as_ref()[..30])
    }

    fn token(&self, payload: &str) -> String {
        format!(
            "{TOKEN_PREFIX}{}.{}",
            BASE64URL_NOPAD.encode(payload.as_bytes()),
            BASE64URL_NOPAD.encode(self.tag("token", payload).as_ref())
        )
    }

    /// The payload of a token this keyring issued.
    fn open_token(&self, token: &str) -> Option<String> {
        let (payload, tag) = token.strip_prefix(TOKEN_PREFIX)?.split_once('.')?;
        let payload = String::from_utf8(BASE64URL_NOPAD.decode(payload.as_bytes()).ok()?).ok()?;
        let tag = BASE64URL_NOPAD.decode(tag.as_bytes()).ok()?;
        let mut message = b"token\0".to_vec();
        message.extend_from_slice(payload.as_bytes());
        hmac::verify(&self.key, &message, &tag).ok()?;
        Some(payload)
    }
}

/// The agents as recorded at one moment.
#[derive(Default)]
pub struct Agents {
    records: Vec<AgentRecord>,
    keyring: Option<Keyring>,
}

impl Agents {
    pub fn records(&self) -> &[AgentRecord] {
        &self.records
    }

    /// The agent called `name` that is not revoked.
    pub fn active(&self, name: &str) -> Result<&AgentRecord, AgentError> {
        let mut revoked = false;
        for record in self.records.iter().rev().filter(|r| r.name == name) {
            if record.revoked_at.is_none() {
                return Ok(record);
            }
            revoked = true;
        }
        Err(if revoked {
            AgentError::Revoked(name.into())
        } else {
            AgentError::Unknown(name.into())
        })
    }

    fn keyring(&self) -> Result<&Keyring, AgentError> {
        self.keyring.as_ref().ok_or(AgentError::MissingKeyring)
    }

    /// A fresh key for `name` in `account`, valid for the agent's ttl from `now`.
    pub fn issue(
        &self,
        name: &str,
        account: &AccountId,
        now: SystemTime,
    ) -> Result<IssuedKey, AgentError> {
        let record = self.active(name)?;
        if !record.accounts.iter().any(|a| a == account.as_str()) {
            return Err(AgentError::NoAccount {
                agent: name.into(),
                account: account.to_string(),
                have: record.accounts.join(", "),
            });
        }
        let keyring = self.keyring()?;
        let access_key_id = new_key_id(account)?;
        let expires = unix(now) + record.ttl_seconds;
        let payload = format!("{}:{account}:{access_key_id}:{expires}", record.id);
        Ok(IssuedKey {
            secret_access_key: keyring.secret(&access_key_id),
            session_token: keyring.token(&payload),
            access_key_id,
            expiration: UNIX_EPOCH + Duration::from_secs(expires),
        })
    }

    /// Check an issued key and its session token at `now`.
    pub fn authenticate(
        &self,
        key_id: &str,
        token: Option<&str>,
        now: SystemTime,
    ) -> Result<KeyOwner, KeyError> {
        let keyring = self.keyring.as_ref().ok_or(KeyError::NoKeyring)?;
        let token = token.ok_or(KeyError::MissingToken)?;
        let payload = keyring.open_token(token).ok_or(KeyError::BadToken)?;
        let mut fields = payload.split(':');
        let (Some(agent_id), Some(account), Some(token_key), Some(expires), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(KeyError::BadToken);
        };
        if token_key != key_id || account_of_key(key_id).is_none_or(|a| a.as_str() != account) {
            return Err(KeyError::WrongKey);
        }
        let expires: u64 = expires.parse().map_err(|_| KeyError::BadToken)?;
        if unix(now) >= expires {
            return Err(KeyError::Expired(timestamp(
                UNIX_EPOCH + Duration::from_secs(expires),
            )));
        }
        let record = self
            .records
            .iter()
            .find(|r| r.id == agent_id)
            .ok_or(KeyError::UnknownAgent)?;
        if record.revoked_at.is_some() {
            return Err(KeyError::Revoked(record.name.clone()));
        }
        Ok(KeyOwner {
            agent: record.name.clone(),
            secret_access_key: keyring.secret(key_id),
        })
    }

    /// The bearer token an agent presents to the container-credentials listener
    /// (`AWS_CONTAINER_AUTHORIZATION_TOKEN`); derived, so it is never stored.
    pub fn container_token(&self, name: &str) -> Result<String, AgentError> {
        let record = self.active(name)?;
        Ok(BASE64URL_NOPAD.encode(self.keyring()?.tag("container", &record.id).as_ref()))
    }
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// RFC 3339 in UTC, as AWS writes `Expiration`.
pub fn timestamp(time: SystemTime) -> String {
    aws_smithy_types::DateTime::from(time)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| format!("{}", unix(time)))
}

fn random<const N: usize>() -> Result<[u8; N], AgentError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AgentError::Random)?;
    Ok(bytes)
}

/// An `ASIA` key id that decodes offline to `account` (the new-generation layout
/// [`account_of_key`] reads), the rest random.
fn new_key_id(account: &AccountId) -> Result<String, AgentError> {
    // An AccountId is 12 digits: it parses, and is below 2^40.
    let number: u64 = account.as_str().parse().map_err(|_| AgentError::Random)?;
    for _ in 0..64 {
        let mut bytes: [u8; 10] = random()?;
        let z = (1 << 47) | (number << 7) | u64::from(bytes[5] & 0x7f);
        bytes[..6].copy_from_slice(&z.to_be_bytes()[2..]);
        let id = format!("ASIA{}", BASE32_NOPAD.encode(&bytes));
        // A few ids also read as the placeholder scheme (12 digits first); skip those.
        if account_of_key(&id).as_ref() == Some(account) {
            return Ok(id);
        }
    }
    Err(AgentError::Random)
}

/// A valid agent name: it appears in profile names, URLs and log lines.
pub fn check_name(name: &str) -> Result<(), AgentError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(AgentError::BadName(name.into()))
    }
}

/// The records and the keyring: both in a state directory, or with `[cluster]` the
/// records in the shared database ([`shared`]) and the keyring (the same on every
/// replica) in the state directory.
#[derive(Debug, Clone)]
pub struct AgentStore {
    dir: PathBuf,
    cluster: Option<crate::config::Cluster>,
}

impl AgentStore {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            cluster: None,
        }
    }

    /// Where `config` keeps its agents: the state directory, or `[cluster]`'s database.
    pub fn for_config(config: &crate::config::Config) -> Self {
        Self {
            dir: config.state_dir.clone(),
            cluster: config.cluster.clone(),
        }
    }

    fn store_path(&self) -> PathBuf {
        self.dir.join(STORE_FILE)
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// Read the agents; a state directory without them has none.
    pub fn load(&self) -> Result<Agents, AgentError> {
        if let Some(cluster) = &self.cluster {
            let keyring = self.load_keyring()?;
            let records = shared::blocking(cluster, &self.dir, async |db| {
                if let Some(keyring) = &keyring {
                    shared::check_keyring(db, &keyring.fingerprint(), false).await?;
                }
                shared::load_records(db).await
            })?;
            return Ok(Agents { records, keyring });
        }
        let path = self.store_path();
        let records = match fs::read(&path) {
            Ok(bytes) => {
                let file: StoreFile =
                    serde_json::from_slice(&bytes).map_err(|e| AgentError::Corrupt {
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
                if file.version != 1 {
                    return Err(AgentError::Corrupt {
                        path,
                        message: format!("version {} is not 1", file.version),
                    });
                }
                file.agents
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(AgentError::Io { path, error }),
        };
        let keyring = self.load_keyring()?;
        Ok(Agents { records, keyring })
    }

    /// The keyring in the state directory, if there is one.
    fn load_keyring(&self) -> Result<Option<Keyring>, AgentError> {
        let key_path = self.key_path();
        let keyring = match fs::read_to_string(&key_path) {
            Ok(text) => {
                let key = hex::decode(text.trim())
                    .ok()
                    .filter(|k| k.len() == 32)
                    .ok_or_else(|| AgentError::Corrupt {
                        path: key_path.clone(),
                        message: "not 32 bytes of hex".into(),
                    })?;
                Some(Keyring {
                    key: hmac::Key::new(hmac::HMAC_SHA256, &key),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(AgentError::Io {
                    path: key_path,
                    error,
                });
            }
        };
        Ok(keyring)
    }

    /// Record a new agent (creating the keyring on first use).
    pub fn add(
        &self,
        name: &str,
        accounts: &[AccountId],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<AgentRecord, AgentError> {
        check_name(name)?;
        let _lock = self.lock()?;
        let mut accounts: Vec<String> = accounts.iter().map(|a| a.to_string()).collect();
        accounts.dedup();
        let record = AgentRecord {
            name: name.into(),
            id: hex::encode(random::<12>()?),
            accounts,
            ttl_seconds: ttl.as_secs().max(1),
            created_at: unix(now),
            revoked_at: None,
        };
        if let Some(cluster) = &self.cluster {
            self.ensure_keyring()?;
            let fingerprint = self
                .load_keyring()?
                .ok_or(AgentError::MissingKeyring)?
                .fingerprint();
            let added = record.clone();
            shared::blocking(cluster, &self.dir, async move |db| {
                shared::check_keyring(db, &fingerprint, true).await?;
                shared::add_record(db, &added).await
            })?;
            return Ok(record);
        }
        let agents = self.load()?;
        if agents.active(name).is_ok() {
            return Err(AgentError::Exists(name.into()));
        }
        self.ensure_keyring()?;
        let mut records = agents.records;
        records.push(record.clone());
        self.save(records)?;
        Ok(record)
    }

    /// Revoke the agent called `name`: its keys stop working on the next request.
    pub fn revoke(&self, name: &str, now: SystemTime) -> Result<AgentRecord, AgentError> {
        if let Some(cluster) = &self.cluster {
            let name = name.to_string();
            return shared::blocking(cluster, &self.dir, async move |db| {
                shared::revoke_record(db, &name, unix(now)).await
            });
        }
        let _lock = self.lock()?;
        let agents = self.load()?;
        let id = agents.active(name)?.id.clone();
        let mut records = agents.records;
        let mut revoked = None;
        for record in &mut records {
            if record.id == id {
                record.revoked_at = Some(unix(now));
                revoked = Some(record.clone());
            }
        }
        self.save(records)?;
        revoked.ok_or_else(|| AgentError::Unknown(name.into()))
    }

    /// An exclusive lock on `agents.lock`, so that two `sigward agent` commands at once
    /// cannot lose each other's change (released when the file is dropped).
    fn lock(&self) -> Result<fs::File, AgentError> {
        self.ensure_dir()?;
        let path = self.dir.join("agents.lock");
        let io = |error| AgentError::Io {
            path: path.clone(),
            error,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(file)
    }

    fn ensure_dir(&self) -> Result<(), AgentError> {
        use std::os::unix::fs::DirBuilderExt as _;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|error| AgentError::Io {
                path: self.dir.clone(),
                error,
            })
    }

    /// Create the keyring if the state directory has none.
    pub fn ensure_keyring(&self) -> Result<(), AgentError> {
        let path = self.key_path();
        if path.exists() {
            return Ok(());
        }
        self.ensure_dir()?;
        let key = hex::encode(random::<32>()?);
        write_private(&path, format!("{key}\n").as_bytes(), true)
    }

    /// Replace the records file atomically (write a temporary file, then rename).
    fn save(&self, agents: Vec<AgentRecord>) -> Result<(), AgentError> {
        self.ensure_dir()?;
        let file = StoreFile { version: 1, agents };
        let mut text = serde_json::to_vec_pretty(&file).map_err(|e| AgentError::Corrupt {
            path: self.store_path(),
            message: e.to_string(),
        })?;
        text.push(b'\n');
        let temporary = self.dir.join(format!("{STORE_FILE}.tmp"));
        write_private(&temporary, &text, false)?;
        fs::rename(&temporary, self.store_path()).map_err(|error| AgentError::Io {
            path: self.store_path(),
            error,
        })
    }
}

/// Write a 0600 file; `create_new` refuses to replace one.
fn write_private(path: &Path, bytes: &[u8], create_new: bool) -> Result<(), AgentError> {
    let io = |error| AgentError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut options = OpenOptions::new();
    options.write(true).mode(0o600);
    if create_new {
        options.create_new(true);
    } else {
        options.create(true).truncate(true);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// The agents as the running proxy sees them: re-read whenever `agents.json` or
/// `agents.key` changes (one `stat` of each per request that uses an issued key), so
/// `sigward agent revoke` takes effect on the next request.
pub struct LiveAgents {
    store: AgentStore,
    cached: Mutex<(Option<Stamp>, Arc<Agents>)>,
    /// With `[cluster]`: the records as last read from the database (kept fresh by
    /// [`shared::refresh_forever`]), when, and how stale they may get.
    shared: Option<shared::Snapshot>,
}

/// What identifies a version of the two files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp([(u64, u64, i64, i64); 2]);

impl LiveAgents {
    pub fn new(store: AgentStore) -> Self {
        Self {
            store,
            cached: Mutex::new((None, Arc::new(Agents::default()))),
            shared: None,
        }
    }

    /// The agents in `database`, with the keyring of `dir` (checked against the one the
    /// other replicas registered, or registered as the cluster's if none has been): read
    /// now, then again on every notification and every second. Past `grace` without an
    /// answer from the database, [`LiveAgents::current`] fails, so issued keys are refused.
    pub async fn shared(
        dir: &Path,
        database: Arc<crate::state::Database>,
        grace: Duration,
    ) -> Result<Arc<Self>, AgentError> {
        let store = AgentStore::new(dir);
        store.ensure_keyring()?;
        let keyring = store.load_keyring()?.ok_or(AgentError::MissingKeyring)?;
        shared::check_keyring(&database, &keyring.fingerprint(), true).await?;
        let records = shared::load_records(&database).await?;
        let snapshot = shared::Snapshot::new(
            grace,
            Agents {
                records,
                keyring: Some(keyring.clone()),
            },
        );
        let live = Arc::new(Self {
            store,
            cached: Mutex::new((None, Arc::new(Agents::default()))),
            shared: Some(snapshot),
        });
        tokio::spawn(shared::refresh_forever(
            Arc::downgrade(&live),
            database,
            keyring,
        ));
        Ok(live)
    }

    fn stamp(&self) -> Stamp {
        let of = |path: PathBuf| {
            fs::metadata(path).map_or((0, 0, 0, 0), |m| {
                (m.ino(), m.size(), m.mtime(), m.mtime_nsec())
            })
        };
        Stamp([of(self.store.store_path()), of(self.store.key_path())])
    }

    /// The current agents; an unreadable store is an error (the caller refuses).
    pub fn current(&self) -> Result<Arc<Agents>, AgentError> {
        if let Some(snapshot) = &self.shared {
            return snapshot.current();
        }
        let stamp = self.stamp();
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached.0 != Some(stamp) {
            let agents = Arc::new(self.store.load()?);
            *cached = (Some(stamp), agents);
        }
        Ok(Arc::clone(&cached.1))
    }
}

/// Parse a lifetime like `90s`, `30m`, `12h` or `7d`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a lifetime like 90s, 30m, 12h or 7d"))?;
    let seconds = match unit {
        "s" | "" => number,
        "m" => number.saturating_mul(60),
        "h" => number.saturating_mul(3600),
        "d" => number.saturating_mul(86_400),
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    if seconds == 0 {
        return Err(format!("{text:?}: a key must live at least 1s"));
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str) -> AccountId {
        AccountId::parse(id).expect("account")
    }

    #[test]
    fn issued_keys_name_their_account_and_check_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AgentStore::new(dir.path());
        let now = SystemTime::now();
        let prod = account("111111111111");
        let add_claude = || {
            store
                .add(
                    "claude",
                    std::slice::from_ref(&prod),
                    Duration::from_secs(60),
                    now,
                )
                .expect("add")
        };
        add_claude();
        let agents = store.load().expect("load");
        let key = agents.issue("claude", &prod, now).expect("issue");
        assert!(key.access_key_id.starts_with("ASIA"));
        assert_eq!(key.access_key_id.len(), 20);
        assert_eq!(account_of_key(&key.access_key_id), Some(prod.clone()));
        assert_eq!(key.secret_access_key.len(), 40);

        let owner = agents
            .authenticate(&key.access_key_id, Some(&key.session_token), now)
            .expect("authenticate");
        assert_eq!(owner.agent, "claude");
        assert_eq!(owner.secret_access_key, key.secret_access_key);

        // Another account, a token for another key, a forged or missing token, expiry.
        assert!(matches!(
            agents.issue("claude", &account("222222222222"), now),
            Err(AgentError::NoAccount { .. })
        ));
        let other = agents.issue("claude", &prod, now).expect("issue");
        assert_ne!(other.access_key_id, key.access_key_id);
        assert_eq!(
            agents
                .authenticate(&key.access_key_id, Some(&other.session_token), now)
                .err(),
            Some(KeyError::WrongKey)
        );
        let mut forged = key.session_token.clone();
        forged.pop();
        assert_eq!(
            agents
                .authenticate(&key.access_key_id, Some(&forged), now)
                .err(),
            Some(KeyError::BadToken)
        );
        assert_eq!(
            agents.authenticate(&key.access_key_id, None, now).err(),
            Some(KeyError::MissingToken)
        );
        assert!(matches!(
            agents.authenticate(
                &key.access_key_id,
                Some(&key.session_token),
                now + Duration::from_secs(60)
            ),
            Err(KeyError::Expired(_))
        ));

        // Revoked: the old keys fail; a re-added agent of the same name gets new ones.
        store.revoke("claude", now).expect("revoke");
        let agents = store.load().expect("load");
        assert_eq!(
            agents
                .authenticate(&key.access_key_id, Some(&key.session_token), now)
                .err(),
            Some(KeyError::Revoked("claude".into()))
        );
        assert!(matches!(
            agents.issue("claude", &prod, now),
            Err(AgentError::Revoked(_))
        ));
        add_claude();
        let agents = store.load().expect("load");
        assert!(
            agents
                .authenticate(&key.access_key_id, Some(&key.session_token), now)
                .is_err()
        );
        assert!(agents.issue("claude", &prod, now).is_ok());
    }

    #[test]
    fn store_files_are_private_and_names_checked() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let store = AgentStore::new(&state);
        let now = SystemTime::now();
        store
            .add("a", &[account("111111111111")], DEFAULT_TTL, now)
            .expect("add");
        for file in [KEY_FILE, STORE_FILE] {
            let mode = fs::metadata(state.join(file))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        assert!(matches!(
            store.add("a", &[account("111111111111")], DEFAULT_TTL, now),
            Err(AgentError::Exists(_))
        ));
        for bad in ["", "a b", "a/b", "profile]x", &"x".repeat(65)] {
            assert!(
                matches!(
                    store.add(bad, &[account("111111111111")], DEFAULT_TTL, now),
                    Err(AgentError::BadName(_))
                ),
                "{bad:?}"
            );
        }
        fs::write(state.join(STORE_FILE), "{").expect("write");
        assert!(matches!(store.load(), Err(AgentError::Corrupt { .. })));
    }

    #[test]
    fn concurrent_adds_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        std::thread::scope(|scope| {
            for i in 0..8 {
                let store = AgentStore::new(dir.path());
                scope.spawn(move || {
                    store
                        .add(
                            &format!("a{i}"),
                            &[account("111111111111")],
                            DEFAULT_TTL,
                            now,
                        )
                        .expect("add");
                });
            }
        });
        let agents = AgentStore::new(dir.path()).load().expect("load");
        assert_eq!(agents.records().len(), 8);
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_ttl("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_ttl("5"), Ok(Duration::from_secs(5)));
        for bad in ["", "h", "0s", "1w", "-1h", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }
}

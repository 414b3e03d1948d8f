//! Credentials for the target account: the base credential assumes
//! `arn:aws:iam::<account>:role/<role>` (aws-sdk-sts, on the endpoint's regional STS
//! endpoint), cached per (account, role) and refreshed five minutes before expiry.
//! Concurrent requests for one account wait on one AssumeRole (single flight): the cache
//! entry's lock is held while it is filled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_smithy_runtime_api::client::http::SharedHttpConnector;

use super::sigv4::SigningCredentials;
use crate::config::BaseCredential;
use crate::upstream::{StsConnector, Upstream};

/// Credentials are renewed this long before they expire.
pub const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);
/// How long a failed AssumeRole is remembered: an STS outage is one attempt per account
/// every few seconds, not one per request.
pub const FAILURE_MEMORY: Duration = Duration::from_secs(2);
/// How long an assumed-role session lasts (STS's default and minimum for chaining).
const SESSION: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not assume role {role_arn}: {reason}")]
pub struct StsError {
    pub role_arn: String,
    pub reason: String,
}

#[derive(Clone)]
struct Cached {
    credentials: SigningCredentials,
    expires: SystemTime,
}

/// One account's credentials: read without waiting while they are fresh; `fill` is held
/// by the one request that renews them, the others wait on it (single flight).
#[derive(Default)]
struct Slot {
    cached: std::sync::RwLock<Option<Cached>>,
    fill: tokio::sync::Mutex<()>,
    /// The last failure and when it happened: shared by every request waiting on the same
    /// AssumeRole, and given to those that come within [`FAILURE_MEMORY`] of it.
    failed: Mutex<Option<(StsError, std::time::Instant)>>,
}

impl Slot {
    fn recent_failure(&self) -> Option<StsError> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        let (error, when) = failed.as_ref()?;
        let age = when.elapsed();
        (age < FAILURE_MEMORY).then(|| StsError {
            role_arn: error.role_arn.clone(),
            reason: format!(
                "{} (the last attempt, {} ms ago; the next is made {} ms after it)",
                error.reason,
                age.as_millis(),
                FAILURE_MEMORY.as_millis()
            ),
        })
    }

    fn fresh(&self) -> Option<SigningCredentials> {
        let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
        cached
            .as_ref()
            .filter(|c| c.expires > SystemTime::now() + REFRESH_AHEAD)
            .map(|c| c.credentials.clone())
    }
}

/// One endpoint's assumed-role credentials.
pub struct CredentialCache {
    /// Or why there is none (the environment had no credentials at start-up).
    client: Result<aws_sdk_sts::Client, String>,
    role: String,
    identity: SessionIdentity,
    partition: &'static str,
    /// Per (account, agent).
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    assumed: std::sync::atomic::AtomicU64,
    hits: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl CredentialCache {
    /// A cache assuming `role` with `base` through `upstream`, on `region`'s STS endpoint.
    /// Without base credentials (`source = "environment"` and none set) it is still made:
    /// every request is then refused with a 503 saying so.
    pub fn new(
        base: &BaseCredential,
        role: &str,
        region: &str,
        upstream: Upstream,
        identity: SessionIdentity,
    ) -> Self {
        Self {
            client: Self::client(base, region, upstream),
            role: role.to_string(),
            identity,
            partition: super::partition(region),
            slots: Mutex::default(),
            assumed: 0.into(),
            hits: 0.into(),
        }
    }

    /// Why no credentials can be assumed, if that is so.
    pub fn unavailable(&self) -> Option<&str> {
        self.client.as_ref().err().map(String::as_str)
    }

    fn client(
        base: &BaseCredential,
        region: &str,
        upstream: Upstream,
    ) -> Result<aws_sdk_sts::Client, String> {
        let credentials = match base {
            BaseCredential::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.clone(),
                None,
                "sigward-config",
            ),
            BaseCredential::Environment => {
                let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
                let (Some(id), Some(secret)) =
                    (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
                else {
                    return Err(
                        "the base credential is source = \"environment\" but AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY was not set when sigward started"
                            .into(),
                    );
                };
                Credentials::new(id, secret, var("AWS_SESSION_TOKEN"), None, "environment")
            }
        };
        let connector = SharedHttpConnector::new(StsConnector(upstream));
        let http_client: SharedHttpClient =
            aws_smithy_runtime_api::client::http::http_client_fn(move |_, _| connector.clone());
        let suffix = if region.starts_with("cn-") {
            "amazonaws.com.cn"
        } else {
            "amazonaws.com"
        };
        let config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(credentials)
            .endpoint_url(format!("https://sts.{region}.{suffix}"))
            .http_client(http_client)
            .timeout_config(
                aws_smithy_types::timeout::TimeoutConfig::builder()
                    .operation_timeout(Duration::from_secs(15))
                    .build(),
            )
            .build();
        Ok(aws_sdk_sts::Client::from_conf(config))
    }

    /// How many requests this cache served without calling STS.
    pub fn hit_count(&self) -> u64 {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many AssumeRole calls this cache has made.
    pub fn assume_count(&self) -> u64 {
        self.assumed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Credentials for `agent` in `account`, assumed now unless cached ones last 5 more
    /// minutes. Each agent has sessions of its own, named after it (`sigward-<agent>`,
    /// with the endpoint's source identity and session tags), so that the target
    /// account's CloudTrail says which agent made each call.
    pub async fn get(&self, account: &str, agent: &str) -> Result<SigningCredentials, StsError> {
        let key = format!("{account}\n{agent}");
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.get(&key) {
                Some(slot) => Arc::clone(slot),
                None => Arc::clone(slots.entry(key).or_default()),
            }
        };
        if let Some(credentials) = slot.fresh() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(credentials);
        }
        if let Some(error) = slot.recent_failure() {
            return Err(error);
        }
        let _filling = slot.fill.lock().await;
        // Whoever held the lock before may have just renewed them — or failed to, and
        // those who waited on a failed attempt get its failure, not attempts of their own.
        if let Some(credentials) = slot.fresh() {
            return Ok(credentials);
        }
        if let Some(error) = slot.recent_failure() {
            return Err(error);
        }
        let fresh = match self.assume(account, agent).await {
            Ok(fresh) => fresh,
            Err(error) => {
                *slot.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((error.clone(), std::time::Instant::now()));
                return Err(error);
            }
        };
        let credentials = fresh.credentials.clone();
        *slot.cached.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        *slot.failed.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(credentials)
    }

    async fn assume(&self, account: &str, agent: &str) -> Result<Cached, StsError> {
        let role_arn = format!("arn:{}:iam::{account}:role/{}", self.partition, self.role);
        let client = self.client.as_ref().map_err(|reason| StsError {
            role_arn: role_arn.clone(),
            reason: reason.clone(),
        })?;
        self.assumed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut call = client
            .assume_role()
            .role_arn(&role_arn)
            .role_session_name(session_name(agent))
            .duration_seconds(SESSION.as_secs() as i32);
        if let Some(template) = &self.identity.source_identity {
            call = call.source_identity(sts_name(&self.identity.render(template, agent, account)));
        }
        for (key, template) in &self.identity.tags {
            let tag = aws_sdk_sts::types::Tag::builder()
                .key(key)
                .value(self.identity.render(template, agent, account))
                .build()
                .map_err(|e| StsError {
                    role_arn: role_arn.clone(),
                    reason: format!("session tag {key}: {e}"),
                })?;
            call = call.tags(tag);
        }
        let output = call.send().await.map_err(|e| StsError {
            role_arn: role_arn.clone(),
            reason: crate::upstream::error_chain(&e),
        })?;
        let credentials = output.credentials().ok_or_else(|| StsError {
            role_arn: role_arn.clone(),
            reason: "STS answered without credentials".into(),
        })?;
        let expires = SystemTime::try_from(*credentials.expiration())
            .unwrap_or_else(|_| SystemTime::now() + REFRESH_AHEAD);
        tracing::info!(role = %role_arn, agent, "assumed role");
        Ok(Cached {
            credentials: SigningCredentials {
                access_key_id: credentials.access_key_id().to_string(),
                secret_access_key: credentials.secret_access_key().to_string(),
                session_token: Some(credentials.session_token().to_string()),
            },
            expires,
        })
    }
}

/// Who the endpoint's sessions say they are, beyond their name: `source_identity` and
/// session `tags`, templates of `{agent}`, `{endpoint}` and `{account}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionIdentity {
    pub endpoint: String,
    pub source_identity: Option<String>,
    pub tags: Vec<(String, String)>,
}

impl SessionIdentity {
    fn render(&self, template: &str, agent: &str, account: &str) -> String {
        template
            .replace("{agent}", agent)
            .replace("{endpoint}", &self.endpoint)
            .replace("{account}", account)
    }
}

/// `sigward-<agent>`, in the characters and length STS allows (`[\w+=,.@-]{2,64}`).
fn session_name(agent: &str) -> String {
    sts_name(&format!("sigward-{agent}"))
}

/// `text` in the characters and length STS allows in names (`[\w+=,.@-]{2,64}`).
fn sts_name(text: &str) -> String {
    let name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.len() < 2 {
        return format!("{name}--")[..2].to_string();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_are_what_sts_accepts() {
        assert_eq!(session_name("claude"), "sigward-claude");
        assert_eq!(session_name("a b/c"), "sigward-a-b-c");
        assert_eq!(session_name(&"x".repeat(100)).len(), 64);
    }
}

//! Human approval: a request whose verdict is `approve` waits here — a pending entry and
//! a oneshot channel, no thread — until someone approves or denies it on the admin
//! listener, or its endpoint's `approval_timeout` passes (a deny that says so). If the
//! agent goes away first, its entry goes with it.
//!
//! With `[cluster]`, every pending approval is also a row in the shared database: any
//! replica's admin API lists and decides every replica's approvals; the replica holding
//! the request hears of the decision at once (LISTEN/NOTIFY, and a poll every second in
//! case a notification was missed). A timeout is still a deny, decided by the holding
//! replica in the row itself, so a decision and a timeout can never both win. If the
//! database cannot take the approval, the request is refused (fail closed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::agents::timestamp;
use crate::facet::Facet;
use crate::state::database::APPROVALS_CHANNEL;
use crate::state::{Database, Event};
use crate::upstream::Upstream;

/// What a pending approval shows (`GET /approvals`, the web page, the webhook).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    pub prompt: String,
    pub approvers: Vec<String>,
    pub facet: Facet,
    pub agent: String,
    pub endpoint: String,
    pub created_at: String,
    pub expires_at: String,
    /// The replica holding the request (with `[cluster]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// A human's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub approved: bool,
    /// Who decided (`"by"` in the request; `"admin"` when not given).
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How waiting ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Decided(Decision),
    TimedOut(Duration),
    /// The shared database could not take the approval: nobody could have decided it.
    Unavailable(String),
}

struct Waiting {
    pending: Pending,
    answer: oneshot::Sender<Decision>,
}

/// The pending approvals: this process's, and with `[cluster]` every replica's.
#[derive(Default)]
pub struct Approvals {
    waiting: Mutex<HashMap<String, Waiting>>,
    shared: Option<Arc<Database>>,
}

/// Removes an approval whose waiter went away (the agent closed its connection); in the
/// shared database it is marked abandoned.
struct Cleanup<'a> {
    approvals: &'a Approvals,
    id: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let was_waiting = self.approvals.lock().remove(&self.id).is_some();
        if let (true, Some(database)) = (was_waiting, &self.approvals.shared)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (database, id) = (Arc::clone(database), self.id.clone());
            runtime.spawn(async move {
                let _ = database
                    .run(async move |client| {
                        client
                            .execute(
                                "UPDATE approvals SET status = 'abandoned', decided_at = now() \
                                 WHERE id = $1 AND status = 'pending'",
                                &[&id],
                            )
                            .await
                    })
                    .await;
            });
        }
    }
}

/// A decided row's decision, if it is decided.
fn decision_of(status: &str, by: Option<String>, reason: Option<String>) -> Option<Decision> {
    let approved = match status {
        "approved" => true,
        "denied" => false,
        _ => return None,
    };
    Some(Decision {
        approved,
        by: by.unwrap_or_else(|| "admin".into()),
        reason,
    })
}

impl Approvals {
    /// Approvals shared through `database` with every replica. Starts the task that hands
    /// this replica's waiters the decisions made anywhere.
    pub fn shared(database: Arc<Database>) -> Arc<Approvals> {
        let approvals = Arc::new(Approvals {
            waiting: Mutex::default(),
            shared: Some(Arc::clone(&database)),
        });
        let weak = Arc::downgrade(&approvals);
        let events = database.subscribe();
        tokio::spawn(deliver_decisions(weak, events));
        approvals
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hold a request until it is decided or `timeout` passes. `notify` is told of the
    /// new approval (the webhook) and never delays the decision.
    pub async fn wait(
        &self,
        facet: Facet,
        prompt: String,
        approvers: Vec<String>,
        timeout: Duration,
        notify: impl FnOnce(&Pending),
    ) -> Outcome {
        let mut bytes = [0u8; 8];
        // A failing system RNG leaves a zero id: still unique enough to decide, and the
        // admin API needs the bearer token anyway.
        let _ = SystemRandom::new().fill(&mut bytes);
        let id = hex::encode(bytes);
        let now = SystemTime::now();
        let pending = Pending {
            id: id.clone(),
            prompt,
            approvers,
            agent: facet.principal.clone(),
            endpoint: facet.endpoint.clone(),
            facet,
            created_at: timestamp(now),
            expires_at: timestamp(now + timeout),
            replica: self.shared.as_ref().map(|d| d.replica.clone()),
        };
        if let Some(database) = &self.shared
            && let Err(error) = insert(database, &pending, timeout).await
        {
            tracing::error!(target: "sigward::approval", id = %id, %error, "the approval could not be shared; refused");
            return Outcome::Unavailable(error.to_string());
        }
        let (answer, decided) = oneshot::channel();
        notify(&pending);
        tracing::info!(
            target: "sigward::approval",
            id = %id,
            prompt = %pending.prompt,
            approvers = %pending.approvers.join(","),
            "waiting for approval"
        );
        self.lock().insert(id.clone(), Waiting { pending, answer });
        let _cleanup = Cleanup {
            approvals: self,
            id: id.clone(),
        };
        match tokio::time::timeout(timeout, decided).await {
            Ok(Ok(decision)) => Outcome::Decided(decision),
            // The sender is gone only if the entry was removed undecided: a timeout.
            Ok(Err(_)) | Err(_) => match &self.shared {
                None => Outcome::TimedOut(timeout),
                Some(database) => time_out(database, &id, timeout).await,
            },
        }
    }

    /// The pending approvals, oldest first: this process's, or with `[cluster]` every
    /// replica's.
    pub async fn list(&self) -> Result<Vec<Pending>, String> {
        if let Some(database) = &self.shared {
            let rows = database
                .run(async |client| {
                    client
                        .query(
                            "SELECT pending FROM approvals WHERE status = 'pending' \
                             AND expires_at > now() ORDER BY created_at, id",
                            &[],
                        )
                        .await
                })
                .await
                .map_err(|e| e.to_string())?;
            return Ok(rows
                .iter()
                .filter_map(|row| serde_json::from_str(row.try_get::<_, &str>(0).ok()?).ok())
                .collect());
        }
        let mut pending: Vec<Pending> = self.lock().values().map(|w| w.pending.clone()).collect();
        pending.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(pending)
    }

    /// How many requests this process holds for a decision.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decide approval `id`; `None` when it is unknown or already decided (or, with
    /// `[cluster]`, timed out or abandoned).
    pub async fn decide(&self, id: &str, decision: Decision) -> Result<Option<Pending>, String> {
        let pending = match &self.shared {
            None => {
                let Some(waiting) = self.lock().remove(id) else {
                    return Ok(None);
                };
                log_decision(id, &decision);
                // The waiter may have gone in the meantime; the decision is logged either way.
                let _ = waiting.answer.send(decision);
                return Ok(Some(waiting.pending));
            }
            Some(database) => {
                let (row_id, d) = (id.to_string(), decision.clone());
                let status = if d.approved { "approved" } else { "denied" };
                let row = database
                    .run(async move |client| {
                        client
                            .query_opt(
                                "UPDATE approvals SET status = $2, decided_by = $3, reason = $4, \
                                 decided_at = now() WHERE id = $1 AND status = 'pending' \
                                 AND expires_at > now() RETURNING pending",
                                &[&row_id, &status, &d.by, &d.reason],
                            )
                            .await
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(row) = row else { return Ok(None) };
                // The holding replica hears at once; if it misses this, it polls.
                if let Err(error) = database.notify(APPROVALS_CHANNEL, id).await {
                    tracing::warn!(target: "sigward::approval", id, %error, "decided, but the notification failed (the holding replica polls)");
                }
                row.try_get::<_, &str>(0)
                    .ok()
                    .and_then(|text| serde_json::from_str::<Pending>(text).ok())
            }
        };
        let Some(pending) = pending else {
            return Ok(None);
        };
        log_decision(id, &decision);
        self.deliver(id, decision);
        Ok(Some(pending))
    }

    /// Hand a decision to this process's waiter for `id`, if it holds one.
    fn deliver(&self, id: &str, decision: Decision) {
        if let Some(waiting) = self.lock().remove(id) {
            // The waiter may have gone in the meantime; the decision is logged either way.
            let _ = waiting.answer.send(decision);
        }
    }

    fn waiting_ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

fn log_decision(id: &str, decision: &Decision) {
    tracing::info!(
        target: "sigward::approval",
        id = %id,
        approved = decision.approved,
        by = %decision.by,
        reason = decision.reason.as_deref().unwrap_or(""),
        "decided"
    );
}

async fn insert(database: &Database, pending: &Pending, timeout: Duration) -> Result<(), String> {
    let json = serde_json::to_string(pending).map_err(|e| e.to_string())?;
    let (id, replica) = (pending.id.clone(), database.replica.clone());
    let timeout_ms = timeout.as_millis() as f64;
    database
        .run(async move |client| {
            client
                .execute(
                    "INSERT INTO approvals (id, replica, pending, expires_at) \
                     VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')",
                    &[&id, &replica, &json, &timeout_ms],
                )
                .await
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The holding replica's timeout, decided in the row: if a decision got there first, it
/// stands.
async fn time_out(database: &Database, id: &str, timeout: Duration) -> Outcome {
    let id = id.to_string();
    let result = database
        .run(async move |client| {
            let changed = client
                .execute(
                    "UPDATE approvals SET status = 'timed_out', decided_at = now() \
                     WHERE id = $1 AND status = 'pending'",
                    &[&id],
                )
                .await?;
            if changed == 1 {
                return Ok(None);
            }
            let row = client
                .query_opt(
                    "SELECT status, decided_by, reason FROM approvals WHERE id = $1",
                    &[&id],
                )
                .await?;
            Ok(match row {
                Some(r) => decision_of(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?),
                None => None,
            })
        })
        .await;
    match result {
        Ok(Some(decision)) => Outcome::Decided(decision),
        // Timed out in the row, or the database cannot say: a deny either way.
        Ok(None) | Err(_) => Outcome::TimedOut(timeout),
    }
}

/// Hand this replica's waiters the decisions made on any replica: on each notification,
/// after the listening connection comes back, and every second regardless.
async fn deliver_decisions(
    approvals: Weak<Approvals>,
    mut events: tokio::sync::broadcast::Receiver<Event>,
) {
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let only: Option<String> = tokio::select! {
            event = events.recv() => match event {
                Ok(Event::Notified { channel, payload }) if channel == APPROVALS_CHANNEL => Some(payload),
                Ok(Event::Notified { .. }) => continue,
                Ok(Event::Resync) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = poll.tick() => None,
        };
        let Some(approvals) = approvals.upgrade() else {
            return;
        };
        let Some(database) = approvals.shared.clone() else {
            return;
        };
        let via = if only.is_some() {
            "notification"
        } else {
            "poll"
        };
        let ids: Vec<String> = match only {
            Some(id) => vec![id],
            None => approvals.waiting_ids(),
        };
        let ids: Vec<String> = {
            let waiting = approvals.lock();
            ids.into_iter()
                .filter(|id| waiting.contains_key(id))
                .collect()
        };
        if ids.is_empty() {
            continue;
        }
        let rows = database
            .run(async move |client| {
                client
                    .query(
                        "SELECT id, status, decided_by, reason FROM approvals \
                         WHERE id = ANY($1) AND status IN ('approved', 'denied')",
                        &[&ids],
                    )
                    .await
            })
            .await;
        if let Ok(rows) = rows {
            for row in rows {
                let (Ok(id), Ok(status), Ok(by), Ok(reason)) = (
                    row.try_get::<_, &str>(0),
                    row.try_get(1),
                    row.try_get(2),
                    row.try_get(3),
                ) else {
                    continue;
                };
                if let Some(decision) = decision_of(status, by, reason) {
                    tracing::info!(target: "sigward::approval", id, via, approved = decision.approved, by = %decision.by, "decided on another replica");
                    approvals.deliver(id, decision);
                }
            }
        }
    }
}

/// Post a pending approval to `url` (Slack-compatible: a `text` field, plus the whole
/// approval under `approval`). Runs on its own task; a failure is logged, never waited on.
pub fn notify_webhook(client: Upstream, url: String, pending: &Pending) {
    let body = serde_json::json!({
        "text": format!(
            "sigward: approval needed ({}): {}",
            pending.approvers.join(", "),
            pending.prompt
        ),
        "approval": pending,
    })
    .to_string();
    let id = pending.id.clone();
    tokio::spawn(async move {
        let request = http::Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            );
        let result = match request {
            Ok(request) => {
                match tokio::time::timeout(Duration::from_secs(10), client.send(request)).await {
                    Ok(Ok(response)) if response.status().is_success() => Ok(()),
                    Ok(Ok(response)) => Err(format!("status {}", response.status())),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within 10 s".into()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = result {
            tracing::warn!(target: "sigward::approval", id = %id, %url, %error, "approval webhook failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facet() -> Facet {
        Facet {
            principal: "claude".into(),
            endpoint: "e".into(),
            ..Facet::smoke()
        }
    }

    /// A thousand requests wait at once on one thread: waiting costs no thread.
    #[tokio::test(flavor = "current_thread")]
    async fn many_wait_at_once_on_one_thread() {
        let approvals = std::sync::Arc::new(Approvals::default());
        let waiters: Vec<_> = (0..1000)
            .map(|_| {
                let approvals = std::sync::Arc::clone(&approvals);
                tokio::spawn(async move {
                    approvals
                        .wait(facet(), "p".into(), vec![], Duration::from_secs(60), |_| {})
                        .await
                })
            })
            .collect();
        while approvals.len() < 1000 {
            tokio::task::yield_now().await;
        }
        for pending in approvals.list().await.expect("list") {
            let decision = Decision {
                approved: false,
                by: "bulk".into(),
                reason: None,
            };
            assert!(
                approvals
                    .decide(&pending.id, decision)
                    .await
                    .expect("decide")
                    .is_some()
            );
        }
        for waiter in waiters {
            assert!(matches!(
                waiter.await.expect("join"),
                Outcome::Decided(Decision {
                    approved: false,
                    ..
                })
            ));
        }
    }

    #[tokio::test]
    async fn decided_timed_out_and_abandoned() {
        let approvals = std::sync::Arc::new(Approvals::default());
        let waiter = {
            let approvals = std::sync::Arc::clone(&approvals);
            tokio::spawn(async move {
                approvals
                    .wait(
                        facet(),
                        "p".into(),
                        vec!["oncall".into()],
                        Duration::from_secs(30),
                        |_| {},
                    )
                    .await
            })
        };
        let id = loop {
            if let Some(p) = approvals.list().await.expect("list").first() {
                break p.id.clone();
            }
            tokio::task::yield_now().await;
        };
        let decision = Decision {
            approved: true,
            by: "alice".into(),
            reason: None,
        };
        assert!(
            approvals
                .decide(&id, decision.clone())
                .await
                .expect("decide")
                .is_some()
        );
        assert!(
            approvals
                .decide(&id, decision.clone())
                .await
                .expect("decide")
                .is_none(),
            "decided twice"
        );
        assert_eq!(waiter.await.expect("join"), Outcome::Decided(decision));

        let outcome = approvals
            .wait(
                facet(),
                "p".into(),
                vec![],
                Duration::from_millis(20),
                |_| {},
            )
            .await;
        assert_eq!(outcome, Outcome::TimedOut(Duration::from_millis(20)));
        assert!(approvals.is_empty(), "a timed-out approval stayed");

        // The agent goes away: its approval goes too.
        let abandoned = {
            let approvals = std::sync::Arc::clone(&approvals);
            tokio::spawn(async move {
                approvals
                    .wait(facet(), "p".into(), vec![], Duration::from_secs(30), |_| {})
                    .await
            })
        };
        while approvals.is_empty() {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        assert!(approvals.is_empty(), "an abandoned approval stayed");
    }
}

//! Human approval: a request whose verdict is `approve` waits here — a pending entry and
//! a oneshot channel, no thread — until someone approves or denies it on the admin
//! listener, or its endpoint's `approval_timeout` passes (a deny that says so). If the
//! agent goes away first, its entry goes with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::agents::timestamp;
use crate::facet::Facet;
use crate::proxy::forward::Upstream;

/// What a pending approval shows (`GET /approvals`, the web page, the webhook).
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    pub id: String,
    pub prompt: String,
    pub approvers: Vec<String>,
    pub facet: Facet,
    pub agent: String,
    pub endpoint: String,
    pub created_at: String,
    pub expires_at: String,
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
}

struct Waiting {
    pending: Pending,
    answer: oneshot::Sender<Decision>,
}

/// The pending approvals of one running sigward.
#[derive(Default)]
pub struct Approvals {
    waiting: Mutex<HashMap<String, Waiting>>,
}

/// Removes an approval whose waiter went away (the agent closed its connection).
struct Cleanup<'a> {
    approvals: &'a Approvals,
    id: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        self.approvals.lock().remove(&self.id);
    }
}

impl Approvals {
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
        };
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
            id,
        };
        match tokio::time::timeout(timeout, decided).await {
            Ok(Ok(decision)) => Outcome::Decided(decision),
            // The sender is gone only if the entry was removed undecided: a timeout.
            Ok(Err(_)) | Err(_) => Outcome::TimedOut(timeout),
        }
    }

    /// The pending approvals, oldest first.
    pub fn list(&self) -> Vec<Pending> {
        let mut pending: Vec<Pending> = self.lock().values().map(|w| w.pending.clone()).collect();
        pending.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        pending
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decide approval `id`; `None` when it is unknown or already decided.
    pub fn decide(&self, id: &str, decision: Decision) -> Option<Pending> {
        let waiting = self.lock().remove(id)?;
        tracing::info!(
            target: "sigward::approval",
            id = %id,
            approved = decision.approved,
            by = %decision.by,
            reason = decision.reason.as_deref().unwrap_or(""),
            "decided"
        );
        // The waiter may have gone in the meantime; the decision is logged either way.
        let _ = waiting.answer.send(decision);
        Some(waiting.pending)
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
        for pending in approvals.list() {
            let decision = Decision {
                approved: false,
                by: "bulk".into(),
                reason: None,
            };
            assert!(approvals.decide(&pending.id, decision).is_some());
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
            if let Some(p) = approvals.list().first() {
                break p.id.clone();
            }
            tokio::task::yield_now().await;
        };
        let decision = Decision {
            approved: true,
            by: "alice".into(),
            reason: None,
        };
        assert!(approvals.decide(&id, decision.clone()).is_some());
        assert!(
            approvals.decide(&id, decision.clone()).is_none(),
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

//! An endpoint's policies, in order, and how their verdicts combine: any deny wins, then
//! any approve (approvers merged), else allow. An endpoint with no policies denies.

use std::sync::Arc;

use serde::Serialize;

use super::Verdict;
use super::evaluate::{Failure, Limits};
use super::module::{LoadedPolicy, PolicyDigest};
use crate::facet::Facet;

/// One policy of a set with the settings the operator gave it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub policy: Arc<LoadedPolicy>,
    /// JSON text, what the policy's `settings` import returns.
    pub settings: Arc<str>,
}

/// An immutable, ready-to-evaluate policy set. Reloading builds a new one.
#[derive(Debug)]
pub struct PolicySet {
    pub endpoint: String,
    pub entries: Vec<Entry>,
    pub limits: Limits,
}

/// What one policy said about one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    pub policy: String,
    pub digest: PolicyDigest,
    /// The policy's own verdict; a failure is a deny whose reason names it.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Why the policy produced no verdict of its own (`deadline`, `fuel`, `memory`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<&'static str>,
}

/// The combined verdict of a set and every evaluation behind it, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Judgement {
    #[serde(flatten)]
    pub verdict: Verdict,
    pub evaluations: Vec<Evaluation>,
}

impl Judgement {
    /// The digests of the policies that were evaluated.
    pub fn digests(&self) -> impl Iterator<Item = &PolicyDigest> {
        self.evaluations.iter().map(|e| &e.digest)
    }
}

impl PolicySet {
    pub fn new(endpoint: impl Into<String>, entries: Vec<Entry>, limits: Limits) -> Self {
        Self {
            endpoint: endpoint.into(),
            entries,
            limits,
        }
    }

    /// Evaluate every policy in order, each in its own fresh sandbox. A deny ends the
    /// walk: nothing after it could change the outcome.
    pub fn judge(&self, facet: &Facet) -> Judgement {
        if self.entries.is_empty() {
            let reason = format!(
                "endpoint {} has no policies, so nothing is allowed",
                self.endpoint
            );
            return Judgement {
                verdict: Verdict::deny(reason),
                evaluations: Vec::new(),
            };
        }

        let mut evaluations = Vec::with_capacity(self.entries.len());
        let mut approvers: Vec<String> = Vec::new();
        let mut prompts: Vec<String> = Vec::new();
        for entry in &self.entries {
            let evaluation = evaluate_one(entry, facet, &self.limits);
            match &evaluation.verdict {
                Verdict::Allow => {}
                Verdict::Deny { reason } => {
                    let reason = if evaluation.failure.is_some() {
                        reason.clone()
                    } else {
                        format!("denied by policy {}: {reason}", evaluation.policy)
                    };
                    evaluations.push(evaluation);
                    return Judgement {
                        verdict: Verdict::Deny { reason },
                        evaluations,
                    };
                }
                Verdict::Approve {
                    approvers: more,
                    prompt,
                } => {
                    for approver in more {
                        if !approvers.contains(approver) {
                            approvers.push(approver.clone());
                        }
                    }
                    if !prompts.contains(prompt) {
                        prompts.push(prompt.clone());
                    }
                }
            }
            evaluations.push(evaluation);
        }

        let verdict = if approvers.is_empty() {
            Verdict::Allow
        } else {
            Verdict::Approve {
                approvers,
                prompt: prompts.join("; "),
            }
        };
        Judgement {
            verdict,
            evaluations,
        }
    }
}

/// Evaluate one policy of a set in a fresh sandbox; a failure becomes a deny naming it.
pub fn evaluate_one(entry: &Entry, facet: &Facet, limits: &Limits) -> Evaluation {
    let policy = &entry.policy;
    let (verdict, failure) = match policy.evaluate(&entry.settings, facet, limits) {
        Ok(verdict) => (verdict, None),
        Err(failure) => (failure_verdict(policy, &failure), Some(failure.kind())),
    };
    Evaluation {
        policy: policy.name.clone(),
        digest: policy.digest.clone(),
        verdict,
        failure,
    }
}

/// The deny a failed evaluation turns into: "policy no-secrets@1a2b3c4d: deadline exceeded after 10 ms".
pub fn failure_verdict(policy: &LoadedPolicy, failure: &Failure) -> Verdict {
    Verdict::deny(format!("policy {}: {failure}", policy.label()))
}

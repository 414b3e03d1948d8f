//! Policy test cases: a JSON file of (facet, settings, expected verdict), run by
//! `sigward policy test` and, when a module ships `<module>.cases.json` beside it, on
//! every load and reload.
//!
//! ```json
//! { "settings": {"approvers": ["oncall"]},
//!   "cases": [
//!     { "name": "reads pass", "facet": {"iam_action": "s3:GetObject", "action": "GetObject"},
//!       "expect": {"verdict": "allow"} },
//!     { "name": "deletes wait", "facet": {"iam_action": "s3:DeleteObject", "action": "DeleteObject"},
//!       "expect": {"verdict": "approve", "approvers": ["oncall"], "prompt_contains": "s3:DeleteObject"} } ] }
//! ```
//! A case's own `settings` replace the file's. In `expect`, only the fields given are
//! compared: `reason`/`prompt` exactly, `*_contains` as substrings.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::Verdict;
use super::evaluate::Limits;
use super::module::LoadedPolicy;
use super::set::failure_verdict;
use crate::facet::Facet;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CaseFileForm {
    Full(CaseFile),
    List(Vec<Case>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub facet: Facet,
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
    pub expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub verdict: ExpectedKind,
    pub reason: Option<String>,
    pub reason_contains: Option<String>,
    pub approvers: Option<Vec<String>>,
    pub prompt: Option<String>,
    pub prompt_contains: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedKind {
    Allow,
    Deny,
    Approve,
}

#[derive(Debug, thiserror::Error)]
pub enum CasesError {
    #[error("cannot read cases file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("cases file {path} is not valid: {message}")]
    Parse { path: String, message: String },
}

/// One case's outcome: `Err` says how the verdict differed from the expectation.
#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    pub outcome: Result<(), String>,
}

impl CaseFile {
    pub fn read(path: &Path) -> Result<Self, CasesError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| CasesError::Read {
            path: shown.clone(),
            error,
        })?;
        Self::parse(&text).map_err(|message| CasesError::Parse {
            path: shown,
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        // Parse as the full form first so its errors (unknown keys …) are the ones shown.
        match serde_json::from_str::<CaseFile>(text) {
            Ok(file) => Ok(file),
            Err(full_error) => match serde_json::from_str::<CaseFileForm>(text) {
                Ok(CaseFileForm::List(cases)) => Ok(CaseFile {
                    settings: None,
                    cases,
                }),
                Ok(CaseFileForm::Full(file)) => Ok(file),
                Err(_) => Err(full_error.to_string()),
            },
        }
    }

    /// Run every case against `policy`, each in a fresh sandbox.
    pub fn run(&self, policy: &LoadedPolicy, limits: &Limits) -> Vec<CaseResult> {
        self.cases
            .iter()
            .map(|case| {
                let settings = case.settings.as_ref().or(self.settings.as_ref());
                let settings: Arc<str> =
                    settings.map_or_else(|| "{}".into(), |v| v.to_string().into());
                let verdict = policy
                    .evaluate(&settings, &case.facet, limits)
                    .unwrap_or_else(|failure| failure_verdict(policy, &failure));
                CaseResult {
                    name: case.name.clone(),
                    outcome: case.expect.check(&verdict),
                }
            })
            .collect()
    }
}

impl Expect {
    fn check(&self, verdict: &Verdict) -> Result<(), String> {
        let got = serde_json::to_string(verdict).unwrap_or_else(|_| verdict.kind().to_string());
        let kind_matches = matches!(
            (self.verdict, verdict),
            (ExpectedKind::Allow, Verdict::Allow)
                | (ExpectedKind::Deny, Verdict::Deny { .. })
                | (ExpectedKind::Approve, Verdict::Approve { .. })
        );
        if !kind_matches {
            return Err(format!("expected {:?}, got {got}", self.verdict).to_lowercase());
        }
        let (reason, approvers, prompt) = match verdict {
            Verdict::Allow => (None, None, None),
            Verdict::Deny { reason } => (Some(reason), None, None),
            Verdict::Approve { approvers, prompt } => (None, Some(approvers), Some(prompt)),
        };
        let text_checks = [
            ("reason", &self.reason, reason, true),
            ("reason", &self.reason_contains, reason, false),
            ("prompt", &self.prompt, prompt, true),
            ("prompt", &self.prompt_contains, prompt, false),
        ];
        for (what, want, actual, exact) in text_checks {
            let (Some(want), Some(actual)) = (want, actual) else {
                continue;
            };
            let ok = if exact {
                actual == want
            } else {
                actual.contains(want.as_str())
            };
            if !ok {
                let relation = if exact { "to be" } else { "to contain" };
                return Err(format!(
                    "expected {what} {relation} {want:?}, got {actual:?}"
                ));
            }
        }
        if let (Some(want), Some(actual)) = (&self.approvers, approvers)
            && want != actual
        {
            return Err(format!("expected approvers {want:?}, got {actual:?}"));
        }
        Ok(())
    }
}

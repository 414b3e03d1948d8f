//! `builtin:iam`: IAM policy documents, evaluated the way AWS evaluates identity
//! policies — an explicit `Deny` beats everything, a matching `Allow` allows, and no
//! matching `Allow` is an implicit deny.
//!
//! Settings: `{"documents": [<IAM policy document>, …], "approvers": ["oncall"]}`.
//!
//! - `Action` / `NotAction`: `service:Operation` patterns with `*` and `?`, compared
//!   ignoring case, against the call's IAM action.
//! - Every (IAM action, resource) pair the call needs (`facet.authorizations`: CopyObject
//!   is `s3:PutObject` on the destination and `s3:GetObject` on the source) is authorized
//!   on its own, as AWS does: one denied or not allowed pair refuses the call.
//! - `Resource` / `NotResource`: ARN patterns with `*` and `?` (case-sensitive). An
//!   action IAM authorizes on no resource (ListBuckets) is matched only by `"*"`. A pair
//!   whose resource sigward cannot determine fails closed: a `Deny` matches it whatever
//!   its resource element, an `Allow` (or `Approve`) only with `"*"`; the reason says so.
//! - `Condition`: `StringEquals`, `StringNotEquals`, `StringEqualsIgnoreCase`,
//!   `StringNotEqualsIgnoreCase`, `StringLike`, `StringNotLike`, `ArnEquals`, `ArnLike`,
//!   `ArnNotEquals`, `ArnNotLike`, `Bool`, each also as `…IfExists`. Operators are ANDed,
//!   keys within one ANDed, values of one key ORed. Keys: `aws:RequestedRegion`,
//!   `aws:PrincipalAccount` and `aws:ResourceAccount` (the target account),
//!   `aws:SecureTransport` (always true: agents reach sigward over TLS), `sigward:Agent`,
//!   `sigward:AccountName`, `sigward:Endpoint`, `s3:prefix`, `s3:delimiter`.
//! - An unknown operator or condition key fails closed and says so in the reason: an
//!   `Allow` (or `Approve`) statement carrying one does not match; a `Deny` statement
//!   carrying one matches.
//! - sigward's own extension: `"Effect": "Approve"` (with optional `"Approvers": […]`,
//!   else the settings' `approvers`, default `["oncall"]`) asks a human. Deny beats
//!   approve beats allow.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use sigward_policy_sdk::prelude::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IamSettings {
    documents: Vec<Document>,
    #[serde(default = "default_approvers")]
    approvers: Vec<String>,
}

fn default_approvers() -> Vec<String> {
    vec!["oncall".to_string()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(rename = "Version", default)]
    _version: Option<String>,
    #[serde(rename = "Id", default)]
    _id: Option<String>,
    #[serde(rename = "Statement")]
    statement: OneOrMany<Statement>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(one) => core::slice::from_ref(one),
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Effect {
    Allow,
    Deny,
    Approve,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Statement {
    #[serde(rename = "Sid", default)]
    sid: Option<String>,
    #[serde(rename = "Effect")]
    effect: Effect,
    #[serde(rename = "Action")]
    action: Option<OneOrMany<String>>,
    #[serde(rename = "NotAction")]
    not_action: Option<OneOrMany<String>>,
    #[serde(rename = "Resource")]
    resource: Option<OneOrMany<String>>,
    #[serde(rename = "NotResource")]
    not_resource: Option<OneOrMany<String>>,
    #[serde(rename = "Condition", default)]
    condition: BTreeMap<String, BTreeMap<String, Value>>,
    #[serde(rename = "Approvers", default)]
    approvers: Option<Vec<String>>,
}

pub struct Iam;

impl Policy for Iam {
    fn evaluate(facet: &Facet, settings: &Settings) -> Verdict {
        let settings: IamSettings = match settings.parse() {
            Ok(s) => s,
            Err(e) => return Verdict::deny(format!("iam: {e}")),
        };
        match evaluate_documents(facet, &settings) {
            Ok(verdict) => verdict,
            Err(e) => Verdict::deny(format!("iam: {e}")),
        }
    }
}

/// Where a statement stands: "statement Sid" or "statement 2 of document 1".
fn label(statement: &Statement, document: usize, index: usize) -> String {
    match &statement.sid {
        Some(sid) if !sid.is_empty() => format!("statement {sid}"),
        _ => format!("statement {} of document {}", index + 1, document + 1),
    }
}

fn evaluate_documents(facet: &Facet, settings: &IamSettings) -> Result<Verdict, String> {
    let pairs = facet.pairs();
    let mut approvers: Vec<String> = Vec::new();
    let mut approved_by: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    // Every pair AWS would authorize must be allowed, and none denied.
    for pair in &pairs {
        let action = pair.action.as_str();
        let resource = pair.resource.as_deref();
        let shown = resource.unwrap_or("a resource sigward cannot determine");
        if resource.is_none() {
            let note = format!(
                "sigward cannot determine the resource of {action}: a Deny naming any resource is taken to match it and an Allow needs \"*\""
            );
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        let mut allowed = false;
        for (d, document) in settings.documents.iter().enumerate() {
            for (i, statement) in document.statement.as_slice().iter().enumerate() {
                let here = label(statement, d, i);
                if !applies(statement, action, resource, &here)? {
                    continue;
                }
                let conditions = conditions_hold(statement, facet, &here);
                let matched = match (&conditions, statement.effect) {
                    (Ok(holds), _) => *holds,
                    // Fail closed: an unknown condition denies, never allows.
                    (Err(_), Effect::Deny) => true,
                    (Err(_), _) => false,
                };
                if let Err(note) = conditions
                    && !notes.contains(&note)
                {
                    notes.push(note);
                }
                if !matched {
                    continue;
                }
                match statement.effect {
                    Effect::Deny => {
                        let mut reason =
                            format!("{action} on {shown} is explicitly denied by {here}");
                        append_notes(&mut reason, &notes);
                        return Ok(Verdict::deny(reason));
                    }
                    Effect::Allow => allowed = true,
                    Effect::Approve => {
                        allowed = true;
                        let who = statement.approvers.as_ref().unwrap_or(&settings.approvers);
                        for approver in who {
                            if !approvers.contains(approver) {
                                approvers.push(approver.clone());
                            }
                        }
                        if !approved_by.contains(&here) {
                            approved_by.push(here);
                        }
                    }
                }
            }
        }
        if !allowed {
            let mut reason = format!("no statement allows {action} on {shown}");
            append_notes(&mut reason, &notes);
            return Ok(Verdict::deny(reason));
        }
    }
    if approved_by.is_empty() {
        return Ok(Verdict::Allow);
    }
    if approvers.is_empty() {
        return Err(format!(
            "{} asks for approval but names no approvers",
            approved_by.join(", ")
        ));
    }
    let mut prompt = format!("in account {}: ", facet.account_label());
    if !facet.principal.is_empty() {
        prompt.push_str(&facet.principal);
        prompt.push_str(" wants ");
    }
    let wants: Vec<String> = pairs
        .iter()
        .map(|p| match p.resource.as_deref() {
            Some("*") => p.action.clone(),
            Some(resource) => format!("{} on {resource}", p.action),
            None => format!("{} on an undetermined resource", p.action),
        })
        .collect();
    prompt.push_str(&wants.join(", "));
    prompt.push_str(" (");
    prompt.push_str(&approved_by.join(", "));
    prompt.push(')');
    Ok(Verdict::approve(approvers, prompt))
}

fn append_notes(reason: &mut String, notes: &[String]) {
    if !notes.is_empty() {
        reason.push_str(" (");
        reason.push_str(&notes.join("; "));
        reason.push(')');
    }
}

/// Whether the statement's action and resource elements cover this action on `resource`.
/// An unknown resource (`None`) could be any: a `Deny` is taken to cover it whatever its
/// resource element says (fail closed), an `Allow` or `Approve` only with `"*"`.
fn applies(
    statement: &Statement,
    action: &str,
    resource: Option<&str>,
    here: &str,
) -> Result<bool, String> {
    let action_matches = match (&statement.action, &statement.not_action) {
        (Some(actions), None) => actions
            .as_slice()
            .iter()
            .any(|p| wildcard_match_ignore_case(p, action)),
        (None, Some(actions)) => !actions
            .as_slice()
            .iter()
            .any(|p| wildcard_match_ignore_case(p, action)),
        _ => return Err(format!("{here} needs exactly one of Action and NotAction")),
    };
    if !action_matches {
        return Ok(false);
    }
    let Some(resource) = resource else {
        return match (
            &statement.resource,
            &statement.not_resource,
            statement.effect,
        ) {
            (Some(_), None, Effect::Deny) | (None, Some(_), Effect::Deny) => Ok(true),
            (Some(patterns), None, _) => Ok(patterns.as_slice().iter().any(|p| p == "*")),
            (None, Some(_), _) => Ok(false),
            _ => Err(format!(
                "{here} needs exactly one of Resource and NotResource"
            )),
        };
    };
    let resource_matches = |patterns: &OneOrMany<String>| {
        patterns
            .as_slice()
            .iter()
            .any(|p| p == "*" || (resource != "*" && wildcard_match(p, resource)))
    };
    match (&statement.resource, &statement.not_resource) {
        (Some(patterns), None) => Ok(resource_matches(patterns)),
        (None, Some(patterns)) => Ok(!resource_matches(patterns)),
        _ => Err(format!(
            "{here} needs exactly one of Resource and NotResource"
        )),
    }
}

/// The value of a condition key for this call, if the call has one.
fn key_value(key: &str, facet: &Facet) -> Result<Option<String>, ()> {
    let lower = key.to_ascii_lowercase();
    let value = match lower.as_str() {
        "aws:requestedregion" => Some(facet.region.clone()),
        "aws:principalaccount" | "aws:resourceaccount" => Some(facet.account.clone()),
        "aws:securetransport" => Some("true".to_string()),
        "sigward:agent" => Some(facet.principal.clone()),
        "sigward:accountname" => facet.account_name.clone(),
        "sigward:endpoint" => Some(facet.endpoint.clone()),
        "s3:prefix" => facet.param("prefix").map(ToString::to_string),
        "s3:delimiter" => facet.param("delimiter").map(ToString::to_string),
        _ => return Err(()),
    };
    Ok(value.filter(|v| !v.is_empty()))
}

/// Whether every condition holds; `Err` names what sigward does not know.
fn conditions_hold(statement: &Statement, facet: &Facet, here: &str) -> Result<bool, String> {
    let mut holds = true;
    for (operator, keys) in &statement.condition {
        let (base, if_exists) = match operator.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (operator.as_str(), false),
        };
        let Some(test) = Operator::parse(base) else {
            return Err(format!("{here}: unknown condition operator {operator}"));
        };
        for (key, wanted) in keys {
            let actual = key_value(key, facet)
                .map_err(|()| format!("{here}: unknown condition key {key}"))?;
            let wanted: Vec<String> = match wanted {
                Value::Array(values) => values.iter().map(text).collect(),
                other => vec![text(other)],
            };
            let ok = match actual {
                None if if_exists => true,
                // A missing key satisfies only negated operators.
                None => test.negated(),
                Some(actual) => test.holds(&actual, &wanted),
            };
            holds &= ok;
        }
    }
    Ok(holds)
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "true" } else { "false" }.to_string(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Copy)]
enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    ArnEquals,
    ArnLike,
    ArnNotEquals,
    ArnNotLike,
    Bool,
}

impl Operator {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "StringEquals" => Operator::StringEquals,
            "StringNotEquals" => Operator::StringNotEquals,
            "StringEqualsIgnoreCase" => Operator::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Operator::StringNotEqualsIgnoreCase,
            "StringLike" => Operator::StringLike,
            "StringNotLike" => Operator::StringNotLike,
            "ArnEquals" => Operator::ArnEquals,
            "ArnLike" => Operator::ArnLike,
            "ArnNotEquals" => Operator::ArnNotEquals,
            "ArnNotLike" => Operator::ArnNotLike,
            "Bool" => Operator::Bool,
            _ => return None,
        })
    }

    fn negated(self) -> bool {
        matches!(
            self,
            Operator::StringNotEquals
                | Operator::StringNotEqualsIgnoreCase
                | Operator::StringNotLike
                | Operator::ArnNotEquals
                | Operator::ArnNotLike
        )
    }

    /// Positive operators: any wanted value matches. Negated: none does.
    fn holds(self, actual: &str, wanted: &[String]) -> bool {
        let any = |f: &dyn Fn(&str) -> bool| wanted.iter().any(|w| f(w));
        match self {
            Operator::StringEquals => any(&|w| w == actual),
            Operator::StringNotEquals => !any(&|w| w == actual),
            Operator::StringEqualsIgnoreCase => any(&|w| w.eq_ignore_ascii_case(actual)),
            Operator::StringNotEqualsIgnoreCase => !any(&|w| w.eq_ignore_ascii_case(actual)),
            Operator::StringLike | Operator::ArnLike | Operator::ArnEquals => {
                any(&|w| wildcard_match(w, actual))
            }
            Operator::StringNotLike | Operator::ArnNotLike | Operator::ArnNotEquals => {
                !any(&|w| wildcard_match(w, actual))
            }
            Operator::Bool => any(&|w| w.eq_ignore_ascii_case(actual)),
        }
    }
}

export_policy!(Iam);

#[cfg(test)]
mod tests;

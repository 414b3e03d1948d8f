//! The aws facet: everything a policy is told about one AWS call.
//!
//! Its JSON form (used by `sigward policy eval`, policy test cases and the audit log)
//! uses the WIT field names in snake_case; fields left out are empty.

use serde::{Deserialize, Serialize};

/// What sigward understood of one AWS API call. Mirrors the WIT `aws-facet` record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Facet {
    /// SigV4 signing name: "s3", "dynamodb", "monitoring" …
    pub service: String,
    /// The API operation: "PutItem".
    pub action: String,
    /// The IAM permission that authorizes the call: "s3:GetObject" for HeadObject.
    pub iam_action: String,
    /// The 12-digit target account.
    pub account: String,
    /// The operator's label for the account.
    pub account_name: Option<String>,
    pub region: String,
    /// ARNs the call touches, where the request determines them.
    pub resources: Vec<String>,
    pub method: String,
    pub host: String,
    pub path: String,
    /// The agent that made the call.
    pub principal: String,
    /// The sigward endpoint that received the call.
    pub endpoint: String,
    /// Query parameters and top-level scalar request fields, in request order.
    pub params: Vec<(String, String)>,
    /// Every (IAM action, resource) pair AWS authorizes for the call — CopyObject is
    /// `s3:GetObject` on the source and `s3:PutObject` on the destination. Empty in
    /// facets recorded before sigward derived them: see [`Facet::pairs`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authorizations: Vec<Authorization>,
}

/// One (IAM action, resource) pair AWS authorizes. Mirrors the WIT `authorization` record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Authorization {
    /// "s3:GetObject".
    pub action: String,
    /// The ARN it is authorized on; `"*"` when IAM authorizes the action on no particular
    /// resource (ListBuckets); `None` when the call names a resource sigward cannot
    /// derive — policies must then assume it may be any resource.
    pub resource: Option<String>,
}

impl Authorization {
    pub fn new(action: impl Into<String>, resource: Option<String>) -> Self {
        Authorization {
            action: action.into(),
            resource,
        }
    }
}

impl Facet {
    /// The authorizations, or for a facet without them (recorded by an older sigward,
    /// written by hand) the ones its `iam_action` and `resources` imply: the action on
    /// each resource, or on an unknown resource when it names none.
    pub fn pairs(&self) -> Vec<Authorization> {
        if !self.authorizations.is_empty() {
            return self.authorizations.clone();
        }
        // As the guest SDK's `Facet::pairs` does: `service:action` when `iam_action` is empty.
        let action = if self.iam_action.is_empty() {
            format!("{}:{}", self.service, self.action)
        } else {
            self.iam_action.clone()
        };
        if self.resources.is_empty() {
            return vec![Authorization::new(action, None)];
        }
        self.resources
            .iter()
            .map(|r| Authorization::new(action.clone(), Some(r.clone())))
            .collect()
    }

    /// The facet a freshly loaded policy is smoke-tested with: a harmless read.
    pub fn smoke() -> Self {
        Facet {
            service: "sts".into(),
            action: "GetCallerIdentity".into(),
            iam_action: "sts:GetCallerIdentity".into(),
            account: "000000000000".into(),
            region: "us-east-1".into(),
            method: "POST".into(),
            host: "sts.us-east-1.amazonaws.com".into(),
            path: "/".into(),
            principal: "sigward-smoke-test".into(),
            endpoint: "sigward-smoke-test".into(),
            ..Facet::default()
        }
    }
}

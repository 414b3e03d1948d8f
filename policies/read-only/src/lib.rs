//! `builtin:read-only`: `Get*`, `List*`, `Describe*` and `Head*` calls pass; anything else
//! waits for a human.
//!
//! Settings: `{"approvers": ["oncall"]}` (the default). Unknown keys are an error, so a
//! typo cannot silently fall back to the default approvers.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use serde::Deserialize;
use sigward_policy_sdk::prelude::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadOnlySettings {
    #[serde(default = "default_approvers")]
    approvers: Vec<String>,
}

fn default_approvers() -> Vec<String> {
    vec!["oncall".to_string()]
}

pub struct ReadOnly;

impl Policy for ReadOnly {
    fn evaluate(facet: &Facet, settings: &Settings) -> Verdict {
        if reads_only(facet) {
            return Verdict::Allow;
        }
        let settings: ReadOnlySettings = match settings.parse() {
            Ok(s) => s,
            Err(e) => return Verdict::deny(format!("read-only: {e}")),
        };
        if settings.approvers.is_empty() {
            return Verdict::deny("read-only: invalid settings: approvers is empty");
        }
        Verdict::approve(settings.approvers, prompt(facet))
    }
}

/// "in account prod (111111111111): claude wants ec2:TerminateInstances on arn:…"
/// A read by its operation's name, and only reads by every (IAM action, resource) pair it
/// needs: a read that also writes (none today; the pairs say so if AWS adds one) waits.
/// API Gateway's management API authorizes reads as `apigateway:GET`.
fn reads_only(facet: &Facet) -> bool {
    is_read_action(facet.operation())
        && facet.pairs().iter().all(|pair| {
            let name = pair.action.rsplit_once(':').map_or("", |(_, name)| name);
            is_read_action(name) || name == "GET" || name == "HEAD"
        })
}

fn prompt(facet: &Facet) -> String {
    let mut prompt = format!("in account {}: ", facet.account_label());
    if !facet.principal.is_empty() {
        prompt.push_str(&facet.principal);
        prompt.push_str(" wants ");
    }
    prompt.push_str(&facet.iam_action_or_derived());
    if !facet.resources.is_empty() {
        prompt.push_str(" on ");
        prompt.push_str(&facet.resources.join(", "));
    }
    prompt
}

export_policy!(ReadOnly);

#[cfg(test)]
mod tests {
    use super::*;
    use sigward_policy_sdk::testing::{evaluate, facet};

    #[test]
    fn reads_pass() {
        for action in [
            "s3:GetObject",
            "s3:ListBuckets",
            "ec2:DescribeInstances",
            "s3:HeadObject",
            "dynamodb:GetItem",
            "secretsmanager:GetSecretValue", // read-only alone allows it: no-secrets is the pair
        ] {
            assert_eq!(
                evaluate::<ReadOnly>(&facet(action), "{}"),
                Verdict::Allow,
                "{action}"
            );
        }
    }

    #[test]
    fn every_pair_must_be_a_read() {
        let mut f = facet("s3:GetObject");
        f.authorizations = vec![
            sigward_policy_sdk::testing::authorization("s3:GetObject", Some("arn:aws:s3:::b/k")),
            sigward_policy_sdk::testing::authorization("s3:PutObjectAcl", Some("arn:aws:s3:::b/k")),
        ];
        assert!(evaluate::<ReadOnly>(&f, "{}").is_approve());
        let mut f = facet("apigateway:GET");
        f.action = "GetRestApis".into();
        assert_eq!(evaluate::<ReadOnly>(&f, "{}"), Verdict::Allow);
    }

    #[test]
    fn operation_name_decides_not_iam_action() {
        // HeadObject is authorized by s3:GetObject; a mutation authorized by a read-looking
        // permission must still be judged by what it does.
        let mut f = facet("s3:PutObject");
        f.action = "CopyObject".into();
        assert!(evaluate::<ReadOnly>(&f, "{}").is_approve());
    }

    #[test]
    fn mutations_wait_for_default_approvers() {
        for action in [
            "ec2:TerminateInstances",
            "s3:PutObject",
            "dynamodb:DeleteTable",
            "iam:CreateUser",
            "sts:AssumeRole",
        ] {
            let verdict = evaluate::<ReadOnly>(&facet(action), "{}");
            let Verdict::Approve(approval) = verdict else {
                panic!("{action}: {verdict:?}")
            };
            assert_eq!(approval.approvers, ["oncall"]);
            assert!(approval.prompt.contains(action), "{}", approval.prompt);
        }
    }

    #[test]
    fn prompt_leads_with_account_name_agent_action_and_resources() {
        let mut f = facet("ec2:TerminateInstances");
        f.account_name = Some("prod".into());
        f.principal = "claude".into();
        f.resources = vec!["arn:aws:ec2:us-east-1:111111111111:instance/i-0abc".into()];
        let Verdict::Approve(approval) =
            evaluate::<ReadOnly>(&f, r#"{"approvers":["alice","bob"]}"#)
        else {
            panic!("expected approve")
        };
        assert_eq!(approval.approvers, ["alice", "bob"]);
        assert_eq!(
            approval.prompt,
            "in account prod (111111111111): claude wants ec2:TerminateInstances on arn:aws:ec2:us-east-1:111111111111:instance/i-0abc"
        );
    }

    #[test]
    fn prompt_without_name_uses_account_id() {
        let Verdict::Approve(approval) = evaluate::<ReadOnly>(&facet("s3:DeleteBucket"), "{}")
        else {
            panic!()
        };
        assert_eq!(
            approval.prompt,
            "in account 111111111111: agent wants s3:DeleteBucket"
        );
    }

    #[test]
    fn bad_settings_fail_closed() {
        for settings in [
            r#"{"approver":["x"]}"#,
            r#"{"approvers":"x"}"#,
            "not json",
            r#"{"approvers":[]}"#,
        ] {
            let verdict = evaluate::<ReadOnly>(&facet("s3:PutObject"), settings);
            let Verdict::Deny(reason) = verdict else {
                panic!("{settings}: {verdict:?}")
            };
            assert!(
                reason.starts_with("read-only: invalid settings"),
                "{reason}"
            );
        }
    }
}

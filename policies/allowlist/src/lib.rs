//! `builtin:allowlist`: the operator lists which accounts may be used, in which regions,
//! for which services; every call outside that is denied with a reason naming what was
//! outside it.
//!
//! Settings:
//!
//! ```json
//! {"accounts": {
//!     "prod":         {"us-east-1": ["s3", "dynamodb"], "*": ["sts"]},
//!     "222222222222": {"eu-*": ["*"]},
//!     "*":            {"*": ["sts"]}
//! }}
//! ```
//!
//! - An account key is a 12-digit account id, the operator's name for it (`accounts` in
//!   the endpoint's config), or `*` for any account.
//! - A region key is a region, or a pattern with `*` and `?` (`eu-*`, `*`).
//! - A service is an IAM prefix (`s3`, `cloudwatch`) or a SigV4 signing name
//!   (`monitoring`), with `*` and `?`, compared ignoring case.
//!
//! A call is allowed when **any** entry whose account key and region key both match
//! lists its service; entries add up, none takes anything away. Unknown keys and a
//! missing `accounts` are errors, so a typo denies everything rather than allowing it.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;

use serde::Deserialize;
use sigward_policy_sdk::prelude::*;

extern crate alloc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowlistSettings {
    /// account → region → services.
    accounts: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

pub struct Allowlist;

impl Policy for Allowlist {
    fn evaluate(facet: &Facet, settings: &Settings) -> Verdict {
        let settings: AllowlistSettings = match settings.parse() {
            Ok(s) => s,
            Err(e) => return Verdict::deny(format!("allowlist: {e}")),
        };
        judge(facet, &settings)
    }
}

fn judge(facet: &Facet, settings: &AllowlistSettings) -> Verdict {
    let account = facet.account_label();
    let accounts: Vec<&BTreeMap<String, Vec<String>>> = settings
        .accounts
        .iter()
        .filter(|(key, _)| account_matches(key, facet))
        .map(|(_, regions)| regions)
        .collect();
    if accounts.is_empty() {
        return Verdict::deny(format!("account {account} not allowed"));
    }
    let services: Vec<&String> = accounts
        .iter()
        .flat_map(|regions| regions.iter())
        .filter(|(pattern, _)| wildcard_match(pattern, &facet.region))
        .flat_map(|(_, services)| services)
        .collect();
    if services.is_empty() {
        return Verdict::deny(format!(
            "region {} not allowed for account {account}",
            facet.region
        ));
    }
    let action = facet.iam_action_or_derived();
    let prefix = |action: &str| action.split_once(':').map_or("", |(p, _)| p).to_string();
    let iam_prefix = prefix(&action);
    let names = |service: &str| {
        services
            .iter()
            .any(|pattern| wildcard_match_ignore_case(pattern, service))
    };
    let refused = if names(&iam_prefix) || names(&facet.service) {
        // Then every other service a pair of the call needs (an S3 upload with a KMS key
        // is also kms:GenerateDataKey).
        facet
            .pairs()
            .iter()
            .map(|pair| prefix(&pair.action))
            .find(|p| *p != iam_prefix && !names(p))
    } else {
        Some(iam_prefix)
    };
    match refused {
        None => Verdict::Allow,
        Some(service) => Verdict::deny(format!(
            "service {service} not allowed in region {} for account {account}",
            facet.region
        )),
    }
}

fn account_matches(key: &str, facet: &Facet) -> bool {
    key == "*"
        || key == facet.account
        || facet
            .account_name
            .as_deref()
            .is_some_and(|name| !name.is_empty() && key == name)
}

export_policy!(Allowlist);

#[cfg(test)]
mod tests {
    use super::*;
    use sigward_policy_sdk::testing::{evaluate, facet};

    const SETTINGS: &str = r#"{"accounts": {
        "prod": {"us-east-1": ["s3", "dynamodb"], "*": ["sts"]},
        "222222222222": {"eu-*": ["*"]},
        "*": {"*": ["sts"]}
    }}"#;

    fn call(iam_action: &str, account: &str, name: Option<&str>, region: &str) -> Verdict {
        let mut f = facet(iam_action);
        f.account = account.into();
        f.account_name = name.map(Into::into);
        f.region = region.into();
        evaluate::<Allowlist>(&f, SETTINGS)
    }

    fn reason(verdict: Verdict) -> String {
        match verdict {
            Verdict::Deny(reason) => reason,
            other => panic!("expected a deny, got {other:?}"),
        }
    }

    #[test]
    fn allows_what_an_entry_lists() {
        let prod = Some("prod");
        assert!(call("s3:GetObject", "111111111111", prod, "us-east-1").is_allow());
        assert!(call("dynamodb:PutItem", "111111111111", prod, "us-east-1").is_allow());
        // "*" region entry of prod, and the "*" account entry, both give sts.
        assert!(call("sts:GetCallerIdentity", "111111111111", prod, "ap-south-1").is_allow());
        assert!(call("sts:GetCallerIdentity", "333333333333", None, "us-west-2").is_allow());
        // Region patterns and a service wildcard.
        assert!(call("ec2:RunInstances", "222222222222", None, "eu-west-1").is_allow());
        // By account id as well as by name.
        let by_id = r#"{"accounts": {"111111111111": {"us-east-1": ["s3"]}}}"#;
        assert!(evaluate::<Allowlist>(&facet("s3:GetObject"), by_id).is_allow());
    }

    #[test]
    fn a_signing_name_or_an_iam_prefix_names_a_service() {
        let settings = r#"{"accounts": {"*": {"*": ["monitoring"]}}}"#;
        let mut f = facet("cloudwatch:PutMetricData");
        f.service = "monitoring".into();
        assert!(evaluate::<Allowlist>(&f, settings).is_allow());
        let settings = r#"{"accounts": {"*": {"*": ["CloudWatch"]}}}"#;
        assert!(evaluate::<Allowlist>(&f, settings).is_allow());
    }

    #[test]
    fn every_service_a_call_needs_must_be_allowed() {
        let s3_only = r#"{"accounts": {"*": {"*": ["s3"]}}}"#;
        let mut f = facet("s3:PutObject");
        f.authorizations = vec![
            sigward_policy_sdk::testing::authorization("s3:PutObject", Some("arn:aws:s3:::b/k")),
            sigward_policy_sdk::testing::authorization(
                "kms:GenerateDataKey",
                Some("arn:aws:kms:us-east-1:111111111111:key/k"),
            ),
        ];
        assert_eq!(
            reason(evaluate::<Allowlist>(&f, s3_only)),
            "service kms not allowed in region us-east-1 for account 111111111111"
        );
        let with_kms = r#"{"accounts": {"*": {"*": ["s3", "kms"]}}}"#;
        assert!(evaluate::<Allowlist>(&f, with_kms).is_allow());
    }

    #[test]
    fn denials_name_what_was_outside() {
        let prod = Some("prod");
        assert_eq!(
            reason(call("ec2:RunInstances", "111111111111", prod, "us-east-1")),
            "service ec2 not allowed in region us-east-1 for account prod (111111111111)"
        );
        assert_eq!(
            reason(call("s3:GetObject", "111111111111", prod, "ap-south-1")),
            "service s3 not allowed in region ap-south-1 for account prod (111111111111)"
        );
        assert_eq!(
            reason(call("s3:GetObject", "222222222222", None, "us-east-1")),
            "service s3 not allowed in region us-east-1 for account 222222222222"
        );
        let no_wildcard = r#"{"accounts": {"prod": {"us-east-1": ["s3"]}}}"#;
        let mut f = facet("s3:GetObject");
        f.account = "333333333333".into();
        assert_eq!(
            reason(evaluate::<Allowlist>(&f, no_wildcard)),
            "account 333333333333 not allowed"
        );
        f.account = "111111111111".into();
        f.account_name = Some("prod".into());
        f.region = "ap-south-1".into();
        assert_eq!(
            reason(evaluate::<Allowlist>(&f, no_wildcard)),
            "region ap-south-1 not allowed for account prod (111111111111)"
        );
    }

    #[test]
    fn bad_settings_deny_everything() {
        for settings in [
            "{}",
            r#"{"account": {"*": {"*": ["*"]}}}"#,
            r#"{"accounts": {"*": {"*": "s3"}}}"#,
            r#"{"accounts": {"*": {"*": ["*"]}}, "extra": 1}"#,
            "not json",
        ] {
            let verdict = evaluate::<Allowlist>(&facet("s3:GetObject"), settings);
            assert!(verdict.is_deny(), "{settings}: {verdict:?}");
        }
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        let settings = r#"{"accounts": {}}"#;
        assert!(evaluate::<Allowlist>(&facet("sts:GetCallerIdentity"), settings).is_deny());
    }
}

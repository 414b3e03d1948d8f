//! The example policy from the README, built natively and tested the way its author would.

use sigward_policy_sdk::prelude::*;
use sigward_policy_sdk::testing::{evaluate, facet};

struct NoProdDeletes;

impl Policy for NoProdDeletes {
    fn evaluate(facet: &Facet, _settings: &Settings) -> Verdict {
        let prod = facet.account_name.as_deref() == Some("prod");
        if prod && facet.action.starts_with("Delete") {
            return Verdict::deny(format!("{} is not allowed in prod", facet.iam_action));
        }
        if facet
            .resources
            .iter()
            .any(|arn| wildcard_match("arn:aws:s3:::audit-*", arn))
        {
            return Verdict::approve(
                ["security"],
                format!("{} touches the audit buckets", facet.iam_action),
            );
        }
        Verdict::Allow
    }
}

export_policy!(NoProdDeletes);

#[test]
fn deletes_in_prod_are_denied() {
    let mut f = facet("s3:DeleteBucket");
    f.account_name = Some("prod".into());
    assert_eq!(
        evaluate::<NoProdDeletes>(&f, "{}"),
        Verdict::deny("s3:DeleteBucket is not allowed in prod")
    );
    f.account_name = Some("staging".into());
    assert!(evaluate::<NoProdDeletes>(&f, "{}").is_allow());
}

#[test]
fn audit_buckets_need_security() {
    let mut f = facet("s3:PutObject");
    f.resources = vec!["arn:aws:s3:::audit-2026/log".into()];
    let Verdict::Approve(approval) = evaluate::<NoProdDeletes>(&f, "{}") else {
        panic!("expected approve")
    };
    assert_eq!(approval.approvers, ["security"]);
    assert_eq!(approval.prompt, "s3:PutObject touches the audit buckets");
}

#[test]
fn settings_parse_errors_are_sentences() {
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct S {
        #[allow(dead_code)]
        limit: u32,
    }
    let err = Settings::from_json(r#"{"limt": 1}"#)
        .parse::<S>()
        .expect_err("typo");
    assert!(
        err.starts_with("invalid settings: unknown field `limt`"),
        "{err}"
    );
    assert_eq!(
        Settings::from_json("").parse::<serde_json::Value>(),
        Ok(serde_json::json!({}))
    );
}

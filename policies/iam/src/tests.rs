//! Cases written from AWS's documented policy evaluation logic for identity policies:
//! explicit deny → deny; else an allow → allow; else implicit deny.

use super::*;
use sigward_policy_sdk::testing::{evaluate, facet};

fn call(iam_action: &str, resources: &[&str]) -> Facet {
    let mut f = facet(iam_action);
    f.resources = resources.iter().map(|r| r.to_string()).collect();
    f.account_name = Some("prod".into());
    f.principal = "claude".into();
    f
}

fn run(f: &Facet, documents: &str) -> Verdict {
    evaluate::<Iam>(f, &format!(r#"{{"documents": {documents}}}"#))
}

fn reason(verdict: Verdict) -> String {
    match verdict {
        Verdict::Deny(reason) => reason,
        other => panic!("expected a deny, got {other:?}"),
    }
}

const READ_BUCKET: &str = r#"[{"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": ["arn:aws:s3:::data", "arn:aws:s3:::data/*"]}
]}]"#;

#[test]
fn an_allow_allows_and_nothing_else_does() {
    let get = call("s3:GetObject", &["arn:aws:s3:::data/report.csv"]);
    assert!(run(&get, READ_BUCKET).is_allow());
    // Action matching ignores case.
    let get_lower = call("S3:getobject", &["arn:aws:s3:::data/report.csv"]);
    assert!(run(&get_lower, READ_BUCKET).is_allow());
    // Another bucket: implicit deny.
    let other = call("s3:GetObject", &["arn:aws:s3:::secret/x"]);
    assert_eq!(
        reason(run(&other, READ_BUCKET)),
        "no statement allows s3:GetObject on arn:aws:s3:::secret/x"
    );
    // Another action: implicit deny.
    let put = call("s3:PutObject", &["arn:aws:s3:::data/x"]);
    assert!(run(&put, READ_BUCKET).is_deny());
    // Resource ARNs are case-sensitive.
    let upper = call("s3:GetObject", &["arn:aws:s3:::DATA/x"]);
    assert!(run(&upper, READ_BUCKET).is_deny());
    // No documents: nothing is allowed.
    assert!(run(&get, "[]").is_deny());
}

#[test]
fn an_explicit_deny_beats_any_allow_in_any_document() {
    let documents = r#"[
        {"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}},
        {"Statement": [{"Sid": "NoDeletes", "Effect": "Deny", "Action": "s3:Delete*", "Resource": "*"}]}
    ]"#;
    assert!(run(&call("s3:GetObject", &["arn:aws:s3:::b/k"]), documents).is_allow());
    assert_eq!(
        reason(run(
            &call("s3:DeleteObject", &["arn:aws:s3:::b/k"]),
            documents
        )),
        "s3:DeleteObject on arn:aws:s3:::b/k is explicitly denied by statement NoDeletes"
    );
}

#[test]
fn not_action_with_deny_denies_everything_outside_the_list() {
    // AWS's documented pattern: deny everything except IAM and STS.
    let documents = r#"[{"Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "NotAction": ["iam:*", "sts:*"], "Resource": "*"}
    ]}]"#;
    assert!(run(&call("sts:GetCallerIdentity", &[]), documents).is_allow());
    assert!(run(&call("iam:ListRoles", &[]), documents).is_allow());
    // sigward gives DescribeInstances, which IAM authorizes on no resource, the pair on "*".
    let mut describe = call("ec2:DescribeInstances", &[]);
    pairs(&mut describe, &[("ec2:DescribeInstances", Some("*"))]);
    let verdict = run(&describe, documents);
    assert_eq!(
        reason(verdict),
        "ec2:DescribeInstances on * is explicitly denied by statement 2 of document 1"
    );
}

#[test]
fn not_action_with_allow_allows_everything_outside_the_list() {
    let documents =
        r#"[{"Statement": {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}}]"#;
    assert!(run(&call("s3:ListAllMyBuckets", &[]), documents).is_allow());
    assert!(run(&call("iam:CreateUser", &[]), documents).is_deny());
}

#[test]
fn not_resource_and_wildcard_resources() {
    let documents = r#"[{"Statement": [
        {"Effect": "Allow", "Action": "s3:*", "NotResource": "arn:aws:s3:::private*"},
        {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "arn:aws:dynamodb:*:111111111111:table/app-?"}
    ]}]"#;
    assert!(run(&call("s3:GetObject", &["arn:aws:s3:::public/x"]), documents).is_allow());
    assert!(
        run(
            &call("s3:GetObject", &["arn:aws:s3:::private-data/x"]),
            documents
        )
        .is_deny()
    );
    let table = "arn:aws:dynamodb:us-east-1:111111111111:table/app-1";
    assert!(run(&call("dynamodb:GetItem", &[table]), documents).is_allow());
    let long = "arn:aws:dynamodb:us-east-1:111111111111:table/app-10";
    assert!(run(&call("dynamodb:GetItem", &[long]), documents).is_deny());
}

#[test]
fn every_resource_of_a_call_must_be_allowed() {
    // CopyObject touches the source and the destination.
    let copy = call(
        "s3:CopyObject",
        &["arn:aws:s3:::data/a", "arn:aws:s3:::other/b"],
    );
    assert_eq!(
        reason(run(
            &copy,
            r#"[{"Statement": {"Effect": "Allow", "Action": "s3:CopyObject", "Resource": "arn:aws:s3:::data/*"}}]"#
        )),
        "no statement allows s3:CopyObject on arn:aws:s3:::other/b"
    );
    let both = r#"[{"Statement": {"Effect": "Allow", "Action": "s3:CopyObject", "Resource": ["arn:aws:s3:::data/*", "arn:aws:s3:::other/*"]}}]"#;
    assert!(run(&copy, both).is_allow());
}

#[test]
fn a_call_without_known_resources_needs_a_star() {
    let list = call("s3:ListAllMyBuckets", &[]);
    assert!(
        run(&list, READ_BUCKET).is_deny(),
        "bucket ARNs do not cover it"
    );
    let star = r#"[{"Statement": {"Effect": "Allow", "Action": "s3:List*", "Resource": "*"}}]"#;
    assert!(run(&list, star).is_allow());
}

#[test]
fn conditions() {
    let documents = r#"[{"Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*",
         "Condition": {"StringEquals": {"aws:RequestedRegion": ["us-east-1", "eu-west-1"]},
                       "StringLike": {"sigward:Agent": "claude*"}}},
        {"Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"StringNotEquals": {"aws:PrincipalAccount": "111111111111"}}}
    ]}]"#;
    let mut f = call("ec2:DescribeInstances", &[]);
    assert!(run(&f, documents).is_allow());
    f.region = "ap-south-1".into();
    assert!(run(&f, documents).is_deny(), "region outside the list");
    f.region = "eu-west-1".into();
    f.principal = "other-agent".into();
    assert!(run(&f, documents).is_deny(), "agent outside the pattern");
    f.principal = "claude-2".into();
    f.account = "222222222222".into();
    assert!(
        reason(run(&f, documents)).contains("explicitly denied"),
        "another account"
    );
}

#[test]
fn condition_keys_and_operators() {
    let statement = |condition: &str| {
        format!(
            r#"[{{"Statement": {{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {condition}}}}}]"#
        )
    };
    let mut f = call("s3:ListBucket", &[]);
    f.params = vec![("prefix".into(), "home/claude/".into())];
    assert!(
        run(
            &f,
            &statement(r#"{"StringLike": {"s3:prefix": "home/claude/*"}}"#)
        )
        .is_allow()
    );
    assert!(
        run(
            &f,
            &statement(r#"{"StringLike": {"s3:prefix": "home/other/*"}}"#)
        )
        .is_deny()
    );
    assert!(run(&f, &statement(r#"{"Bool": {"aws:SecureTransport": true}}"#)).is_allow());
    assert!(
        run(
            &f,
            &statement(r#"{"Bool": {"aws:SecureTransport": "false"}}"#)
        )
        .is_deny()
    );
    assert!(
        run(
            &f,
            &statement(r#"{"StringEqualsIgnoreCase": {"sigward:AccountName": "PROD"}}"#)
        )
        .is_allow()
    );
    assert!(
        run(
            &f,
            &statement(r#"{"ArnLike": {"aws:ResourceAccount": "1111*"}}"#)
        )
        .is_allow()
    );
    // A missing key: positive operators fail, negated ones and …IfExists hold.
    let no_prefix = call("s3:ListBucket", &[]);
    assert!(
        run(
            &no_prefix,
            &statement(r#"{"StringLike": {"s3:prefix": "*"}}"#)
        )
        .is_deny()
    );
    assert!(
        run(
            &no_prefix,
            &statement(r#"{"StringNotLike": {"s3:prefix": "secret/*"}}"#)
        )
        .is_allow()
    );
    assert!(
        run(
            &no_prefix,
            &statement(r#"{"StringLikeIfExists": {"s3:prefix": "home/*"}}"#)
        )
        .is_allow()
    );
    // Condition keys are not case-sensitive.
    assert!(
        run(
            &f,
            &statement(r#"{"StringEquals": {"AWS:REQUESTEDREGION": "us-east-1"}}"#)
        )
        .is_allow()
    );
}

#[test]
fn unknown_condition_keys_fail_closed_and_are_reported() {
    let allow = r#"[{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*",
        "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}}]"#;
    let why = reason(run(&call("s3:GetObject", &[]), allow));
    assert!(
        why.contains("unknown condition operator IpAddress"),
        "{why}"
    );
    let allow = r#"[{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*",
        "Condition": {"StringEquals": {"aws:PrincipalTag/team": "x"}}}}]"#;
    let why = reason(run(&call("s3:GetObject", &[]), allow));
    assert!(
        why.contains("unknown condition key aws:PrincipalTag/team"),
        "{why}"
    );
    // A Deny with an unknown key denies rather than being skipped.
    let deny = r#"[{"Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Sid": "Guard", "Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"StringEquals": {"aws:SourceVpc": "vpc-1"}}}]}]"#;
    let why = reason(run(&call("s3:GetObject", &[]), deny));
    assert!(
        why.contains("explicitly denied by statement Guard"),
        "{why}"
    );
    assert!(why.contains("unknown condition key aws:SourceVpc"), "{why}");
}

#[test]
fn approve_is_sigwards_extension() {
    let documents = r#"[{"Statement": [
        {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"},
        {"Sid": "Stops", "Effect": "Approve", "Action": "ec2:StopInstances", "Resource": "*", "Approvers": ["sre"]},
        {"Effect": "Approve", "Action": "ec2:TerminateInstances", "Resource": "*"},
        {"Effect": "Deny", "Action": "ec2:TerminateInstances", "Resource": "arn:aws:ec2:*:*:instance/i-protected"}
    ]}]"#;
    assert!(run(&call("ec2:DescribeInstances", &[]), documents).is_allow());
    match run(
        &call(
            "ec2:StopInstances",
            &["arn:aws:ec2:us-east-1:111111111111:instance/i-1"],
        ),
        documents,
    ) {
        Verdict::Approve(approval) => {
            assert_eq!(approval.approvers, ["sre"]);
            assert_eq!(
                approval.prompt,
                "in account prod (111111111111): claude wants ec2:StopInstances on arn:aws:ec2:us-east-1:111111111111:instance/i-1 (statement Stops)"
            );
        }
        other => panic!("{other:?}"),
    }
    match run(
        &call(
            "ec2:TerminateInstances",
            &["arn:aws:ec2:us-east-1:111111111111:instance/i-1"],
        ),
        documents,
    ) {
        Verdict::Approve(approval) => assert_eq!(approval.approvers, ["oncall"], "the default"),
        other => panic!("{other:?}"),
    }
    // Deny beats approve.
    let protected = call(
        "ec2:TerminateInstances",
        &["arn:aws:ec2:us-east-1:111111111111:instance/i-protected"],
    );
    assert!(run(&protected, documents).is_deny());
}

#[test]
fn malformed_documents_deny_everything() {
    let f = call("s3:GetObject", &[]);
    for documents in [
        r#"[{"Statement": {"Effect": "Allow", "Resource": "*"}}]"#,
        r#"[{"Statement": {"Effect": "Allow", "Action": "*", "NotAction": "iam:*", "Resource": "*"}}]"#,
        r#"[{"Statement": {"Effect": "Allow", "Action": "*"}}]"#,
        r#"[{"Statement": {"Effect": "Permit", "Action": "*", "Resource": "*"}}]"#,
        r#"[{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Principal": "*"}}]"#,
        r#"{"Statement": []}"#,
    ] {
        assert!(run(&f, documents).is_deny(), "{documents}");
    }
    assert!(evaluate::<Iam>(&f, "{}").is_deny());
    assert!(evaluate::<Iam>(&f, r#"{"documents": [], "extra": 1}"#).is_deny());
}

/// "Allow everything except the vault": how security teams write resource-scoped denies.
const ALL_BUT_VAULT: &str = r#"[{"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "*", "Resource": "*"},
    {"Sid": "Vault", "Effect": "Deny", "Action": ["s3:GetObject*", "s3:DeleteObject*"], "Resource": "arn:aws:s3:::vault/*"},
    {"Sid": "VaultTable", "Effect": "Deny", "Action": "dynamodb:*", "Resource": "arn:aws:dynamodb:*:*:table/vault"}
]}]"#;

fn pairs(f: &mut Facet, pairs: &[(&str, Option<&str>)]) {
    f.authorizations = pairs
        .iter()
        .map(|(a, r)| sigward_policy_sdk::testing::authorization(a, *r))
        .collect();
}

#[test]
fn every_pair_of_a_call_is_judged() {
    // CopyObject from the vault into an open bucket: the PutObject is fine, the read is not.
    let mut copy = call("s3:PutObject", &[]);
    pairs(
        &mut copy,
        &[
            ("s3:PutObject", Some("arn:aws:s3:::open/copy")),
            ("s3:GetObject", Some("arn:aws:s3:::vault/secret")),
        ],
    );
    assert_eq!(
        reason(run(&copy, ALL_BUT_VAULT)),
        "s3:GetObject on arn:aws:s3:::vault/secret is explicitly denied by statement Vault"
    );
    // DeleteObjects naming one vault key among others.
    let mut delete = call("s3:DeleteObject", &[]);
    pairs(
        &mut delete,
        &[
            ("s3:DeleteObject", Some("arn:aws:s3:::open/a")),
            ("s3:DeleteObjectVersion", Some("arn:aws:s3:::vault/k")),
        ],
    );
    assert!(run(&delete, ALL_BUT_VAULT).is_deny());
    // TransactGetItems reading the vault table beside another.
    let mut transact = call("dynamodb:TransactGetItems", &[]);
    pairs(
        &mut transact,
        &[
            (
                "dynamodb:GetItem",
                Some("arn:aws:dynamodb:us-east-1:111111111111:table/open"),
            ),
            (
                "dynamodb:GetItem",
                Some("arn:aws:dynamodb:us-east-1:111111111111:table/vault"),
            ),
        ],
    );
    assert!(reason(run(&transact, ALL_BUT_VAULT)).contains("statement VaultTable"));
    // The same calls away from the vault are allowed.
    pairs(
        &mut copy,
        &[
            ("s3:PutObject", Some("arn:aws:s3:::open/copy")),
            ("s3:GetObject", Some("arn:aws:s3:::open/original")),
        ],
    );
    assert!(run(&copy, ALL_BUT_VAULT).is_allow());
    // An allow must cover every pair.
    pairs(
        &mut copy,
        &[
            ("s3:PutObject", Some("arn:aws:s3:::data/copy")),
            ("s3:GetObject", Some("arn:aws:s3:::elsewhere/x")),
        ],
    );
    let only_data = r#"[{"Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::data/*"}}]"#;
    assert_eq!(
        reason(run(&copy, only_data)),
        "no statement allows s3:GetObject on arn:aws:s3:::elsewhere/x"
    );
}

#[test]
fn a_resource_sigward_cannot_determine_fails_closed() {
    let mut unknown = call("s3:GetObject", &[]);
    pairs(&mut unknown, &[("s3:GetObject", None)]);
    // A Deny on a specific resource matches, and says why.
    let denied = reason(run(&unknown, ALL_BUT_VAULT));
    assert!(
        denied.starts_with(
            "s3:GetObject on a resource sigward cannot determine is explicitly denied by statement Vault"
        ),
        "{denied}"
    );
    assert!(denied.contains("sigward cannot determine the resource of s3:GetObject"));
    // So does a NotResource Deny.
    let not_resource = r#"[{"Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:*", "NotResource": "arn:aws:s3:::open/*"}]}]"#;
    assert!(run(&unknown, not_resource).is_deny());
    // An Allow needs "*".
    assert!(run(&unknown, READ_BUCKET).is_deny());
    let star = r#"[{"Statement": {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}}]"#;
    assert!(run(&unknown, star).is_allow());
    // A Deny for other actions does not match.
    let mut list = call("s3:ListAllMyBuckets", &[]);
    pairs(&mut list, &[("s3:ListAllMyBuckets", Some("*"))]);
    assert!(run(&list, ALL_BUT_VAULT).is_allow());
    // An action IAM authorizes on no resource: the vault deny does not match it.
    let mut list_vault_deny = call("s3:ListAllMyBuckets", &[]);
    pairs(&mut list_vault_deny, &[("s3:ListAllMyBuckets", Some("*"))]);
    let s3_vault = r#"[{"Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::vault/*"}]}]"#;
    assert!(run(&list_vault_deny, s3_vault).is_allow());
    // A facet without authorizations and without resources (a hand-written one, an old
    // record): its resource is unknown.
    let bare = call("s3:GetObject", &[]);
    assert!(run(&bare, ALL_BUT_VAULT).is_deny());
}

#[test]
fn an_unknown_condition_key_still_fails_closed() {
    let f = call("s3:GetObject", &["arn:aws:s3:::data/x"]);
    let deny_unknown = r#"[{"Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-1"}}}]}]"#;
    let denied = reason(run(&f, deny_unknown));
    assert!(
        denied.contains("unknown condition key aws:SourceVpce"),
        "{denied}"
    );
    let allow_unknown = r#"[{"Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-1"}}}]}]"#;
    assert!(run(&f, allow_unknown).is_deny());
}

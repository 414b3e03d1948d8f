//! `Facet::pairs` and `Facet::judge_each`: every pair of a call judged, combined as
//! sigward combines verdicts.

use sigward_policy_sdk::testing::{authorization, facet};
use sigward_policy_sdk::{Verdict, wildcard_match};

#[test]
fn pairs_fall_back_to_the_action_on_each_resource_or_an_unknown_one() {
    let mut f = facet("s3:GetObject");
    assert_eq!(f.pairs(), vec![authorization("s3:GetObject", None)]);
    f.resources = vec!["arn:aws:s3:::a/1".into(), "arn:aws:s3:::a/2".into()];
    assert_eq!(
        f.pairs(),
        vec![
            authorization("s3:GetObject", Some("arn:aws:s3:::a/1")),
            authorization("s3:GetObject", Some("arn:aws:s3:::a/2")),
        ]
    );
    f.authorizations = vec![authorization("s3:PutObject", Some("arn:aws:s3:::b/k"))];
    assert_eq!(f.pairs(), f.authorizations);
}

#[test]
fn judge_each_denies_if_any_pair_is_denied_and_merges_approvals() {
    let mut f = facet("s3:PutObject");
    f.authorizations = vec![
        authorization("s3:PutObject", Some("arn:aws:s3:::open/copy")),
        authorization("s3:GetObject", Some("arn:aws:s3:::vault/secret")),
        authorization("s3:GetObject", None),
    ];
    let vault = |pair: &sigward_policy_sdk::Authorization| match pair.resource.as_deref() {
        Some(r) if wildcard_match("arn:aws:s3:::vault/*", r) => {
            Verdict::deny(format!("{} on the vault", pair.action))
        }
        None => Verdict::approve(["oncall"], "unknown resource"),
        _ => Verdict::Allow,
    };
    assert_eq!(
        f.judge_each(vault),
        Verdict::deny("s3:GetObject on the vault")
    );
    f.authorizations.remove(1);
    assert_eq!(
        f.judge_each(vault),
        Verdict::approve(["oncall"], "unknown resource")
    );
    f.authorizations.pop();
    assert_eq!(f.judge_each(vault), Verdict::Allow);
}

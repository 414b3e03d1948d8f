//! `builtin:no-secrets`: deny the reads that return secret material — the calls a
//! read-only agent could otherwise use to walk off with credentials. Everything else is
//! allowed (pair it with `builtin:read-only`). No settings.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use sigward_policy_sdk::prelude::*;

/// IAM actions (IAM wildcards, compared ignoring case) whose response carries a secret.
pub const SECRET_READS: &[&str] = &[
    "secretsmanager:GetSecretValue",
    "kms:Decrypt",
    "ssm:GetParameter*",
    "lambda:GetFunction",
    "ec2:GetPasswordData",
    "*:GetAuthorizationToken",
    "sts:GetSessionToken",
    "cognito-identity:Get*",
];

pub struct NoSecrets;

impl Policy for NoSecrets {
    fn evaluate(facet: &Facet, _settings: &Settings) -> Verdict {
        let action = facet.iam_action_or_derived();
        if SECRET_READS
            .iter()
            .any(|pattern| wildcard_match_ignore_case(pattern, &action))
        {
            Verdict::deny(format!("{action} in account {}", facet.account_label()))
        } else {
            Verdict::Allow
        }
    }
}

export_policy!(NoSecrets);

#[cfg(test)]
mod tests {
    use super::*;
    use sigward_policy_sdk::testing::{evaluate, facet};

    /// Every entry of the list, by the concrete actions it stands for.
    const DENIED: &[&str] = &[
        "secretsmanager:GetSecretValue",
        "kms:Decrypt",
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParametersByPath",
        "ssm:GetParameterHistory",
        "lambda:GetFunction",
        "ec2:GetPasswordData",
        "ecr:GetAuthorizationToken",
        "codeartifact:GetAuthorizationToken",
        "ecr-public:GetAuthorizationToken",
        "sts:GetSessionToken",
        "cognito-identity:GetId",
        "cognito-identity:GetCredentialsForIdentity",
        "cognito-identity:GetOpenIdToken",
        "cognito-identity:GetOpenIdTokenForDeveloperIdentity",
    ];

    /// Neighbours of the list that read-only access legitimately needs.
    const ALLOWED: &[&str] = &[
        "secretsmanager:ListSecrets",
        "secretsmanager:DescribeSecret",
        "kms:Encrypt",
        "kms:DescribeKey",
        "ssm:DescribeParameters",
        "ssm:PutParameter",
        "lambda:GetFunctionConfiguration",
        "lambda:ListFunctions",
        "ec2:DescribeInstances",
        "sts:GetCallerIdentity",
        "sts:AssumeRole",
        "cognito-identity:ListIdentityPools",
        "cognito-idp:GetUser",
        "s3:GetObject",
        "dynamodb:GetItem",
    ];

    #[test]
    fn every_secret_read_is_denied_naming_the_action() {
        for action in DENIED {
            let verdict = evaluate::<NoSecrets>(&facet(action), "{}");
            assert_eq!(
                verdict,
                Verdict::deny(format!("{action} in account 111111111111")),
                "{action}"
            );
        }
    }

    #[test]
    fn everything_else_is_allowed() {
        for action in ALLOWED {
            assert_eq!(
                evaluate::<NoSecrets>(&facet(action), "{}"),
                Verdict::Allow,
                "{action}"
            );
        }
    }

    #[test]
    fn case_of_the_action_does_not_matter() {
        assert!(evaluate::<NoSecrets>(&facet("SecretsManager:getsecretvalue"), "{}").is_deny());
    }

    #[test]
    fn empty_iam_action_falls_back_to_service_and_action() {
        let mut f = facet("kms:Decrypt");
        f.iam_action.clear();
        assert!(evaluate::<NoSecrets>(&f, "{}").is_deny());
    }

    #[test]
    fn reason_names_the_account() {
        let mut f = facet("secretsmanager:GetSecretValue");
        f.account_name = Some("prod".into());
        assert_eq!(
            evaluate::<NoSecrets>(&f, "{}"),
            Verdict::deny("secretsmanager:GetSecretValue in account prod (111111111111)")
        );
    }
}

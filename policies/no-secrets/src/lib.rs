//! `builtin:no-secrets`: deny the calls that hand secret material to the caller — the
//! calls a read-only agent could otherwise use to walk off with credentials. Everything
//! else is allowed (pair it with `builtin:read-only`). No settings.
//!
//! The list is reviewed by hand; each entry names the AWS documentation that says the
//! call returns a secret (a credential, a password, a key, a token, decrypted data). Some
//! entries apply only when a parameter asks for the secret (`HidePassword`,
//! `includeValue`, `Attribute=userData`).

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use sigward_policy_sdk::prelude::*;

/// When an entry applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// Only when the parameter has this value (ignoring case).
    ParamIs(&'static str, &'static str),
    /// Unless the parameter has this value (ignoring case).
    Unless(&'static str, &'static str),
}

/// One call that returns secret material.
#[derive(Debug, Clone, Copy)]
pub struct SecretRead {
    /// An IAM action or `<signing service>:<operation>` (IAM wildcards, ignoring case):
    /// API Gateway's IAM actions are HTTP verbs, so its entries name the operation.
    pub action: &'static str,
    pub when: When,
    /// The AWS documentation that says what the call returns.
    pub source: &'static str,
}

const fn always(action: &'static str, source: &'static str) -> SecretRead {
    SecretRead {
        action,
        when: When::Always,
        source,
    }
}

/// Calls whose response (or whose effect, for the key and password creators) puts a
/// secret in the caller's hands.
pub const SECRET_READS: &[SecretRead] = &[
    always(
        "secretsmanager:GetSecretValue",
        "https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_GetSecretValue.html",
    ),
    always(
        "secretsmanager:BatchGetSecretValue",
        "https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_BatchGetSecretValue.html",
    ),
    always(
        "kms:Decrypt",
        "https://docs.aws.amazon.com/kms/latest/APIReference/API_Decrypt.html",
    ),
    always(
        "ssm:GetParameter*",
        "https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetParameter.html (SecureString values, WithDecryption)",
    ),
    always(
        "lambda:GetFunction",
        "https://docs.aws.amazon.com/lambda/latest/api/API_GetFunction.html (a presigned code URL and the environment)",
    ),
    always(
        "ec2:GetPasswordData",
        "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetPasswordData.html",
    ),
    SecretRead {
        action: "ec2:DescribeInstanceAttribute",
        when: When::ParamIs("Attribute", "userData"),
        source: "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstanceAttribute.html (user data often carries credentials)",
    },
    always(
        "*:GetAuthorizationToken",
        "https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_GetAuthorizationToken.html, https://docs.aws.amazon.com/codeartifact/latest/APIReference/API_GetAuthorizationToken.html",
    ),
    always(
        "sts:GetSessionToken",
        "https://docs.aws.amazon.com/STS/latest/APIReference/API_GetSessionToken.html",
    ),
    always(
        "sts:GetFederationToken",
        "https://docs.aws.amazon.com/STS/latest/APIReference/API_GetFederationToken.html",
    ),
    always(
        "sts:AssumeRole*",
        "https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html (and AssumeRoleWithSAML, AssumeRoleWithWebIdentity, AssumeRoot)",
    ),
    always(
        "sso:GetRoleCredentials",
        "https://docs.aws.amazon.com/singlesignon/latest/PortalAPIReference/API_GetRoleCredentials.html",
    ),
    always(
        "cognito-identity:Get*",
        "https://docs.aws.amazon.com/cognitoidentity/latest/APIReference/API_GetCredentialsForIdentity.html (and GetOpenIdToken*)",
    ),
    always(
        "cognito-idp:DescribeUserPoolClient",
        "https://docs.aws.amazon.com/cognito-user-identity-pools/latest/APIReference/API_DescribeUserPoolClient.html (ClientSecret)",
    ),
    always(
        "iam:CreateAccessKey",
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateAccessKey.html (the secret access key)",
    ),
    always(
        "iam:CreateLoginProfile",
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_CreateLoginProfile.html (sets a console password the caller chose)",
    ),
    always(
        "iam:UpdateLoginProfile",
        "https://docs.aws.amazon.com/IAM/latest/APIReference/API_UpdateLoginProfile.html (sets a console password the caller chose)",
    ),
    always(
        "redshift:GetClusterCredentials",
        "https://docs.aws.amazon.com/redshift/latest/APIReference/API_GetClusterCredentials.html",
    ),
    always(
        "redshift:GetClusterCredentialsWithIAM",
        "https://docs.aws.amazon.com/redshift/latest/APIReference/API_GetClusterCredentialsWithIAM.html",
    ),
    always(
        "redshift-serverless:GetCredentials",
        "https://docs.aws.amazon.com/redshift-serverless/latest/APIReference/API_GetCredentials.html",
    ),
    always(
        "lightsail:GetRelationalDatabaseMasterUserPassword",
        "https://docs.aws.amazon.com/lightsail/2016-11-28/api-reference/API_GetRelationalDatabaseMasterUserPassword.html",
    ),
    always(
        "lightsail:GetInstanceAccessDetails",
        "https://docs.aws.amazon.com/lightsail/2016-11-28/api-reference/API_GetInstanceAccessDetails.html (a temporary SSH key or password)",
    ),
    always(
        "lightsail:DownloadDefaultKeyPair",
        "https://docs.aws.amazon.com/lightsail/2016-11-28/api-reference/API_DownloadDefaultKeyPair.html (the private key)",
    ),
    SecretRead {
        action: "glue:GetConnection",
        when: When::Unless("HidePassword", "true"),
        source: "https://docs.aws.amazon.com/glue/latest/webapi/API_GetConnection.html (the password unless HidePassword)",
    },
    SecretRead {
        action: "glue:GetConnections",
        when: When::Unless("HidePassword", "true"),
        source: "https://docs.aws.amazon.com/glue/latest/webapi/API_GetConnections.html (passwords unless HidePassword)",
    },
    SecretRead {
        action: "apigateway:GetApiKey",
        when: When::ParamIs("includeValue", "true"),
        source: "https://docs.aws.amazon.com/apigateway/latest/api/API_GetApiKey.html (the key's value with includeValue)",
    },
    SecretRead {
        action: "apigateway:GetApiKeys",
        when: When::ParamIs("includeValues", "true"),
        source: "https://docs.aws.amazon.com/apigateway/latest/api/API_GetApiKeys.html (the keys' values with includeValues)",
    },
];

pub struct NoSecrets;

impl Policy for NoSecrets {
    fn evaluate(facet: &Facet, _settings: &Settings) -> Verdict {
        let action = facet.iam_action_or_derived();
        let operation = alloc::format!("{}:{}", facet.service, facet.operation());
        let asks = |name: &str, value: &str| {
            facet
                .param(name)
                .is_some_and(|v| v.eq_ignore_ascii_case(value))
        };
        // Every action the call needs is looked up, not only its own; the reason names
        // the one that reads a secret.
        let pairs = facet.pairs();
        let candidates = [action.as_str(), operation.as_str()]
            .into_iter()
            .chain(pairs.iter().map(|pair| pair.action.as_str()));
        let mut secret = None;
        for candidate in candidates {
            let found = SECRET_READS.iter().any(|entry| {
                wildcard_match_ignore_case(entry.action, candidate)
                    && match entry.when {
                        When::Always => true,
                        When::ParamIs(name, value) => asks(name, value),
                        When::Unless(name, value) => !asks(name, value),
                    }
            });
            if found {
                // An operation named in the list (API Gateway's) is shown as the IAM action.
                secret = Some(if candidate == operation {
                    &action
                } else {
                    candidate
                });
                break;
            }
        }
        match secret {
            Some(secret) => Verdict::deny(alloc::format!(
                "{secret} in account {}",
                facet.account_label()
            )),
            None => Verdict::Allow,
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
        "secretsmanager:BatchGetSecretValue",
        "sts:AssumeRole",
        "sts:AssumeRoleWithWebIdentity",
        "sts:GetFederationToken",
        "sso:GetRoleCredentials",
        "cognito-idp:DescribeUserPoolClient",
        "iam:CreateAccessKey",
        "iam:CreateLoginProfile",
        "iam:UpdateLoginProfile",
        "redshift:GetClusterCredentials",
        "redshift:GetClusterCredentialsWithIAM",
        "redshift-serverless:GetCredentials",
        "lightsail:GetRelationalDatabaseMasterUserPassword",
        "lightsail:GetInstanceAccessDetails",
        "lightsail:DownloadDefaultKeyPair",
        "glue:GetConnection",
        "glue:GetConnections",
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
        "cognito-identity:ListIdentityPools",
        "cognito-idp:DescribeUserPool",
        "iam:ListAccessKeys",
        "iam:GetLoginProfile",
        "redshift:DescribeClusters",
        "lightsail:GetInstances",
        "glue:GetTables",
        "ec2:DescribeInstanceAttribute",
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
    fn some_calls_are_secret_only_when_they_ask_for_the_secret() {
        let with = |action: &str, params: &[(&str, &str)]| {
            let mut f = facet(action);
            f.params = params
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect();
            evaluate::<NoSecrets>(&f, "{}")
        };
        assert!(with("glue:GetConnection", &[("Name", "db")]).is_deny());
        assert!(with("glue:GetConnection", &[("HidePassword", "false")]).is_deny());
        assert_eq!(
            with("glue:GetConnection", &[("HidePassword", "true")]),
            Verdict::Allow
        );
        assert!(
            with(
                "ec2:DescribeInstanceAttribute",
                &[("Attribute", "userData")]
            )
            .is_deny()
        );
        assert_eq!(
            with(
                "ec2:DescribeInstanceAttribute",
                &[("Attribute", "instanceType")]
            ),
            Verdict::Allow
        );
        // API Gateway's IAM action is an HTTP verb: the entry names the operation.
        let mut key = facet("apigateway:GET");
        key.action = "GetApiKey".into();
        assert_eq!(evaluate::<NoSecrets>(&key, "{}"), Verdict::Allow);
        key.params = vec![("includeValue".into(), "true".into())];
        assert!(evaluate::<NoSecrets>(&key, "{}").is_deny());
        let mut keys = facet("apigateway:GET");
        keys.action = "GetApiKeys".into();
        keys.params = vec![("includeValues".into(), "True".into())];
        assert!(evaluate::<NoSecrets>(&keys, "{}").is_deny());
    }

    #[test]
    fn every_entry_names_its_source() {
        for entry in SECRET_READS {
            assert!(
                entry.source.starts_with("https://docs.aws.amazon.com/"),
                "{}: {}",
                entry.action,
                entry.source
            );
        }
    }

    #[test]
    fn a_secret_read_among_a_calls_pairs_is_denied() {
        // A made-up call whose own action is harmless but one of whose pairs reads a secret.
        let mut f = facet("dynamodb:PartiQLSelect");
        f.authorizations = vec![
            sigward_policy_sdk::testing::authorization("dynamodb:PartiQLSelect", None),
            sigward_policy_sdk::testing::authorization("secretsmanager:GetSecretValue", None),
        ];
        assert!(evaluate::<NoSecrets>(&f, "{}").is_deny());
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

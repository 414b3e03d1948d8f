//! `sigward policy generate --from AUDIT_LOG`: a least-privilege IAM policy from what
//! agents actually did — every forwarded call in the audit log, actions grouped per
//! service, resources where the facet knew them and `*` otherwise (as iamlive and
//! iam-agent-proxy do). `--format sigward` prints the same as `builtin:iam` settings.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An IAM policy document.
    Iam,
    /// A `policies` entry for `builtin:iam` (TOML), to paste into an endpoint.
    Sigward,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The audit log.
    #[arg(long)]
    from: PathBuf,
    /// Only this agent's calls.
    #[arg(long)]
    agent: Option<String>,
    /// Only calls in this account (12-digit id or its name).
    #[arg(long)]
    account: Option<String>,
    #[arg(long, value_enum, default_value = "iam")]
    format: Format,
}

/// The IAM policy document allowing exactly the forwarded calls in `lines`.
pub fn generate(
    lines: impl Iterator<Item = String>,
    agent: Option<&str>,
    account: Option<&str>,
) -> anyhow::Result<(Value, usize)> {
    // action → resources (None: some call of it had no resources we could name).
    let mut actions: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    let mut calls = 0;
    for (number, line) in lines.enumerate() {
        let record: Value = serde_json::from_str(&line)
            .with_context(|| format!("line {} is not JSON", number + 1))?;
        let facet = &record["facet"];
        // Forwarded calls only: they reached AWS.
        if facet.is_null() || record["upstream_status"].is_null() {
            continue;
        }
        if agent.is_some_and(|a| facet["principal"].as_str() != Some(a)) {
            continue;
        }
        if account.is_some_and(|a| {
            facet["account"].as_str() != Some(a) && facet["account_name"].as_str() != Some(a)
        }) {
            continue;
        }
        let Some(action) = facet["iam_action"].as_str().filter(|a| !a.is_empty()) else {
            continue;
        };
        calls += 1;
        // Every (IAM action, resource) pair the call needed (CopyObject: the source's
        // s3:GetObject too); a facet recorded before pairs existed: its action on its
        // resources. A resource that is "*" or unknown makes the action's Resource "*".
        let strings = |value: &Value| -> Vec<String> {
            value
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let pairs: Vec<(String, Option<String>)> = match facet["authorizations"].as_array() {
            Some(pairs) if !pairs.is_empty() => pairs
                .iter()
                .filter_map(|p| {
                    let action = p["action"].as_str().filter(|a| !a.is_empty())?;
                    let resource = p["resource"].as_str().filter(|r| r.starts_with("arn:"));
                    Some((action.to_string(), resource.map(String::from)))
                })
                .collect(),
            _ => {
                let resources = strings(&facet["resources"]);
                if resources.is_empty() {
                    vec![(action.to_string(), None)]
                } else {
                    resources
                        .into_iter()
                        .map(|r| (action.to_string(), Some(r)))
                        .collect()
                }
            }
        };
        for (action, resource) in pairs {
            let entry = actions
                .entry(action)
                .or_insert_with(|| Some(BTreeSet::new()));
            match (entry.as_mut(), resource) {
                (Some(_), None) => *entry = None,
                (Some(known), Some(resource)) => {
                    known.insert(resource);
                }
                (None, _) => {}
            }
        }
    }
    // Per service, the actions that share one resource list share a statement.
    let mut groups: BTreeMap<(String, Vec<String>), Vec<String>> = BTreeMap::new();
    for (action, resources) in actions {
        let service = action.split(':').next().unwrap_or_default().to_string();
        let resources = match resources {
            Some(set) => set.into_iter().collect(),
            None => vec!["*".to_string()],
        };
        groups.entry((service, resources)).or_default().push(action);
    }
    let mut numbers: BTreeMap<String, usize> = BTreeMap::new();
    let statements: Vec<Value> = groups
        .into_iter()
        .map(|((service, resources), actions)| {
            let n = numbers.entry(service.clone()).or_default();
            *n += 1;
            let sid: String = service
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                + &n.to_string();
            json!({
                "Sid": format!("Observed{sid}"),
                "Effect": "Allow",
                "Action": actions,
                "Resource": resources,
            })
        })
        .collect();
    Ok((
        json!({ "Version": "2012-10-17", "Statement": statements }),
        calls,
    ))
}

/// A JSON value as an inline TOML value.
fn toml_inline(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} = {}", Value::String(k.clone()), toml_inline(v)))
                .collect();
            format!("{{ {} }}", fields.join(", "))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_inline).collect::<Vec<_>>().join(", ")
        ),
        // JSON strings, numbers and booleans are valid TOML as they are.
        other => other.to_string(),
    }
}

pub fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::open(&args.from)
        .with_context(|| format!("reading {}", args.from.display()))?;
    let lines = std::io::BufReader::new(file).lines().map_while(Result::ok);
    let (document, calls) = generate(lines, args.agent.as_deref(), args.account.as_deref())?;
    let mut out = std::io::stdout();
    match args.format {
        Format::Iam => writeln!(out, "{}", serde_json::to_string_pretty(&document)?)?,
        Format::Sigward => writeln!(
            out,
            "{{ module = \"builtin:iam\", settings = {} }}",
            toml_inline(&json!({ "documents": [document] }))
        )?,
    }
    eprintln!(
        "sigward policy generate: {calls} forwarded calls in {}",
        args.from.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_group_actions_by_service_and_resources() {
        let record = |agent: &str, action: &str, resources: &[&str], forwarded: bool| {
            json!({
                "facet": { "principal": agent, "iam_action": action, "account": "111111111111",
                           "account_name": "prod", "resources": resources },
                "upstream_status": if forwarded { json!(200) } else { Value::Null },
            })
            .to_string()
        };
        let lines = vec![
            record("a", "s3:GetObject", &["arn:aws:s3:::b/k1"], true),
            record("a", "s3:GetObject", &["arn:aws:s3:::b/k2"], true),
            record("a", "s3:ListBucket", &["arn:aws:s3:::b"], true),
            record("a", "sts:GetCallerIdentity", &[], true),
            record("a", "ec2:TerminateInstances", &["arn:aws:ec2:x"], false),
            record("b", "dynamodb:PutItem", &["arn:aws:dynamodb:t"], true),
        ];
        let (document, calls) =
            generate(lines.clone().into_iter(), Some("a"), None).expect("generate");
        assert_eq!(calls, 4);
        assert_eq!(
            document["Statement"],
            json!([
                {"Sid": "Observeds31", "Effect": "Allow", "Action": ["s3:ListBucket"],
                 "Resource": ["arn:aws:s3:::b"]},
                {"Sid": "Observeds32", "Effect": "Allow", "Action": ["s3:GetObject"],
                 "Resource": ["arn:aws:s3:::b/k1", "arn:aws:s3:::b/k2"]},
                {"Sid": "Observedsts1", "Effect": "Allow", "Action": ["sts:GetCallerIdentity"],
                 "Resource": ["*"]},
            ])
        );
        let (_, calls) = generate(lines.into_iter(), None, Some("222222222222")).expect("generate");
        assert_eq!(calls, 0);
        assert_eq!(
            toml_inline(&json!({"a": ["x", 1], "b": {"c": true}})),
            r#"{ "a" = ["x", 1], "b" = { "c" = true } }"#
        );
    }

    #[test]
    fn every_pair_of_a_call_is_allowed_by_the_generated_document() {
        let copy = json!({
            "facet": { "principal": "a", "iam_action": "s3:PutObject", "account": "111111111111",
                       "resources": ["arn:aws:s3:::dst/k", "arn:aws:s3:::src/k"],
                       "authorizations": [
                           {"action": "s3:PutObject", "resource": "arn:aws:s3:::dst/k"},
                           {"action": "s3:GetObject", "resource": "arn:aws:s3:::src/k"}] },
            "upstream_status": 200,
        })
        .to_string();
        let list = json!({
            "facet": { "principal": "a", "iam_action": "s3:ListAllMyBuckets", "account": "111111111111",
                       "authorizations": [{"action": "s3:ListAllMyBuckets", "resource": "*"}] },
            "upstream_status": 200,
        })
        .to_string();
        let (document, calls) =
            generate(vec![copy, list].into_iter(), None, None).expect("generate");
        assert_eq!(calls, 2);
        assert_eq!(
            document["Statement"],
            json!([
                {"Sid": "Observeds31", "Effect": "Allow", "Action": ["s3:ListAllMyBuckets"],
                 "Resource": ["*"]},
                {"Sid": "Observeds32", "Effect": "Allow", "Action": ["s3:PutObject"],
                 "Resource": ["arn:aws:s3:::dst/k"]},
                {"Sid": "Observeds33", "Effect": "Allow", "Action": ["s3:GetObject"],
                 "Resource": ["arn:aws:s3:::src/k"]},
            ])
        );
    }
}

//! The whole-model check: every operation of every service in AWS's models, serialized
//! by botocore itself (`tools/model-requests`, run by scripts/test), must resolve to the
//! same service and operation. Exceptions are listed, each with its reason, in
//! tests/model-exceptions.txt; anything else that fails is a test failure.
//!
//! It also counts, per service, the operations whose call needs more than one
//! (IAM action, resource) pair and those with a resource sigward cannot derive, and holds
//! the second number to tests/model-authorizations.txt: it may only go down.
//! `SIGWARD_UPDATE_MODEL_COUNTS=1` rewrites the file.

use std::collections::{BTreeMap, BTreeSet};

use data_encoding::BASE64;
use sigward::aws::account::AccountNames;
use sigward::aws::{UnderstandError, understand_bytes};

#[test]
fn every_operation_of_every_service_resolves() {
    let Some(path) = std::env::var_os("SIGWARD_MODEL_REQUESTS") else {
        assert!(
            std::env::var_os("SIGWARD_REQUIRE_MODEL_CHECK").is_none(),
            "SIGWARD_MODEL_REQUESTS is not set: run the suite with scripts/test"
        );
        eprintln!("model check skipped: set SIGWARD_MODEL_REQUESTS (scripts/test does)");
        return;
    };
    let text = std::fs::read_to_string(&path).expect("read the model requests");
    let exceptions_text = include_str!("../../../tests/model-exceptions.txt");
    let exceptions: BTreeMap<(String, String), String> = exceptions_text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            Some((
                (parts.next()?.to_string(), parts.next()?.to_string()),
                parts.next()?.to_string(),
            ))
        })
        .collect();

    let names = AccountNames::default();
    let (mut total, mut resolved, mut skipped) = (0usize, 0usize, 0usize);
    // Per service: operations, those with more than one pair, those with an unknown resource.
    let mut counts: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut values_refused: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut excused = BTreeSet::new();
    for line in text.lines() {
        let case: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let service = case["service"].as_str().unwrap_or_default().to_string();
        let operation = case["operation"].as_str().unwrap_or_default().to_string();
        if case.get("skipped").is_some() {
            skipped += 1;
            continue;
        }
        total += 1;
        let raw = BASE64
            .decode(case["request"].as_str().unwrap_or_default().as_bytes())
            .expect("base64");
        let expected_service = match scope_service(&raw) {
            s if s.is_empty() => case["signing"].as_str().unwrap_or_default().to_string(),
            s => s,
        };
        let outcome = match understand_bytes(&raw, &names) {
            // The scope the request was signed with is the truth for the service.
            Ok(facet) if facet.action == operation && facet.service == expected_service => {
                let count = counts.entry(service.clone()).or_default();
                count[0] += 1;
                count[1] += usize::from(facet.authorizations.len() > 1);
                count[2] += usize::from(facet.authorizations.iter().any(|a| a.resource.is_none()));
                Ok(())
            }
            // Resolved, and then refused for botocore's placeholder values ("aaa" is no
            // copy source, no PartiQL statement): what AWS would do too.
            Err(UnderstandError::Unjudgeable {
                operation: judged, ..
            }) if judged.rsplit_once(':').map(|(_, op)| op) == Some(operation.as_str()) => {
                values_refused.push(format!("{service} {operation}"));
                Ok(())
            }
            Ok(facet) => Err(format!("resolved as {}:{}", facet.service, facet.action)),
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(()) => resolved += 1,
            Err(why) => {
                let key = (service.clone(), operation.clone());
                if exceptions.contains_key(&key)
                    || exceptions.contains_key(&(service.clone(), "*".to_string()))
                {
                    excused.insert(key);
                } else {
                    failures.push(format!("{service} {operation}: {why}"));
                }
            }
        }
    }
    eprintln!(
        "model check: {resolved} of {total} operations resolved ({:.2}%), {} listed exceptions, {skipped} not buildable by botocore; {} refused for botocore's placeholder values",
        100.0 * resolved as f64 / total.max(1) as f64,
        excused.len(),
        values_refused.len()
    );
    // Placeholder values are realistic where sigward reads them (tools/model-requests):
    // only a transaction entry with no member set is left to refuse.
    assert!(
        values_refused.len() <= 2,
        "refused for their values: {values_refused:?}"
    );
    check_counts(&counts);
    assert!(
        total > 15_000 || std::env::var_os("SIGWARD_MODEL_SUBSET").is_some(),
        "only {total} operations checked"
    );
    assert!(
        failures.is_empty(),
        "{} operations misresolved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The service in the request's own credential scope, or the model's signing name if
/// the request is unsigned.
fn scope_service(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let credential = text
        .split("Credential=")
        .nth(1)
        .or_else(|| text.split("X-Amz-Credential=").nth(1))
        .unwrap_or_default();
    let decoded = credential.replace("%2F", "/");
    decoded.split('/').nth(3).unwrap_or_default().to_string()
}

/// Hold the unknown-resource counts to tests/model-authorizations.txt (or rewrite it).
fn check_counts(counts: &BTreeMap<String, [usize; 3]>) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/model-authorizations.txt"
    );
    let sum = |i: usize| counts.values().map(|c| c[i]).sum::<usize>();
    let (ops, multi, unknown) = (sum(0), sum(1), sum(2));
    eprintln!(
        "model check: {multi} of {ops} understood operations need more than one (IAM action, resource) pair; {unknown} have a resource sigward cannot derive"
    );
    let mut text = format!(
        "# Per service: operations understood, those needing more than one (IAM action, resource)\n\
         # pair, and those with a resource sigward cannot derive (policies fail closed on them).\n\
         # Written by the model check (SIGWARD_UPDATE_MODEL_COUNTS=1); the last column may only\n\
         # go down. Total: {ops} {multi} {unknown}\n"
    );
    for (service, [o, m, u]) in counts {
        text.push_str(&format!("{service} {o} {m} {u}\n"));
    }
    if std::env::var_os("SIGWARD_UPDATE_MODEL_COUNTS").is_some() {
        std::fs::write(path, text).expect("write tests/model-authorizations.txt");
        return;
    }
    let recorded: BTreeMap<String, usize> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            Some((parts.first()?.to_string(), parts.get(3)?.parse().ok()?))
        })
        .collect();
    if std::env::var_os("SIGWARD_MODEL_SUBSET").is_some() {
        return;
    }
    let worse: Vec<String> = counts
        .iter()
        .filter_map(|(service, c)| {
            let before = recorded.get(service).copied().unwrap_or(0);
            (c[2] > before).then(|| format!("{service}: {before} → {}", c[2]))
        })
        .collect();
    assert!(
        worse.is_empty(),
        "more operations with a resource sigward cannot derive than tests/model-authorizations.txt records:\n{}",
        worse.join("\n")
    );
    let better = recorded
        .iter()
        .filter(|(s, n)| counts.get(*s).is_some_and(|c| c[2] < **n))
        .count();
    if better > 0 {
        eprintln!(
            "model check: {better} services have fewer unknown resources than recorded: rerun with SIGWARD_UPDATE_MODEL_COUNTS=1"
        );
    }
}

//! The whole-model check: every operation of every service in AWS's models, serialized
//! by botocore itself (`tools/model-requests`, run by scripts/test), must resolve to the
//! same service and operation. Exceptions are listed, each with its reason, in
//! tests/model-exceptions.txt; anything else that fails is a test failure.

use std::collections::{BTreeMap, BTreeSet};

use data_encoding::BASE64;
use sigward::aws::account::AccountNames;
use sigward::aws::understand_bytes;

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
            Ok(facet) if facet.action == operation && facet.service == expected_service => Ok(()),
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
        "model check: {resolved} of {total} operations resolved ({:.2}%), {} listed exceptions, {skipped} not buildable by botocore",
        100.0 * resolved as f64 / total.max(1) as f64,
        excused.len()
    );
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

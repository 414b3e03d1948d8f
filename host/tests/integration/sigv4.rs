//! Verifying agents' SigV4 signatures against requests really signed by the aws CLI and
//! boto3 (tests/corpus, signed with the capture secret): every one verifies at its own
//! signing time; a wrong secret, a changed byte that was signed, or a clock outside the
//! 15-minute window are refused with the error code AWS would give.

use std::time::Duration;

use sigward::aws::request::Request;
use sigward::aws::scope::Scope;
use sigward::aws::sigv4::{VerifyError, parse_amz_date, verify};

const SECRET: &str = "capture-secret-not-real";

fn signed_corpus() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "http"))
        .map(|p| {
            (
                p.file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_string(),
                std::fs::read(&p).expect("read"),
            )
        })
        .filter(|(name, _)| !name.contains("unsigned"))
        .collect();
    out.sort();
    out
}

fn signed_at(request: &Request<'_>) -> std::time::SystemTime {
    let date = request
        .header("x-amz-date")
        .or_else(|| request.query_param("X-Amz-Date"))
        .expect("a date");
    parse_amz_date(date).expect("valid date")
}

fn check(bytes: &[u8], secret: &str, skew: Duration) -> Result<(), VerifyError> {
    let request = Request::parse(bytes).expect("parse");
    let scope = Scope::of(&request).expect("scope").expect("signed");
    verify(&request, &scope, secret, signed_at(&request) + skew)
}

#[test]
fn every_real_client_signature_verifies() {
    let corpus = signed_corpus();
    assert!(corpus.len() >= 80);
    let failures: Vec<String> = corpus
        .iter()
        .filter_map(|(name, bytes)| {
            check(bytes, SECRET, Duration::ZERO)
                .err()
                .map(|e| format!("{name}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} did not verify:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

#[test]
fn a_wrong_secret_is_a_mismatch() {
    for (name, bytes) in signed_corpus() {
        assert_eq!(
            check(&bytes, "wrong-secret", Duration::ZERO),
            Err(VerifyError::Mismatch),
            "{name}"
        );
    }
}

#[test]
fn tampering_with_what_was_signed_is_a_mismatch() {
    let tamper = |name: &str, from: &str, to: &str| {
        let (_, bytes) = signed_corpus()
            .into_iter()
            .find(|(n, _)| n == name)
            .expect("case");
        let text = String::from_utf8_lossy(&bytes).replacen(from, to, 1);
        assert_ne!(
            text.as_bytes(),
            bytes.as_slice(),
            "{name}: nothing replaced"
        );
        assert_eq!(
            check(text.as_bytes(), SECRET, Duration::ZERO),
            Err(VerifyError::Mismatch),
            "{name}: {from} → {to}"
        );
    };
    tamper("boto3-s3-get-object", "/data/file.txt", "/data/other.txt");
    tamper("boto3-s3-list-objects-v2", "prefix=data", "prefix=secret");
    tamper(
        "cli-dynamodb-put-item",
        "DynamoDB_20120810.PutItem",
        "DynamoDB_20120810.DeleteItem",
    );
    tamper("cli-dynamodb-put-item", "orders", "payroll");
    tamper("boto3-sts-assume-role", "role%2Fdeploy", "role%2Fadmin");
    tamper(
        "boto3-s3-presigned-get",
        "shared/report.pdf",
        "shared/payroll.pdf",
    );
    tamper(
        "boto3-sqs-create-queue",
        "Host: sqs.us-east-1",
        "Host: sqs.eu-west-1",
    );
}

#[test]
fn clock_skew_and_expiry() {
    let (_, bytes) = signed_corpus()
        .into_iter()
        .find(|(n, _)| n == "cli-sts-get-caller-identity")
        .expect("case");
    assert_eq!(check(&bytes, SECRET, Duration::from_secs(14 * 60)), Ok(()));
    assert!(matches!(
        check(&bytes, SECRET, Duration::from_secs(16 * 60)),
        Err(VerifyError::Skewed { .. })
    ));
    let (_, presigned) = signed_corpus()
        .into_iter()
        .find(|(n, _)| n == "boto3-s3-presigned-get")
        .expect("case");
    assert_eq!(
        check(&presigned, SECRET, Duration::from_secs(599)),
        Ok(()),
        "valid until it expires (600 s)"
    );
    assert!(matches!(
        check(&presigned, SECRET, Duration::from_secs(601)),
        Err(VerifyError::Expired(_))
    ));
    assert_eq!(VerifyError::Mismatch.code(), "SignatureDoesNotMatch");
}

/// Re-sign every real request with assumed-role credentials the way the proxy will
/// (agent's signature headers removed, new ones added) and check the result with the
/// verifier — which the tests above prove agrees with the aws CLI's and boto3's signing
/// on every captured request. The agent's signature must not survive.
#[test]
fn resigned_requests_verify_with_the_new_credentials_only() {
    use sigward::aws::sigv4::{AGENT_SIGNATURE_HEADERS, Outgoing, SigningCredentials, resign};

    let role = SigningCredentials {
        access_key_id: "ASIAROLEROLEROLEROLE".into(),
        secret_access_key: "role-secret".into(),
        session_token: Some("role-session-token".into()),
    };
    for (name, bytes) in signed_corpus()
        .into_iter()
        .filter(|(n, _)| !n.contains("presigned"))
    {
        let request = Request::parse(&bytes).expect("parse");
        let scope = Scope::of(&request).expect("scope").expect("signed");
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .filter(|(n, _)| {
                !AGENT_SIGNATURE_HEADERS
                    .iter()
                    .any(|h| n.eq_ignore_ascii_case(h))
            })
            .map(|(n, v)| (*n, std::str::from_utf8(v).expect("utf-8 header")))
            .collect();
        let uri = sigward::aws::sigv4::signed_uri(&request, false);
        let now = signed_at(&request) + Duration::from_secs(5);
        let outgoing = Outgoing {
            method: request.method,
            uri: &uri,
            headers: &headers,
            payload_hash: request.header("x-amz-content-sha256"),
            body: &request.body,
            presign: None,
        };
        let added = resign(&outgoing, scope.service, scope.region, &role, now)
            .unwrap_or_else(|e| panic!("{name}: {e}"));

        // The outgoing request, as it would go on the wire.
        let head_end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head")
            + 4;
        let mut out = format!("{} {uri} HTTP/1.1\r\n", request.method);
        for (n, v) in headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .chain(added.headers.clone())
        {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        out.extend_from_slice(&bytes[head_end..]);

        let resigned = Request::parse(&out).expect("parse resigned");
        let new_scope = Scope::of(&resigned).expect("scope").expect("signed");
        assert_eq!(new_scope.access_key_id, "ASIAROLEROLEROLEROLE", "{name}");
        assert_eq!(
            resigned.header("x-amz-security-token"),
            Some("role-session-token"),
            "{name}"
        );
        assert_eq!(
            verify(&resigned, &new_scope, "role-secret", now),
            Ok(()),
            "{name}: {added:?}"
        );
        assert_eq!(
            verify(&resigned, &new_scope, SECRET, now),
            Err(VerifyError::Mismatch),
            "{name}"
        );
    }
}

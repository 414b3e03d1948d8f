//! The aws facet of real requests captured from the aws CLI and boto3
//! (`tools/capture-requests` → `tests/corpus/`), against expectations written from AWS's
//! documentation; and `sigward facet` as a user runs it.

use std::path::PathBuf;
use std::process::Command;

use sigward::aws::account::AccountNames;
use sigward::aws::understand_bytes;

fn corpus() -> Vec<(String, PathBuf)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
    let mut cases: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .expect("tests/corpus exists")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path
                .file_name()?
                .to_str()?
                .strip_suffix(".http")?
                .to_string();
            Some((name, path))
        })
        .collect();
    cases.sort();
    cases
}

#[test]
fn corpus_of_real_client_requests() {
    let names = AccountNames::default();
    let cases = corpus();
    assert!(cases.len() >= 60, "only {} captured requests", cases.len());
    let mut failures = Vec::new();
    let (mut services, mut actions) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    for (name, path) in &cases {
        let bytes = std::fs::read(path).expect("read request");
        let expect: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(path.with_extension("expect.json")).expect("expect.json"),
        )
        .expect("expect.json is JSON");
        let facet = match understand_bytes(&bytes, &names) {
            Ok(facet) => facet,
            Err(error) => {
                failures.push(format!("{name}: {error}"));
                continue;
            }
        };
        services.insert(facet.service.clone());
        actions.insert(format!("{}:{}", facet.service, facet.action));
        let got = serde_json::to_value(&facet).expect("facet to JSON");
        for field in [
            "service",
            "action",
            "iam_action",
            "region",
            "account",
            "resources",
            "authorizations",
        ] {
            if let Some(want) = expect.get(field)
                && got[field] != *want
            {
                failures.push(format!(
                    "{name}: {field} is {}, expected {want}",
                    got[field]
                ));
            }
        }
        for pair in expect
            .get("params_include")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
        {
            if !got["params"]
                .as_array()
                .is_some_and(|params| params.contains(pair))
            {
                failures.push(format!("{name}: params lack {pair}: {}", got["params"]));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests misunderstood:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(
        services.len() >= 20,
        "only {} services: {services:?}",
        services.len()
    );
    assert!(actions.len() >= 60, "only {} operations", actions.len());
}

#[test]
fn facet_command_prints_the_facet() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/corpus/cli-dynamodb-put-item.http");
    let output = Command::new(env!("CARGO_BIN_EXE_sigward"))
        .args([
            "facet",
            "--accounts",
            "111111111111=prod",
            file.to_str().expect("utf-8"),
        ])
        .output()
        .expect("run sigward facet");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let facet: serde_json::Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(facet["service"], "dynamodb");
    assert_eq!(facet["action"], "PutItem");
    assert_eq!(facet["iam_action"], "dynamodb:PutItem");
    assert_eq!(facet["account"], "111111111111");
    assert_eq!(facet["account_name"], "prod");
    assert_eq!(
        facet["resources"],
        serde_json::json!(["arn:aws:dynamodb:us-east-1:111111111111:table/orders"])
    );
}

#[test]
fn facet_command_explains_what_it_cannot_understand() {
    let cases: [(&[u8], &str); 5] = [
        (
            b"GET / HTTP/1.1\r\nHost: ec2.us-east-1.amazonaws.com\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIA111111111111XXXX/20261122/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\r\n",
            "host \"ec2.us-east-1.amazonaws.com\" is not an endpoint of any service signing as \"s3\"",
        ),
        (
            b"PATCH /bucket HTTP/1.1\r\nHost: s3.us-east-1.amazonaws.com\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIA111111111111XXXX/20261122/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\r\n",
            "unknown operation for s3: PATCH /bucket",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: ec2.us-east-1.amazonaws.com\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIA111111111111XXXX/20261122/eu-west-1/ec2/aws4_request, SignedHeaders=host, Signature=0\r\n\r\n",
            "credential scope region eu-west-1 does not match host region us-east-1",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: sts.amazonaws.com\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 25\r\n\r\nAction=GetCallerIdentity&",
            "access key id AKIAIOSFODNN7EXAMPLE names no account",
        ),
        (b"GET / HTTP/1.1\r\nHost: ", "incomplete request"),
    ];
    for (request, expected) in cases {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sigward"))
            .args(["facet", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(request)
            .expect("write");
        let output = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn a_json_target_must_belong_to_the_host_it_is_sent_to() {
    // DynamoDB Streams' target sent to the DynamoDB host (both sign as "dynamodb").
    let request = b"POST / HTTP/1.1\r\nHost: dynamodb.us-east-1.amazonaws.com\r\nX-Amz-Target: DynamoDBStreams_20120810.ListStreams\r\nContent-Type: application/x-amz-json-1.0\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIA111111111111XXXX/20261122/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: 2\r\n\r\n{}";
    let error = understand_bytes(request, &AccountNames::default()).expect_err("wrong host");
    assert!(
        error.to_string().contains("unknown operation for dynamodb"),
        "{error}"
    );
    let streams =
        String::from_utf8_lossy(request).replace("Host: dynamodb.", "Host: streams.dynamodb.");
    let facet =
        understand_bytes(streams.as_bytes(), &AccountNames::default()).expect("streams host");
    assert_eq!(facet.action, "ListStreams");
}

#[test]
fn an_action_query_parameter_of_a_rest_service_is_a_parameter() {
    // OpenSearch's ListDomainMaintenances filters with `?action=`: not a selector there.
    let request = b"GET /2021-01-01/opensearch/domain/d/domainMaintenances?action=REBOOT_NODE HTTP/1.1\r\nHost: es.us-east-1.amazonaws.com\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIA111111111111XXXX/20261122/us-east-1/es/aws4_request, SignedHeaders=host, Signature=0\r\n\r\n";
    let facet = understand_bytes(request, &AccountNames::default()).expect("understood");
    assert_eq!(facet.action, "ListDomainMaintenances");
    assert!(
        facet
            .params
            .contains(&("action".into(), "REBOOT_NODE".into()))
    );
}

#[test]
fn an_rpcv2_cbor_body_is_read_as_one_map() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/corpus/boto3-eventbridgev2-list-event-buses-cbor.http");
    let original = std::fs::read(file).expect("corpus");
    let head_end = original
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    let head = String::from_utf8_lossy(&original[..head_end]);
    let with_body = |body: &[u8]| {
        let mut bytes = head
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("content-length"))
            .collect::<Vec<_>>()
            .join("\r\n")
            .trim_end()
            .to_string();
        bytes.push_str(&format!("\r\nContent-Length: {}\r\n\r\n", body.len()));
        let mut bytes = bytes.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    };
    let cbor = |pairs: &[(&str, &str)]| {
        let map: Vec<(ciborium::Value, ciborium::Value)> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let mut out = Vec::new();
        ciborium::into_writer(&ciborium::Value::Map(map), &mut out).expect("cbor");
        out
    };
    let names = AccountNames::default();
    let facet =
        understand_bytes(&with_body(&cbor(&[("NamePrefix", "prod")])), &names).expect("one map");
    assert_eq!(facet.action, "ListEventBuses");
    assert!(facet.params.contains(&("NamePrefix".into(), "prod".into())));
    for (body, why) in [
        (
            cbor(&[("NamePrefix", "prod"), ("NamePrefix", "vault")]),
            "has the key",
        ),
        (
            [
                cbor(&[("NamePrefix", "prod")]),
                cbor(&[("NamePrefix", "vault")]),
            ]
            .concat(),
            "bytes follow the CBOR map",
        ),
        (b"{\"NamePrefix\":\"prod\"}".to_vec(), "CBOR"),
    ] {
        let error = understand_bytes(&with_body(&body), &names).expect_err(why);
        assert!(error.to_string().contains(why), "{error}");
    }
}

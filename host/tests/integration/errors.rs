//! Refusals as the aws CLI and boto3 read them: each protocol's error response is parsed
//! by botocore's own response parser (`tools/parse-error-responses`, in the project's
//! virtualenv), which must find sigward's code and message intact.

use std::io::Write as _;
use std::process::{Command, Stdio};

use data_encoding::BASE64;
use sigward::aws::tables::Protocol;
use sigward::proxy::errors::aws_error;

#[test]
fn botocore_reads_every_protocols_refusal() {
    let Some(venv) = std::env::var_os("SIGWARD_VENV") else {
        assert!(
            std::env::var_os("SIGWARD_REQUIRE_MODEL_CHECK").is_none(),
            "run with scripts/test"
        );
        eprintln!("skipped: SIGWARD_VENV is not set (scripts/test sets it)");
        return;
    };
    let message = "denied by policy no-secrets: secretsmanager:GetSecretValue in account prod (111111111111) <&> \"quoted\"";
    // (botocore service, operation, the protocol botocore speaks to it)
    let cases = [
        ("sqs", "SendMessage", Protocol::Json),
        ("dynamodb", "PutItem", Protocol::Json),
        ("secretsmanager", "GetSecretValue", Protocol::Json),
        ("cloudwatch", "PutMetricData", Protocol::Cbor),
        ("eventbridgev2", "ListEventBuses", Protocol::Cbor),
        ("s3", "GetObject", Protocol::RestXml),
        ("route53", "ListHostedZones", Protocol::RestXml),
        ("ec2", "TerminateInstances", Protocol::Ec2),
        ("sts", "GetCallerIdentity", Protocol::Query),
        ("iam", "CreateUser", Protocol::Query),
        ("lambda", "Invoke", Protocol::RestJson),
    ];
    let mut input = String::new();
    for (service, operation, protocol) in cases {
        let response = aws_error(protocol, 403, "AccessDenied", message, "req-1");
        let line = serde_json::json!({
            "service": service,
            "operation": operation,
            "status": response.status,
            "headers": response.headers,
            "body": BASE64.encode(&response.body),
        });
        input.push_str(&format!("{line}\n"));
    }
    let tool =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/parse-error-responses");
    let mut child = Command::new(std::path::PathBuf::from(venv).join("bin/python"))
        .arg(tool)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run botocore");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(parsed.len(), cases.len());
    for ((service, operation, _), got) in cases.iter().zip(&parsed) {
        assert_eq!(got["code"], "AccessDenied", "{service} {operation}: {got}");
        assert_eq!(got["message"], message, "{service} {operation}: {got}");
    }
}

//! The `sigward policy` commands, run as a user runs them.

use std::process::{Command, Output, Stdio};

use crate::support::fixture;

fn sigward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigward"))
        .args(args)
        .output()
        .expect("run sigward")
}

fn sigward_stdin(args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigward"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sigward");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is one JSON object")
}

fn example(name: &str) -> String {
    format!("{}/../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn eval_prints_the_verdict_policy_and_digest() {
    let out = json(&sigward(&[
        "policy",
        "eval",
        "--policy",
        "builtin:read-only",
        "--facet",
        &example("terminate-instances.json"),
    ]));
    assert_eq!(out["verdict"], "approve");
    assert_eq!(out["approvers"], serde_json::json!(["oncall"]));
    assert_eq!(
        out["prompt"],
        "in account prod (111111111111): claude wants ec2:TerminateInstances on arn:aws:ec2:us-east-1:111111111111:instance/i-0abc"
    );
    assert_eq!(out["policy"], "read-only");
    assert!(
        out["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:") && d.len() == 71),
        "{out}"
    );
}

#[test]
fn eval_reads_the_facet_from_stdin_with_missing_fields_empty() {
    let output = sigward_stdin(
        &[
            "policy",
            "eval",
            "--policy",
            "builtin:no-secrets",
            "--facet",
            "-",
        ],
        r#"{"iam_action": "kms:Decrypt", "account": "222222222222"}"#,
    );
    let out = json(&output);
    assert_eq!(out["verdict"], "deny");
    assert_eq!(out["reason"], "kms:Decrypt in account 222222222222");
    assert_eq!(out["policy"], "no-secrets");
}

#[test]
fn eval_passes_settings() {
    let out = json(&sigward(&[
        "policy",
        "eval",
        "--policy",
        "builtin:read-only",
        "--settings",
        r#"{"approvers":["sre"]}"#,
        "--facet",
        &example("terminate-instances.json"),
    ]));
    assert_eq!(out["approvers"], serde_json::json!(["sre"]));
}

#[test]
fn eval_of_a_failing_policy_is_a_deny_verdict() {
    let trap = fixture("trap");
    let out = json(&sigward(&[
        "policy",
        "eval",
        "--policy",
        trap.to_str().expect("utf-8"),
        "--facet",
        &example("terminate-instances.json"),
    ]));
    assert_eq!(out["verdict"], "deny");
    assert!(
        out["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("policy fixture_trap@") && r.contains("trapped")),
        "{out}"
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let facet = example("terminate-instances.json");
    let not_a_policy = fixture("not-a-policy");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--policy",
                "builtin:read-only",
                "--facet",
                "/nonexistent/facet.json",
            ],
            "cannot read facet file /nonexistent/facet.json",
        ),
        (
            vec!["--policy", "builtin:nope", "--facet", &facet],
            "unknown built-in policy builtin:nope",
        ),
        (
            vec!["--policy", &facet, "--facet", &facet],
            "is not a valid WebAssembly component",
        ),
        (
            vec![
                "--policy",
                not_a_policy.to_str().expect("utf-8"),
                "--facet",
                &facet,
            ],
            "does not implement the sigward:policy world",
        ),
        (
            vec!["--policy", "/nonexistent/p.wasm", "--facet", &facet],
            "cannot read policy module /nonexistent/p.wasm",
        ),
        (
            vec![
                "--policy",
                "builtin:read-only",
                "--settings",
                "{nope",
                "--facet",
                &facet,
            ],
            "--settings is not valid JSON",
        ),
    ];
    for (args, expected) in cases {
        let output = sigward(&[&["policy", "eval"], args.as_slice()].concat());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(output.stdout.is_empty());
    }

    let output = sigward_stdin(
        &[
            "policy",
            "eval",
            "--policy",
            "builtin:read-only",
            "--facet",
            "-",
        ],
        "{\"acount\": 1}",
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown field `acount`"));
}

#[test]
fn test_runs_the_builtin_policies_own_cases() {
    for policy in ["read-only", "no-secrets", "allowlist", "iam"] {
        let cases = format!(
            "{}/../policies/{policy}/cases.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let output = sigward(&["policy", "test", &format!("builtin:{policy}"), &cases]);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(" 0 failed"), "{stdout}");
        assert!(!stdout.contains("FAIL"), "{stdout}");
    }
}

#[test]
fn test_reports_each_failing_case_and_exits_nonzero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = dir.path().join("cases.json");
    std::fs::write(
        &cases,
        r#"[
          {"name": "reads pass", "facet": {"iam_action": "s3:GetObject", "action": "GetObject"}, "expect": {"verdict": "allow"}},
          {"name": "deletes wait for sre", "facet": {"iam_action": "s3:DeleteObject", "action": "DeleteObject"},
           "settings": {"approvers": ["sre"]}, "expect": {"verdict": "approve", "approvers": ["oncall"]}},
          {"name": "wrong kind", "facet": {"iam_action": "s3:PutObject", "action": "PutObject"}, "expect": {"verdict": "deny"}}
        ]"#,
    )
    .expect("write cases");
    let output = sigward(&[
        "policy",
        "test",
        "builtin:read-only",
        cases.to_str().expect("utf-8"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok   reads pass"), "{stdout}");
    assert!(
        stdout.contains(r#"FAIL deletes wait for sre: expected approvers ["oncall"], got ["sre"]"#),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL wrong kind: expected deny, got {\"verdict\":\"approve\""),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed, 2 failed"), "{stdout}");

    std::fs::write(&cases, r#"{"cases": [{"nam": "typo"}]}"#).expect("write");
    let output = sigward(&[
        "policy",
        "test",
        "builtin:read-only",
        cases.to_str().expect("utf-8"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not valid: unknown field `nam`"));
}

#[test]
fn bench_prints_one_json_line_of_latencies() {
    let out = json(&sigward(&[
        "policy",
        "bench",
        "--policy",
        "builtin:read-only",
        "--iterations",
        "200",
    ]));
    let p50 = out["p50_ns"].as_u64().expect("p50_ns");
    let p99 = out["p99_ns"].as_u64().expect("p99_ns");
    assert!(p50 > 0 && p50 <= p99, "{out}");
    assert!(
        out["evals_per_sec"].as_u64().is_some_and(|n| n > 0),
        "{out}"
    );
    assert!(
        out["reused_instance_p50_ns"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{out}"
    );
    assert_eq!(out["iterations"], 200);
}

#[test]
fn bench_refuses_a_failing_policy() {
    let looping = fixture("endless-loop");
    let output = sigward(&[
        "policy",
        "bench",
        "--policy",
        looping.to_str().expect("utf-8"),
        "--iterations",
        "3",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("fuel exhausted"));
}

#[test]
fn check_reports_each_problem_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("sigward.toml");
    let write = |text: &str| std::fs::write(&config, text).expect("write config");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_sigward"))
            .args(["check", "--config", config.to_str().expect("utf-8")])
            .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
            .env("AWS_SECRET_ACCESS_KEY", "secret")
            .output()
            .expect("run sigward check")
    };
    let endpoint = |policies: &str| {
        format!(
            "[state]\ndir = \"{}\"\n[credential.base]\nsource = \"environment\"\n[[endpoint]]\nname = \"e\"\nhosts = [\"*.amazonaws.com\"]\nrole = \"r\"\nregion = \"us-east-1\"\ncredential = \"base\"\npolicies = [{policies}]\n",
            dir.path().display()
        )
    };

    write(&endpoint(
        r#"{ module = "builtin:read-only" }, { module = "builtin:no-secrets" }"#,
    ));
    let output = run();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("ok (1 endpoints, 2 policies, 0 agents in the config, 0 added"),
        "{stdout}"
    );

    // A damaged state directory: one line per problem.
    std::fs::write(dir.path().join("agents.json"), "{").expect("write");
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").expect("write");
    let output = run();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("state.dir: agents: ") && l.contains("agents.json")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("state.dir: ") && l.contains("ca")),
        "{stdout}"
    );
    // An audit log in a folder that does not exist.
    write(&format!(
        "{}[audit]\npath = \"{}/no/such/folder/audit.jsonl\"\n",
        endpoint(r#"{ module = "builtin:read-only" }"#),
        dir.path().display()
    ));
    let output = run();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("audit.path: ") && stdout.contains("does not exist"),
        "{stdout}"
    );
    std::fs::remove_file(dir.path().join("agents.json")).expect("remove");
    std::fs::remove_file(dir.path().join("ca.pem")).expect("remove");

    let looping = fixture("endless-loop");
    write(&endpoint(&format!(
        r#"{{ module = "{}" }}"#,
        looping.display()
    )));
    let output = run();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("endpoint e: policy fixture_endless_loop@")
            && stdout.contains("failed its smoke evaluation"),
        "{stdout}"
    );

    write("[proxy]\nlisen = \"x\"\n");
    let output = run();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown field `lisen`"));
}

//! Human approval, the audit log, replay, observed-policy generation, record mode and
//! metrics, end to end: the real aws CLI through `sigward serve` to moto (signature
//! checking on), a human on the admin API, the `sigward approvals` CLI and (in
//! `browser.rs`) a real Chromium.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::e2e::{AGENT_SECRET, Agent, Moto, Sigward, config, ok, venv};
use crate::support::{self, eventually, http};

pub const TOKEN: &str = "admin-token-for-the-tests";

/// A request to the admin listener: (status, body).
pub fn admin(
    url: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    http(
        url.trim_start_matches("http://"),
        method,
        path,
        &format!("{auth}Content-Type: application/json\r\n"),
        body,
    )
}

/// The one pending approval whose prompt names `action`, once it appears.
pub fn pending(url: &str, action: &str) -> serde_json::Value {
    let mut found = None;
    let appeared = eventually(Duration::from_secs(60), || {
        let (status, body) = admin(url, "GET", "/approvals", Some(TOKEN), "");
        assert_eq!(status, 200, "{body}");
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON list");
        found = list
            .into_iter()
            .find(|a| a["prompt"].as_str().is_some_and(|p| p.contains(action)));
        found.is_some()
    });
    assert!(appeared, "no pending approval for {action}");
    found.expect("found")
}

fn finish(child: Child, what: &str) -> Output {
    let output = child.wait_with_output().expect("wait for aws");
    eprintln!("{what}: {:?}", output.status);
    output
}

fn refused(output: &Output, detail: &str, what: &str) {
    support::refused(output, "AccessDenied", detail, what);
}

/// A webhook receiver: every body posted to it.
fn webhook() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            seen.lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (url, bodies)
}

pub fn approval_config(
    dir: &Path,
    moto: &Moto,
    policies: &str,
    extra_endpoint: &str,
    extra: &str,
) -> String {
    config(dir, &moto.base_key, &moto.url, policies)
        .replace("policies = [", &format!("{extra_endpoint}\npolicies = ["))
        + extra
}

fn sigward_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sigward"))
        .args(args)
        .output()
        .expect("run sigward")
}

const TWO_POLICIES: &str = r#"{ module = "builtin:read-only", settings = { approvers = ["oncall"] } }, { module = "builtin:no-secrets" }"#;

#[test]
fn approvals_audit_replay_and_generate() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, dir.path(), &["111111111111"]);
    let (hook, hooks) = webhook();
    let audit_path = dir.path().join("audit.jsonl");
    let text = approval_config(
        dir.path(),
        &moto,
        TWO_POLICIES,
        &format!("approval_timeout = \"60s\"\napproval_webhook = \"{hook}\""),
        &format!(
            "\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n[audit]\npath = \"{}\"\n",
            audit_path.display()
        ),
    );
    let sigward = Sigward::start(dir.path(), &text);
    let url = sigward.admin.clone().expect("SIGWARD_ADMIN line");
    let agent = Agent::new(&venv, dir.path(), &sigward, AGENT_SECRET);

    // The admin API wants the token.
    assert_eq!(admin(&url, "GET", "/approvals", None, "").0, 401);
    assert_eq!(
        admin(
            &url,
            "GET",
            "/approvals",
            Some("wrong-token-wrong-token"),
            ""
        )
        .0,
        401
    );
    assert_eq!(
        admin(&url, "POST", "/approvals/nope/approve", Some(TOKEN), "").0,
        404
    );

    // run-instances waits; approved with the CLI, it completes.
    let run = agent.aws_spawn(
        "prod",
        &[
            "ec2",
            "run-instances",
            "--image-id",
            "ami-12c6146b",
            "--count",
            "1",
            "--instance-type",
            "t2.micro",
        ],
    );
    let approval = pending(&url, "ec2:RunInstances");
    assert!(
        approval["prompt"].as_str().is_some_and(
            |p| p.starts_with("in account prod (111111111111): claude wants ec2:RunInstances")
        ),
        "{approval}"
    );
    assert_eq!(approval["approvers"], serde_json::json!(["oncall"]));
    assert_eq!(approval["facet"]["iam_action"], "ec2:RunInstances");
    for key in ["id", "created_at", "expires_at"] {
        assert!(approval[key].is_string(), "{key} in {approval}");
    }
    let id = approval["id"].as_str().expect("id");
    let approved = sigward_cli(&[
        "approvals",
        "approve",
        id,
        "--admin",
        &url,
        "--token",
        TOKEN,
        "--by",
        "alice",
    ]);
    let said = ok(&approved, "sigward approvals approve");
    assert!(
        said.contains("approved") && said.contains("alice"),
        "{said}"
    );
    let out = ok(
        &finish(run, "run-instances"),
        "run-instances after approval",
    );
    let instance: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let instance_id = instance["Instances"][0]["InstanceId"]
        .as_str()
        .expect("an instance id")
        .to_string();

    // terminate-instances: the prompt names the instance; approved on the API.
    let terminate = agent.aws_spawn(
        "prod",
        &["ec2", "terminate-instances", "--instance-ids", &instance_id],
    );
    let approval = pending(&url, "ec2:TerminateInstances");
    assert_eq!(
        approval["prompt"],
        format!(
            "in account prod (111111111111): claude wants ec2:TerminateInstances on arn:aws:ec2:us-east-1:111111111111:instance/{instance_id}"
        )
    );
    let listed = ok(
        &sigward_cli(&["approvals", "list", "--admin", &url, "--token", TOKEN]),
        "approvals list",
    );
    assert!(
        listed.contains(approval["id"].as_str().expect("id")),
        "{listed}"
    );
    let (status, body) = admin(
        &url,
        "POST",
        &format!(
            "/approvals/{}/approve",
            approval["id"].as_str().expect("id")
        ),
        Some(TOKEN),
        r#"{"by": "carol"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let out = ok(
        &finish(terminate, "terminate"),
        "terminate-instances after approval",
    );
    assert!(
        out.contains("TerminatingInstances") && out.contains(&instance_id),
        "{out}"
    );
    // Decided once: a second decision is a 404.
    let (status, _) = admin(
        &url,
        "POST",
        &format!("/approvals/{}/deny", approval["id"].as_str().expect("id")),
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 404);

    // Denied, with who and why, in the message the CLI prints.
    let seen = moto.requests_seen();
    let again = agent.aws_spawn(
        "prod",
        &["ec2", "terminate-instances", "--instance-ids", &instance_id],
    );
    let approval = pending(&url, "ec2:TerminateInstances");
    ok(
        &sigward_cli(&[
            "approvals",
            "deny",
            approval["id"].as_str().expect("id"),
            "--admin",
            &url,
            "--token",
            TOKEN,
            "--by",
            "bob",
            "--reason",
            "not today",
        ]),
        "sigward approvals deny",
    );
    refused(
        &finish(again, "terminate again"),
        "denied by bob: not today",
        "a denied terminate",
    );
    assert_eq!(moto.requests_seen(), seen, "a denied request reached moto");

    // The webhook heard of each approval, Slack-style.
    assert!(eventually(Duration::from_secs(10), || hooks
        .lock()
        .expect("lock")
        .len()
        >= 3));
    let first: serde_json::Value =
        serde_json::from_str(&hooks.lock().expect("lock")[0]).expect("webhook JSON");
    assert!(
        first["text"]
            .as_str()
            .is_some_and(|t| t.contains("claude wants ec2:RunInstances")),
        "{first}"
    );

    // A read passes without a human; then a hot reload swaps no-secrets for allowlist
    // (the second policy set of the run).
    ok(
        &agent.aws("prod", &["sts", "get-caller-identity"]),
        "sts before the reload",
    );
    let reloaded = text.replace(
        r#"{ module = "builtin:no-secrets" }"#,
        r#"{ module = "builtin:allowlist", settings = { accounts = { prod = { "*" = ["sts", "ec2"] } } } }"#,
    );
    std::fs::write(dir.path().join("sigward.toml"), &reloaded).expect("edit the config");
    assert!(
        eventually(Duration::from_secs(30), || sigward
            .log()
            .contains("policy sets reloaded")),
        "no reload: {}",
        sigward.log()
    );
    ok(
        &agent.aws("prod", &["sts", "get-caller-identity"]),
        "sts after the reload",
    );
    ok(
        &agent.aws("prod", &["ec2", "describe-instances"]),
        "ec2 after the reload",
    );
    refused(
        &agent.aws("prod", &["s3api", "list-buckets"]),
        "denied by policy allowlist",
        "s3 outside the allowlist",
    );

    // Metrics.
    let (status, metrics) = admin(&url, "GET", "/metrics", Some(TOKEN), "");
    assert_eq!(status, 200);
    for needle in [
        r#"sigward_requests_total{endpoint="e2e",service="ec2",verdict="approve"} 3"#,
        "sigward_approvals_pending 0",
        "sigward_sts_assume_role_total 1",
        r#"sigward_policy_reloads_total{result="applied"}"#,
        "sigward_policy_evaluation_seconds_count",
        r#"sigward_upstream_responses_total{class="2xx"}"#,
    ] {
        assert!(metrics.contains(needle), "{needle} not in:\n{metrics}");
    }
    assert_eq!(admin(&url, "GET", "/metrics", None, "").0, 401);

    // The audit log: intact, with the decisions and who made them.
    drop(sigward);
    let log = std::fs::read_to_string(&audit_path).expect("audit log");
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(records[0]["genesis"].is_string());
    let decisions: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["approval"].is_object())
        .map(|r| {
            (
                r["approval"]["decision"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r["approval"]["by"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("approved", "alice"),
            ("approved", "carol"),
            ("denied", "bob")
        ]
        .map(|(d, b)| (d.to_string(), b.to_string()))
    );
    let verify = |path: &Path| sigward_cli(&["audit", "verify", path.to_str().expect("utf-8")]);
    let out = ok(&verify(&audit_path), "audit verify");
    assert!(out.contains("intact"), "{out}");

    // Tampering: an edited, a deleted and a swapped line are each named.
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 8, "{} lines", lines.len());
    let tampered = |name: &str, lines: Vec<String>| {
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").expect("write");
        let output = verify(&path);
        assert_eq!(output.status.code(), Some(1), "{name}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[3] = edited[3].replacen("\"claude\"", "\"mallory\"", 1);
    assert_ne!(edited[3], lines[3], "nothing to edit on line 4");
    let said = tampered("edited.jsonl", edited);
    assert!(said.contains("line 4 was altered"), "{said}");
    let mut deleted: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    deleted.remove(5);
    let said = tampered("deleted.jsonl", deleted);
    assert!(
        said.contains("line 6") && said.contains("removed"),
        "{said}"
    );
    let mut swapped: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    swapped.swap(4, 5);
    let said = tampered("swapped.jsonl", swapped);
    assert!(said.contains("line 5") && said.contains("moved"), "{said}");

    // Replay: every recorded verdict again, across both policy sets — no differences.
    let config_arg = dir.path().join("sigward.toml");
    let replay = sigward_cli(&[
        "audit",
        "replay",
        audit_path.to_str().expect("utf-8"),
        "--config",
        config_arg.to_str().expect("utf-8"),
    ]);
    let out = ok(&replay, "audit replay");
    assert!(out.contains(", 0 differences"), "{out}");
    let digests: std::collections::BTreeSet<&str> = records
        .iter()
        .flat_map(|r| r["evaluations"].as_array().into_iter().flatten())
        .filter_map(|e| e["digest"].as_str())
        .collect();
    assert_eq!(
        digests.len(),
        3,
        "read-only, no-secrets and allowlist: {digests:?}"
    );

    // A replay that disagrees is reported: a record whose verdict was changed.
    let forged = log.replacen(
        "\"verdict\":\"allow\"",
        "\"verdict\":\"deny\",\"reason\":\"x\"",
        1,
    );
    let forged_path = dir.path().join("forged.jsonl");
    std::fs::write(&forged_path, forged).expect("write");
    let replay = sigward_cli(&[
        "audit",
        "replay",
        forged_path.to_str().expect("utf-8"),
        "--config",
        config_arg.to_str().expect("utf-8"),
    ]);
    assert_eq!(replay.status.code(), Some(1), "{replay:?}");
    assert!(
        String::from_utf8_lossy(&replay.stdout).contains("recorded"),
        "{replay:?}"
    );

    // Observed-policy generation, fed back to builtin:iam: exactly the recorded calls.
    let generated = ok(
        &sigward_cli(&[
            "policy",
            "generate",
            "--from",
            audit_path.to_str().expect("utf-8"),
            "--agent",
            "claude",
        ]),
        "policy generate",
    );
    let document: serde_json::Value = serde_json::from_str(&generated).expect("IAM JSON");
    let settings: Arc<str> = serde_json::json!({ "documents": [document] })
        .to_string()
        .into();
    let engine = sigward::policy::Engine::new(Default::default()).expect("engine");
    let iam = engine
        .load(&sigward::policy::ModuleRef::parse("builtin:iam"))
        .expect("builtin:iam");
    let limits = sigward::policy::Limits::default();
    let mut forwarded = 0;
    for record in &records {
        if record["upstream_status"].is_null() || record["facet"].is_null() {
            continue;
        }
        forwarded += 1;
        let facet: sigward::facet::Facet =
            serde_json::from_value(record["facet"].clone()).expect("facet");
        let verdict = iam.evaluate(&settings, &facet, &limits).expect("evaluate");
        assert_eq!(
            verdict,
            sigward::policy::Verdict::Allow,
            "{}",
            facet.iam_action
        );
    }
    assert!(forwarded >= 5, "{forwarded} forwarded calls");
    for unrecorded in [
        "s3:ListAllMyBuckets",
        "secretsmanager:GetSecretValue",
        "ec2:StopInstances",
    ] {
        let (service, action) = unrecorded.split_once(':').expect("action");
        let facet = sigward::facet::Facet {
            service: service.into(),
            action: action.into(),
            iam_action: unrecorded.into(),
            account: "111111111111".into(),
            region: "us-east-1".into(),
            principal: "claude".into(),
            ..Default::default()
        };
        let verdict = iam.evaluate(&settings, &facet, &limits).expect("evaluate");
        assert!(
            matches!(verdict, sigward::policy::Verdict::Deny { .. }),
            "{unrecorded}: {verdict:?}"
        );
    }
    let toml = ok(
        &sigward_cli(&[
            "policy",
            "generate",
            "--from",
            audit_path.to_str().expect("utf-8"),
            "--format",
            "sigward",
        ]),
        "policy generate --format sigward",
    );
    assert!(
        toml.starts_with("{ module = \"builtin:iam\", settings = { \"documents\" = ["),
        "{toml}"
    );
}

/// A short approval timeout is a deny that says so; record mode allows and logs what
/// the policies would have said.
#[test]
fn approval_timeout_and_record_mode() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, dir.path(), &["111111111111"]);

    let timeout_dir = dir.path().join("timeout");
    std::fs::create_dir(&timeout_dir).expect("mkdir");
    let sigward = Sigward::start(
        &timeout_dir,
        &approval_config(
            &timeout_dir,
            &moto,
            TWO_POLICIES,
            "approval_timeout = \"2s\"",
            "",
        ),
    );
    let agent = Agent::new(&venv, &timeout_dir, &sigward, AGENT_SECRET);
    let seen = moto.requests_seen();
    refused(
        &agent.aws(
            "prod",
            &["ec2", "terminate-instances", "--instance-ids", "i-0abc"],
        ),
        "approval timed out after 2s: nobody of oncall decided (in account prod (111111111111): claude wants ec2:TerminateInstances",
        "an approval nobody decided",
    );
    assert_eq!(moto.requests_seen(), seen);
    drop(sigward);

    let record_dir = dir.path().join("record");
    std::fs::create_dir(&record_dir).expect("mkdir");
    let audit_path = record_dir.join("audit.jsonl");
    let sigward = Sigward::start(
        &record_dir,
        &approval_config(
            &record_dir,
            &moto,
            TWO_POLICIES,
            "mode = \"record\"",
            &format!("\n[audit]\npath = \"{}\"\n", audit_path.display()),
        ),
    );
    assert!(
        sigward.log().contains("every request is allowed"),
        "{}",
        sigward.log()
    );
    let agent = Agent::new(&venv, &record_dir, &sigward, AGENT_SECRET);
    // no-secrets would deny: in record mode the call reaches moto, which has no such secret.
    let output = agent.aws(
        "prod",
        &["secretsmanager", "get-secret-value", "--secret-id", "db"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ResourceNotFoundException"), "{stderr}");
    drop(sigward);
    let log = std::fs::read_to_string(&audit_path).expect("audit log");
    let record = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|r| r["facet"]["iam_action"] == "secretsmanager:GetSecretValue")
        .expect("the record");
    assert_eq!(record["mode"], "record");
    assert_eq!(record["verdict"]["verdict"], "deny", "{record}");
    // Forwarded: moto answered (404, no such secret).
    assert!(record["upstream_status"].is_u64(), "{record}");
}

/// An audit log that cannot be written stops requests (fail closed), with the reason.
/// The disk "fills up" through a file-size limit on the sigward process (SIGXFSZ
/// ignored, so writes fail with EFBIG), the genesis line and the first record fitting.
#[test]
fn an_unwritable_audit_log_refuses_requests() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, dir.path(), &["111111111111"]);
    let audit_path = dir.path().join("audit.jsonl");
    let text = approval_config(
        dir.path(),
        &moto,
        r#"{ module = "builtin:no-secrets" }"#,
        "",
        &format!("\n[audit]\npath = \"{}\"\n", audit_path.display()),
    );
    // The CA files are written first; 8 KiB leaves room for them, the genesis line and
    // a record or two, not for many.
    let sigward = Sigward::start_in_shell(dir.path(), &text, "trap '' XFSZ\nulimit -f 16");
    let agent = Agent::new(&venv, dir.path(), &sigward, AGENT_SECRET);
    let mut refusal = None;
    for _ in 0..20 {
        let output = agent.aws("prod", &["sts", "get-caller-identity"]);
        if !output.status.success() {
            refusal = Some(String::from_utf8_lossy(&output.stderr).into_owned());
            break;
        }
    }
    let refusal = refusal.expect("requests went on while the audit log could not be written");
    assert!(
        refusal.contains("ServiceUnavailable") && refusal.contains("cannot be written"),
        "{refusal}"
    );
    // What the log holds is still a valid chain: the failed write was cut back.
    let verified = sigward_cli(&["audit", "verify", audit_path.to_str().expect("utf-8")]);
    assert!(verified.status.success(), "{verified:?}");
}

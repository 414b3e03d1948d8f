//! sigward as the authorizer of a proxy the operator already runs.
//! - `sigward authorize` (Envoy's ext_authz HTTP service): Envoy cannot be installed on
//!   these machines (no Debian or PyPI package), so the real aws CLI sends its requests
//!   straight to the authorizer, exactly as Envoy forwards them (method, path, headers,
//!   body); a refusal's body is what Envoy would hand back, and the CLI shows it.
//! - `sigward squid-helper`: helper lines as Squid writes them, then a real Squid (Debian's package,
//!   installed by scripts/system-packages) in front of moto, with the aws CLI behind it.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::e2e::{Moto, Process, clean_aws_env, config, free_port, ok, venv};
use crate::support::{eventually, http_exchange, refused};

const POLICIES: &str = r#"{ module = "builtin:read-only" }, { module = "builtin:no-secrets" }"#;

fn authorizer_config(dir: &Path) -> String {
    config(
        dir,
        &("AKIAIOSFODNN7EXAMPLE".into(), "unused".into()),
        "http://127.0.0.1:9",
        POLICIES,
    )
    .replace(
        r#"hosts = ["*.amazonaws.com"]"#,
        r#"hosts = ["*.amazonaws.com", "127.0.0.1"]"#,
    )
}

/// The aws CLI with an agent's real-looking key, talking to `endpoint_url`.
fn aws(
    venv: &Path,
    endpoint_url: &str,
    proxy: Option<&str>,
    key: (&str, &str),
    args: &[&str],
) -> Output {
    let mut command = Command::new(venv.join("bin/aws"));
    clean_aws_env(&mut command);
    if let Some(proxy) = proxy {
        command.env("HTTP_PROXY", proxy);
    }
    command
        .args(["--endpoint-url", endpoint_url])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", key.0)
        .env("AWS_SECRET_ACCESS_KEY", key.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/sigward-test")
        .env("AWS_CONFIG_FILE", "/nonexistent/sigward-test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_PAGER", "")
        .output()
        .expect("run aws")
}

const AGENT_KEY: (&str, &str) = ("AKIA111111111111XXXX", "any-secret: not checked here");

#[test]
fn ext_authz_allows_and_refuses_with_aws_errors() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("sigward.toml");
    std::fs::write(&config_path, authorizer_config(dir.path())).expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigward"))
        .args([
            "authorize",
            "--listen",
            "127.0.0.1:0",
            "--path-prefix",
            "/check",
            "--config",
        ])
        .arg(&config_path)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("authorize.log")).expect("log"))
        .spawn()
        .expect("start sigward authorize");
    let stdout = child.stdout.take().expect("stdout");
    let _process = Process(child);
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .and_then(Result::ok)
        .expect("the listen line");
    let url = line
        .strip_prefix("ext_authz http_service: ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    assert!(url.ends_with("/check"), "{url}");
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/check")
        .to_string();

    // Allowed: 200, and the CLI takes the empty answer as a result.
    ok(
        &aws(&venv, &url, None, AGENT_KEY, &["dynamodb", "list-tables"]),
        "dynamodb list-tables (allowed)",
    );
    // Denied and approval-needing calls: the body is the AWS error the CLI shows.
    refused(
        &aws(
            &venv,
            &url,
            None,
            AGENT_KEY,
            &["secretsmanager", "get-secret-value", "--secret-id", "db"],
        ),
        "(AccessDenied) when calling the GetSecretValue operation",
        "denied by policy no-secrets: secretsmanager:GetSecretValue in account prod (111111111111)",
        "get-secret-value",
    );
    refused(
        &aws(
            &venv,
            &url,
            None,
            AGENT_KEY,
            &["ec2", "terminate-instances", "--instance-ids", "i-0abc"],
        ),
        "AccessDenied",
        "approval by oncall is required (in account prod (111111111111): claude wants ec2:TerminateInstances",
        "terminate-instances",
    );

    // What Envoy sends without with_request_body: a query-protocol call cannot be told.
    let (status, response) = http_exchange(
        &address,
        "POST /check/ HTTP/1.1\r\nHost: sts.amazonaws.com\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=AKIA111111111111XXXX/20261122/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=00\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 403, "{response}");
    assert!(response.contains("forward the body"), "{response}");
    // Unsigned, and a host no endpoint covers.
    let (status, response) = http_exchange(
        &address,
        "GET /check/ HTTP/1.1\r\nHost: s3.amazonaws.com\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 403, "{response}");
    assert!(
        response.contains("MissingAuthenticationToken"),
        "{response}"
    );
    let (status, response) = http_exchange(
        &address,
        "GET /check/ HTTP/1.1\r\nHost: example.com\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=AKIA111111111111XXXX/20261122/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\
         Connection: close\r\n\r\n",
    );
    assert_eq!(status, 403, "{response}");
    assert!(
        response.contains("not a host any endpoint covers"),
        "{response}"
    );
}

/// Helper lines in the shape Squid 5.7 writes them for the documented format (a channel
/// id, method, URL as sent, %-encoded header values or `-`, then `-` for the acl's
/// arguments), through `sigward squid-helper`. Line 5 is one Squid wrote here verbatim,
/// for a curl request with a made-up Authorization header.
#[test]
fn squid_helper_answers_recorded_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("sigward.toml");
    std::fs::write(&config_path, authorizer_config(dir.path())).expect("config");
    let auth = |service: &str| {
        format!(
            "AWS4-HMAC-SHA256%20Credential=AKIA111111111111XXXX/20261122/us-east-1/{service}/aws4_request,%20SignedHeaders=host;x-amz-date,%20Signature=0f"
        )
    };
    let lines = [
        format!(
            "0 POST http://dynamodb.us-east-1.amazonaws.com/ {} DynamoDB_20120810.ListTables application/x-amz-json-1.0 -",
            auth("dynamodb")
        ),
        format!(
            "1 POST http://secretsmanager.us-east-1.amazonaws.com/ {} secretsmanager.GetSecretValue application/x-amz-json-1.1 -",
            auth("secretsmanager")
        ),
        "2 GET http://s3.amazonaws.com/ - - - -".to_string(),
        format!(
            "3 POST http://sts.amazonaws.com/ {} - application/x-www-form-urlencoded -",
            auth("sts")
        ),
        format!(
            "GET http://127.0.0.1:5000/bucket?list-type=2 {} - - -",
            auth("s3")
        ),
        "4 GET".to_string(),
        "5 GET http://127.0.0.1:18999/a?b=c%2Fd&e=f AWS4-HMAC-SHA256%20Credential=AKIA/x,%20SignedHeaders=host DynamoDB_20120810.ListTables - -".to_string(),
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigward"))
        .args(["squid-helper", "--config"])
        .arg(&config_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start squid-helper");
    let mut stdin = child.stdin.take().expect("stdin");
    for line in &lines {
        writeln!(stdin, "{line}").expect("write");
    }
    drop(stdin);
    let output = child.wait_with_output().expect("helper output");
    assert!(output.status.success());
    let answers: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| {
            percent_encoding::percent_decode_str(l)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(answers.len(), lines.len(), "{answers:?}");
    assert_eq!(answers[0], "0 OK");
    assert!(
        answers[1].starts_with("1 ERR message=403 AccessDenied: denied by policy no-secrets: secretsmanager:GetSecretValue in account prod (111111111111)"),
        "{}",
        answers[1]
    );
    assert!(
        answers[2].starts_with("2 ERR message=403 MissingAuthenticationToken"),
        "{}",
        answers[2]
    );
    assert!(
        answers[3].starts_with("3 ERR ") && answers[3].contains("forward the body"),
        "{}",
        answers[3]
    );
    assert_eq!(
        answers[4], "OK",
        "S3 ListObjectsV2 on a local endpoint, no channel id"
    );
    assert!(
        answers[5].starts_with("4 ERR message=sigward: expected the external_acl_type format"),
        "{}",
        answers[5]
    );
    assert!(
        answers[6].starts_with("5 ERR message=403 IncompleteSignature"),
        "{}",
        answers[6]
    );
}

/// A real Squid in front of moto asks `sigward squid-helper` about each request.
#[test]
fn a_real_squid_asks_sigward() {
    let Some(venv) = venv() else { return };
    let Some(squid) = ["/usr/sbin/squid", "/usr/bin/squid"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        assert!(
            std::env::var_os("SIGWARD_REQUIRE_MODEL_CHECK").is_none(),
            "squid is not installed: scripts/system-packages installs it"
        );
        eprintln!("squid: skipped (not installed; scripts/system-packages installs it)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, dir.path(), &["111111111111"]);
    // Squid runs its helpers as its own user (proxy): the binary, the config and the
    // log folder must be reachable by it.
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let binary = root.join("sigward");
    std::fs::copy(env!("CARGO_BIN_EXE_sigward"), &binary).expect("copy sigward");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config_path = root.join("sigward.toml");
    std::fs::write(
        &config_path,
        authorizer_config(root).replace(POLICIES, r#"{ module = "builtin:no-secrets" }"#),
    )
    .expect("config");
    std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let logs = root.join("squid");
    std::fs::create_dir(&logs).expect("mkdir");
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let port = free_port();
    let squid_conf = root.join("squid.conf");
    std::fs::write(
        &squid_conf,
        format!(
            "http_port 127.0.0.1:{port}\n\
             pid_filename {logs}/squid.pid\n\
             cache_log {logs}/cache.log\n\
             access_log stdio:{logs}/access.log\n\
             coredump_dir {logs}\n\
             cache deny all\n\
             shutdown_lifetime 0 seconds\n\
             external_acl_type sigward ttl=0 negative_ttl=0 concurrency=4 children-max=2 {format} {binary} squid-helper --config {config}\n\
             acl sigward_allows external sigward\n\
             http_access allow sigward_allows\n\
             http_access deny all\n",
            logs = logs.display(),
            format = "%>rm %>ru %>ha{Authorization} %>ha{X-Amz-Target} %>ha{Content-Type}",
            binary = binary.display(),
            config = config_path.display(),
        ),
    )
    .expect("squid.conf");
    let _squid = Process(
        Command::new(squid)
            .args(["-N", "-f"])
            .arg(&squid_conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(logs.join("stderr")).expect("log"))
            .spawn()
            .expect("start squid"),
    );
    assert!(
        eventually(Duration::from_secs(30), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "squid did not start: {}",
        std::fs::read_to_string(logs.join("stderr")).unwrap_or_default()
    );
    let proxy = format!("http://127.0.0.1:{port}");
    let key = (moto.base_key.0.as_str(), moto.base_key.1.as_str());

    // Allowed: Squid forwards to moto, which answers.
    let before = moto.requests_seen();
    let out = ok(
        &aws(
            &venv,
            &moto.url,
            Some(&proxy),
            key,
            &["dynamodb", "list-tables"],
        ),
        "dynamodb list-tables through squid",
    );
    assert!(out.contains("TableNames"), "{out}");
    assert!(
        moto.requests_seen() > before,
        "moto did not see the allowed call"
    );

    // Denied: Squid refuses, moto sees nothing.
    let before = moto.requests_seen();
    let denied = aws(
        &venv,
        &moto.url,
        Some(&proxy),
        key,
        &["secretsmanager", "get-secret-value", "--secret-id", "db"],
    );
    assert!(!denied.status.success(), "get-secret-value passed squid");
    assert_eq!(moto.requests_seen(), before, "a denied call reached moto");
    let access = std::fs::read_to_string(logs.join("access.log")).unwrap_or_default();
    assert!(access.contains("TCP_DENIED/403"), "{access}");
}

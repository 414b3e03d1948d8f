//! Agents sigward issues keys to, each delivery used as the SDKs document it, with real
//! parts: `sigward agent add`, then an agent shell that `eval`s `sigward env` and runs
//! the real aws CLI or boto3 → sigward → moto (signature checking on).
//! - credential_process: `sigward profile install` writes the profiles;
//! - the ECS container endpoint: `AWS_CONTAINER_CREDENTIALS_FULL_URI` + token;
//! - revoked and expired keys get `InvalidClientTokenId`.

use std::path::Path;
use std::process::{Command, Output};

use crate::e2e::{AGENT_SECRET, Moto, Sigward, clean_aws_env, config, free_port, ok, venv};
use crate::support::{http, refused};

const SIGWARD: &str = env!("CARGO_BIN_EXE_sigward");

pub fn sigward(args: &[&str]) -> Output {
    Command::new(SIGWARD)
        .args(args)
        .output()
        .expect("run sigward")
}

/// An agent's shell: a clean environment (none of this machine's AWS variables), then
/// `eval "$(sigward env …)"`, then `program args…`.
fn agent_shell(venv: &Path, env_args: &[&str], program: &str, args: &[&str]) -> Output {
    let env_command = std::iter::once(SIGWARD)
        .chain(["env"])
        .chain(env_args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "set -e; exports=\"$({env_command})\"; eval \"$exports\"; exec \"$@\""
        ))
        .arg("agent-shell")
        .arg(venv.join("bin").join(program))
        .args(args);
    clean_aws_env(&mut command);
    command
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/sigward-test")
        .env("AWS_CONFIG_FILE", "/nonexistent/sigward-test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_PAGER", "");
    command.output().expect("run the agent shell")
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn caller_account(output: &Output, what: &str) -> (String, String) {
    let text = ok(output, what);
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    (
        json["Account"].as_str().unwrap_or_default().to_string(),
        json["Arn"].as_str().unwrap_or_default().to_string(),
    )
}

/// A GET on the credentials listener.
fn get_credentials(address: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    http(address, "GET", path, &auth, "")
}

/// A static key (as `sigward credentials` printed it) used directly by the aws CLI (`sts
/// get-caller-identity` unless `args` says otherwise): what an agent that kept a key after
/// revocation or expiry would do.
pub fn with_static_key(
    venv: &Path,
    proxy: &str,
    ca: &Path,
    key: &serde_json::Value,
    args: &[&str],
) -> Output {
    let field = |name: &str| key[name].as_str().unwrap_or_default().to_string();
    let mut command = Command::new(venv.join("bin/aws"));
    clean_aws_env(&mut command);
    let args = if args.is_empty() {
        &["sts", "get-caller-identity"][..]
    } else {
        args
    };
    command
        .args(args)
        .env("HTTPS_PROXY", proxy)
        .env("AWS_CA_BUNDLE", ca)
        .env("AWS_ACCESS_KEY_ID", field("AccessKeyId"))
        .env("AWS_SECRET_ACCESS_KEY", field("SecretAccessKey"))
        .env("AWS_SESSION_TOKEN", field("SessionToken"))
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/sigward-test")
        .env("AWS_CONFIG_FILE", "/nonexistent/sigward-test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .output()
        .expect("run aws")
}

#[test]
fn agents_get_keys_by_credential_process_and_the_ecs_endpoint() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, dir.path(), &["111111111111", "222222222222"]);
    let (proxy_port, credentials_port) = (free_port(), free_port());
    let text = config(
        dir.path(),
        &moto.base_key,
        &moto.url,
        r#"{ module = "builtin:read-only" }, { module = "builtin:no-secrets" }"#,
    )
    .replace(
        "listen = \"127.0.0.1:0\"\nendpoint_listen = \"127.0.0.1:0\"",
        &format!(
            "listen = \"127.0.0.1:{proxy_port}\"\ncredentials_listen = \"127.0.0.1:{credentials_port}\""
        ),
    );
    assert!(text.contains("credentials_listen"), "{text}");
    let config_path = dir.path().join("sigward.toml");
    std::fs::write(&config_path, &text).expect("config");
    let config_arg = config_path.display().to_string();
    let with_config = |args: &[&str]| -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", &config_arg]);
        sigward(&all)
    };

    // The operator adds the agent, then starts sigward.
    let added = with_config(&[
        "agent",
        "add",
        "bot",
        "--account",
        "prod",
        "--account",
        "222222222222",
        "--ttl",
        "2h",
    ]);
    let said = ok(&added, "agent add");
    assert!(
        said.contains("prod (111111111111)") && said.contains("staging (222222222222)"),
        "{said}"
    );
    let listed = ok(&with_config(&["agent", "list"]), "agent list");
    assert!(
        listed.contains("bot") && listed.contains("issued") && listed.contains("active"),
        "{listed}"
    );
    // The name of a config-file agent is taken.
    let clash = with_config(&["agent", "add", "claude", "--account", "prod"]);
    assert!(!clash.status.success(), "a second claude was added");
    let sigward_process = Sigward::start(dir.path(), &text);
    assert_eq!(
        sigward_process.proxy,
        format!("http://127.0.0.1:{proxy_port}")
    );

    // credential_process: profiles in an AWS config file that already has content (and
    // no newline at its end); remove must give back exactly these bytes.
    let aws_config = dir.path().join("aws-config");
    let original = "# my settings\n[default]\nregion = eu-west-1\n\n[profile other]\noutput = json";
    std::fs::write(&aws_config, original).expect("aws config");
    let file_arg = aws_config.display().to_string();
    ok(
        &with_config(&["profile", "install", "--agent", "bot", "--file", &file_arg]),
        "profile install",
    );
    let installed = std::fs::read_to_string(&aws_config).expect("read");
    assert!(
        installed.starts_with(original)
            && installed.contains("[profile bot-prod]")
            && installed.contains("[profile bot-staging]")
            && installed.contains("credential_process = "),
        "{installed}"
    );
    // Installing again replaces sigward's block, not duplicates it.
    ok(
        &with_config(&["profile", "install", "--agent", "bot", "--file", &file_arg]),
        "profile install again",
    );
    assert_eq!(
        std::fs::read_to_string(&aws_config).expect("read"),
        installed
    );

    let process = |account: &str| -> Vec<String> {
        vec![
            "--agent".into(),
            "bot".into(),
            "--account".into(),
            account.into(),
            "--delivery".into(),
            "process".into(),
            "--file".into(),
            file_arg.clone(),
            "--config".into(),
            config_arg.clone(),
        ]
    };
    let ecs = |account: &str| -> Vec<String> {
        vec![
            "--agent".into(),
            "bot".into(),
            "--account".into(),
            account.into(),
            "--config".into(),
            config_arg.clone(),
        ]
    };

    // The aws CLI and boto3 with the credential-process profile, in both accounts.
    for (account, id) in [("prod", "111111111111"), ("staging", "222222222222")] {
        let (got, arn) = caller_account(
            &agent_shell(
                &venv,
                &refs(&process(account)),
                "aws",
                &["sts", "get-caller-identity"],
            ),
            &format!("aws via credential_process ({account})"),
        );
        assert_eq!(got, id, "{arn}");
        assert!(
            arn.contains("assumed-role/sigward-gateway/sigward-bot"),
            "{arn}"
        );
    }
    let boto3 = r#"
import boto3
session = boto3.Session()
creds = session.get_credentials()
print(creds.method, creds.access_key[:4])
print(session.client("sts").get_caller_identity()["Account"])
"#;
    let out = ok(
        &agent_shell(&venv, &refs(&process("prod")), "python", &["-c", boto3]),
        "boto3 via credential_process",
    );
    assert_eq!(out, "custom-process ASIA\n111111111111\n", "{out}");

    // The ECS container endpoint (the default delivery when credentials_listen is set).
    let exports = ok(
        &sigward(&refs(&{
            let mut a = vec!["env".to_string()];
            a.extend(ecs("prod"));
            a
        })),
        "sigward env",
    );
    assert!(
        exports.contains(&format!(
            "export AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:{credentials_port}/agents/bot/111111111111"
        )) && exports.contains("export AWS_CONTAINER_AUTHORIZATION_TOKEN=")
            && exports.contains(&format!("export HTTPS_PROXY=http://127.0.0.1:{proxy_port}")),
        "{exports}"
    );
    let (got, _) = caller_account(
        &agent_shell(
            &venv,
            &refs(&ecs("prod")),
            "aws",
            &["sts", "get-caller-identity"],
        ),
        "aws via the ECS endpoint",
    );
    assert_eq!(got, "111111111111");
    let out = ok(
        &agent_shell(&venv, &refs(&ecs("staging")), "python", &["-c", boto3]),
        "boto3 via the ECS endpoint",
    );
    assert_eq!(out, "container-role ASIA\n222222222222\n", "{out}");
    // A presigned URL carries the issued session token in its query; sigward checks it,
    // re-presigns and forwards. (moto 5.2.5 cannot check presigned signatures when its
    // signature checking is on: it answers 500, KeyError 'HTTP_AUTHORIZATION'. The
    // re-presigned signature itself is verified in verifier.rs.)
    let presign = r#"
import boto3, botocore.config, os, ssl, urllib.request
s3 = boto3.client("s3", config=botocore.config.Config(signature_version="s3v4"))
url = s3.generate_presigned_url("list_buckets", ExpiresIn=300)
context = ssl.create_default_context(cafile=os.environ["AWS_CA_BUNDLE"])
try:
    print("X-Amz-Security-Token=" in url, urllib.request.urlopen(url, context=context).status)
except urllib.error.HTTPError as e:
    print("X-Amz-Security-Token=" in url, e.code, e.read().decode())
"#;
    let seen = moto.requests_seen();
    let out = ok(
        &agent_shell(&venv, &refs(&ecs("prod")), "python", &["-c", presign]),
        "a presigned URL with an issued key",
    );
    assert!(
        out.starts_with("True ") && !out.contains("sigward"),
        "{out}"
    );
    assert!(
        crate::support::eventually(std::time::Duration::from_secs(5), || moto.requests_seen()
            > seen),
        "the presigned call did not reach moto: {out}"
    );
    // Policies still judge an issued key's calls, naming its agent's account.
    let secret = agent_shell(
        &venv,
        &refs(&ecs("prod")),
        "aws",
        &["secretsmanager", "get-secret-value", "--secret-id", "db"],
    );
    refused(
        &secret,
        "AccessDenied",
        "denied by policy no-secrets: secretsmanager:GetSecretValue in account prod (111111111111)",
        "get-secret-value via ECS",
    );

    // The endpoint itself: the right token gets a key, a wrong or missing one a 403.
    let token = exports
        .lines()
        .find_map(|l| l.strip_prefix("export AWS_CONTAINER_AUTHORIZATION_TOKEN="))
        .expect("token line")
        .to_string();
    let address = format!("127.0.0.1:{credentials_port}");
    let (status, body) = get_credentials(&address, "/agents/bot/111111111111", Some(&token));
    assert_eq!(status, 200, "{body}");
    let key: serde_json::Value = serde_json::from_str(&body).expect("ECS JSON");
    for field in ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"] {
        assert!(key[field].is_string(), "{field} in {body}");
    }
    for bad in [None, Some("wrong"), Some(&token[1..])] {
        let (status, body) = get_credentials(&address, "/agents/bot/111111111111", bad);
        assert_eq!(status, 403, "{bad:?}: {body}");
    }
    let (status, _) = get_credentials(&address, "/agents/bot/333333333333", Some(&token));
    assert_eq!(status, 403, "an account the agent may not use");

    // Revocation: a key fetched before still names the agent, and is refused at once.
    let kept: serde_json::Value = serde_json::from_str(&ok(
        &with_config(&["credentials", "--agent", "bot", "--account", "prod"]),
        "sigward credentials",
    ))
    .expect("credential_process JSON");
    assert_eq!(kept["Version"], 1);
    let (got, _) = caller_account(
        &with_static_key(
            &venv,
            &sigward_process.proxy,
            &sigward_process.ca,
            &kept,
            &[],
        ),
        "a kept key before revocation",
    );
    assert_eq!(got, "111111111111");
    let seen = moto.requests_seen();
    ok(&with_config(&["agent", "revoke", "bot"]), "agent revoke");
    refused(
        &with_static_key(
            &venv,
            &sigward_process.proxy,
            &sigward_process.ca,
            &kept,
            &[],
        ),
        "InvalidClientTokenId",
        "revoked",
        "a kept key after revocation",
    );
    let (status, _) = get_credentials(&address, "/agents/bot/111111111111", Some(&token));
    assert_eq!(status, 403, "the ECS endpoint after revocation");
    assert_eq!(
        moto.requests_seen(),
        seen,
        "a revoked key's call reached moto"
    );

    // Expiry: a key that lives one second.
    ok(
        &with_config(&["agent", "add", "brief", "--account", "prod", "--ttl", "1s"]),
        "agent add brief",
    );
    let brief: serde_json::Value = serde_json::from_str(&ok(
        &with_config(&["credentials", "--agent", "brief", "--account", "prod"]),
        "sigward credentials brief",
    ))
    .expect("JSON");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    refused(
        &with_static_key(
            &venv,
            &sigward_process.proxy,
            &sigward_process.ca,
            &brief,
            &[],
        ),
        "InvalidClientTokenId",
        "expired",
        "an expired key",
    );

    // The record lines name the agent; no issued secret appears in the log.
    let log = sigward_process.log();
    assert!(log.contains("agent=bot"), "{log}");
    let secret = kept["SecretAccessKey"].as_str().unwrap_or("?");
    assert!(!log.contains(secret), "an issued secret is in the log");
    assert!(!log.contains(AGENT_SECRET));

    // profile remove gives back the original bytes.
    ok(
        &with_config(&["profile", "remove", "--agent", "bot", "--file", &file_arg]),
        "profile remove",
    );
    assert_eq!(
        std::fs::read_to_string(&aws_config).expect("read"),
        original
    );
}

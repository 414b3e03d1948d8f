//! Every AWS client an agent is likely to use, beyond the PyPI CLI and boto3 of `e2e.rs`,
//! through sigward to moto with real parts: the AWS CLI v2 (Debian), the Go SDK v2 (Debian,
//! built offline) and the JavaScript SDK v3 (npm), each running the same scenario
//! (`tests/clients/*`: STS in two accounts, S3 small and 20 MiB multipart up and down,
//! presigned PUT and GET, DynamoDB, SQS, a denied call, a wrong secret) four ways: through
//! `HTTPS_PROXY`, at the direct listener, and with keys sigward issued by
//! `credential_process` and by the ECS container endpoint.
//!
//! Between sigward and moto sits `tests/clients/sigv4-verifier`, an independent SigV4
//! verifier (Python's standard library only): moto checks header signatures but not payload
//! hashes, chunk or trailer signatures, trailing checksums or clock skew, and it cannot
//! check presigned URLs with its signature checking on. Every request sigward forwards must
//! pass the verifier, signed by a key AWS (moto) issued, never the agent's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::e2e::{AGENT_SECRET, Moto, Process, Sigward, clean_aws_env, free_port, ok, venv};
use crate::support::eventually;

const SIGWARD: &str = env!("CARGO_BIN_EXE_sigward");
const VERIFIER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/clients/sigv4-verifier"
);
const CLI_SCENARIO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/clients/cli/scenario.sh"
);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    CliV2,
    Go,
    Js,
}

impl Client {
    fn label(self) -> &'static str {
        match self {
            Client::CliV2 => "cli",
            Client::Go => "go",
            Client::Js => "js",
        }
    }

    /// The program that runs the scenario, from `scripts/clients-env`; `None` outside
    /// `scripts/test` (CI requires them).
    fn program(self) -> Option<Vec<String>> {
        let var = match self {
            Client::CliV2 => "SIGWARD_CLI_V2",
            Client::Go => "SIGWARD_GO_SCENARIO",
            Client::Js => "SIGWARD_JS_SCENARIO",
        };
        let Some(path) = std::env::var_os(var).map(PathBuf::from) else {
            assert!(
                std::env::var_os("SIGWARD_REQUIRE_MODEL_CHECK").is_none(),
                "{var} is not set: run scripts/test (scripts/clients-env installs the clients)"
            );
            eprintln!("clients: {var} not set, {self:?} skipped (scripts/test sets it)");
            return None;
        };
        let path = path.display().to_string();
        Some(match self {
            Client::CliV2 => vec!["bash".into(), CLI_SCENARIO.into()],
            Client::Go => vec![path],
            Client::Js => vec!["node".into(), path],
        })
    }

    /// The version the client reports, for the failure messages and the README's table.
    fn env(self) -> Vec<(String, String)> {
        match self {
            Client::CliV2 => vec![(
                "SCENARIO_AWS".into(),
                std::env::var("SIGWARD_CLI_V2").unwrap_or_default(),
            )],
            _ => Vec::new(),
        }
    }
}

/// The independent verifier, forwarding to moto.
struct Verifier {
    _process: Process,
    url: String,
    log: PathBuf,
}

impl Verifier {
    fn start(dir: &Path, moto: &Moto) -> Verifier {
        let port = free_port();
        let log = dir.join("verifier.jsonl");
        let process = Process(
            Command::new("python3")
                .arg(VERIFIER)
                .args(["--listen", &port.to_string(), "--upstream", &moto.url])
                .arg("--base-key")
                .arg(format!("{}:{}", moto.base_key.0, moto.base_key.1))
                .arg("--log")
                .arg(&log)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("verifier.err")).expect("log"))
                .spawn()
                .expect("start sigv4-verifier"),
        );
        assert!(
            eventually(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "sigv4-verifier did not start: {}",
            std::fs::read_to_string(dir.join("verifier.err")).unwrap_or_default()
        );
        Verifier {
            _process: process,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("verifier line"))
            .collect()
    }
}

/// moto, the verifier in front of it, and sigward forwarding to the verifier; the agent
/// `claude` (static keys) and the issued agent `bot`, both in prod and staging.
struct World {
    dir: tempfile::TempDir,
    _moto: Moto,
    verifier: Verifier,
    sigward: Sigward,
    config: PathBuf,
    credentials_file: PathBuf,
    aws_config: PathBuf,
}

fn world(venv: &Path) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(venv, dir.path(), &["111111111111", "222222222222"]);
    let verifier = Verifier::start(dir.path(), &moto);
    let (listen, credentials) = (free_port(), free_port());
    let text = crate::e2e::config(
        dir.path(),
        &moto.base_key,
        &verifier.url,
        r#"{ module = "builtin:no-secrets" }"#,
    )
    .replace(
        "listen = \"127.0.0.1:0\"\nendpoint_listen",
        &format!(
            "listen = \"127.0.0.1:{listen}\"\ncredentials_listen = \"127.0.0.1:{credentials}\"\nendpoint_listen"
        ),
    );
    assert!(text.contains("credentials_listen"), "{text}");
    let config = dir.path().join("sigward.toml");
    std::fs::write(&config, &text).expect("config");
    let config_arg = config.display().to_string();
    let sigward_cmd = |args: &[&str]| -> Output {
        Command::new(SIGWARD)
            .args(args)
            .args(["--config", &config_arg])
            .output()
            .expect("run sigward")
    };
    ok(
        &sigward_cmd(&[
            "agent",
            "add",
            "bot",
            "--account",
            "prod",
            "--account",
            "staging",
        ]),
        "agent add",
    );
    let aws_config = dir.path().join("aws-config");
    ok(
        &sigward_cmd(&[
            "profile",
            "install",
            "--agent",
            "bot",
            "--file",
            &aws_config.display().to_string(),
        ]),
        "profile install",
    );
    let sigward = Sigward::start(dir.path(), &text);
    let credentials_file = dir.path().join("credentials");
    std::fs::write(
        &credentials_file,
        format!(
            "[a]\naws_access_key_id = AKIA111111111111XXXX\naws_secret_access_key = {AGENT_SECRET}\naws_account_id = 111111111111\n\
             [b]\naws_access_key_id = AKIA222222222222XXXX\naws_secret_access_key = {AGENT_SECRET}\n\
             [wrong]\naws_access_key_id = AKIA111111111111XXXX\naws_secret_access_key = not-the-secret\n"
        ),
    )
    .expect("credentials");
    World {
        dir,
        _moto: moto,
        verifier,
        sigward,
        config,
        credentials_file,
        aws_config,
    }
}

/// How the agent reaches sigward and gets its keys.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// HTTPS_PROXY + AWS_CA_BUNDLE, static keys (profiles a, b, wrong).
    Proxy,
    /// The direct listener as the endpoint URL, static keys.
    Direct,
    /// Issued keys through the credential-process profiles `sigward profile install` wrote.
    Process,
    /// Issued keys from the ECS container endpoint, one account per run.
    Ecs(&'static str),
}

/// Run `client`'s scenario `steps` in `mode`; the JSON lines it printed, by step.
fn run(
    world: &World,
    client: Client,
    mode: Mode,
    steps: &str,
) -> BTreeMap<String, Vec<serde_json::Value>> {
    let program = client.program().expect("checked by the caller");
    let name = format!(
        "{}-{}",
        match mode {
            Mode::Proxy => "proxy".to_string(),
            Mode::Direct => "direct".to_string(),
            Mode::Process => "process".to_string(),
            Mode::Ecs(account) => format!("ecs-{account}"),
        },
        client.label()
    );
    let lang = if client == Client::Js {
        "node"
    } else {
        "shell"
    };
    let config = world.config.display().to_string();
    // The agent's shell: `eval "$(sigward env …)"` for issued keys, as an operator would
    // hand it out; the static-key modes set the same variables by hand.
    let env_command = match mode {
        Mode::Process => format!(
            "eval \"$('{SIGWARD}' env --agent bot --account prod --delivery process --lang {lang} --file '{}' --config '{config}')\"",
            world.aws_config.display()
        ),
        Mode::Ecs(account) => format!(
            "eval \"$('{SIGWARD}' env --agent bot --account {account} --delivery ecs --lang {lang} --config '{config}')\""
        ),
        Mode::Proxy | Mode::Direct => String::new(),
    };
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("set -e; {env_command}\nexec \"$@\""))
        .arg("agent-shell")
        .args(&program);
    clean_aws_env(&mut command);
    command
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_PAGER", "")
        .env("SCENARIO_STEPS", steps)
        .env("SCENARIO_NAME", &name)
        .env("SCENARIO_WRONG", "wrong")
        .envs(client.env());
    match mode {
        Mode::Proxy | Mode::Direct => {
            let ca = world.sigward.ca.display().to_string();
            command
                .env("AWS_SHARED_CREDENTIALS_FILE", &world.credentials_file)
                .env("AWS_CONFIG_FILE", world.dir.path().join("no-aws-config"))
                .env("SCENARIO_PROFILES", "a,b")
                .env("AWS_CA_BUNDLE", &ca)
                .env("NODE_EXTRA_CA_CERTS", &ca);
            if let Mode::Direct = mode {
                let url = world.sigward.endpoint_url.clone().expect("endpoint_listen");
                command.env("SCENARIO_ENDPOINT", url);
            } else {
                command.env("HTTPS_PROXY", &world.sigward.proxy);
            }
        }
        Mode::Process => {
            command
                .env("AWS_SHARED_CREDENTIALS_FILE", world.dir.path().join("none"))
                .env("SCENARIO_PROFILES", "bot-prod,bot-staging");
        }
        Mode::Ecs(_) => {
            command
                .env("AWS_SHARED_CREDENTIALS_FILE", world.dir.path().join("none"))
                .env("AWS_CONFIG_FILE", world.dir.path().join("none"))
                .env("SCENARIO_PROFILES", "");
        }
    }
    let output = command.output().expect("run the scenario");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let what = format!("{client:?} {mode:?} ({steps})");
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}\nsigward's log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        tail(&world.sigward.log(), 30),
    );
    let mut by_step: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in stdout.lines().filter(|l| l.starts_with('{')) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"));
        let step = value["step"].as_str().unwrap_or_default().to_string();
        by_step.entry(step).or_default().push(value);
    }
    for step in steps.split(',') {
        assert!(
            by_step.contains_key(step),
            "{what}: no result for {step}:\n{stdout}"
        );
    }
    by_step
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What every mode's results must show.
fn judge(
    client: Client,
    mode: Mode,
    results: &BTreeMap<String, Vec<serde_json::Value>>,
    agent: &str,
    accounts: &[&str],
) {
    let what = format!("{client:?} {mode:?}");
    if let Some(sts) = results.get("sts") {
        let seen: Vec<&str> = sts.iter().filter_map(|v| v["account"].as_str()).collect();
        assert_eq!(seen, accounts, "{what}: {sts:?}");
        for who in sts {
            let arn = who["arn"].as_str().unwrap_or_default();
            assert!(
                arn.contains(&format!(":assumed-role/sigward-gateway/sigward-{agent}")),
                "{what}: {arn}"
            );
        }
    }
    if let Some(s3) = results.get("s3") {
        let sizes: Vec<u64> = s3.iter().filter_map(|v| v["size"].as_u64()).collect();
        assert_eq!(sizes[..2], [1000, 20 << 20], "{what}: {s3:?}");
        assert!(
            s3.iter().all(|v| v["identical"] == true),
            "{what}: not byte-identical: {s3:?}"
        );
    }
    if let Some(presign) = results.get("presign") {
        let p = &presign[0];
        assert_eq!(p["get_status"], 200, "{what}: {p}");
        assert_eq!(p["identical"], true, "{what}: {p}");
        if client != Client::CliV2 {
            assert_eq!(p["put_status"], 200, "{what}: {p}");
            assert_eq!(p["put_url_signed"], true, "{what}: {p}");
        }
    }
    if let Some(ddb) = results.get("dynamodb") {
        assert_eq!(
            ddb[0]["value"],
            format!("from {}", client.label()),
            "{what}: {ddb:?}"
        );
    }
    if let Some(sqs) = results.get("sqs") {
        assert_eq!(
            sqs[0]["body"],
            format!("hello from {}", client.label()),
            "{what}: {sqs:?}"
        );
    }
    if let Some(deny) = results.get("deny") {
        let d = &deny[0];
        assert_eq!(d["code"], "AccessDenied", "{what}: {d}");
        let message = d["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(
                "denied by policy no-secrets: secretsmanager:GetSecretValue in account prod (111111111111)"
            ),
            "{what}: the client did not show sigward's message: {d}"
        );
    }
    if let Some(wrong) = results.get("wrong") {
        assert_eq!(
            wrong[0]["code"], "SignatureDoesNotMatch",
            "{what}: {wrong:?}"
        );
    }
}

const ALL: &str = "sts,s3,presign,dynamodb,sqs,deny,wrong";
const ISSUED: &str = "sts,s3,presign,dynamodb,sqs,deny";

fn scenario(client: Client) {
    let Some(venv) = venv() else { return };
    if client.program().is_none() {
        return;
    }
    let world = world(&venv);
    for (mode, steps) in [
        (Mode::Proxy, ALL),
        (Mode::Direct, ALL),
        (Mode::Process, ISSUED),
    ] {
        let (agent, accounts) = match mode {
            Mode::Process => ("bot", &["111111111111", "222222222222"][..]),
            _ => ("claude", &["111111111111", "222222222222"][..]),
        };
        let results = run(&world, client, mode, steps);
        judge(client, mode, &results, agent, accounts);
    }
    // The container endpoint serves one account per URI: the whole scenario in prod, and
    // STS in staging.
    let results = run(&world, client, Mode::Ecs("prod"), ISSUED);
    judge(
        client,
        Mode::Ecs("prod"),
        &results,
        "bot",
        &["111111111111"],
    );
    let results = run(&world, client, Mode::Ecs("staging"), "sts");
    judge(
        client,
        Mode::Ecs("staging"),
        &results,
        "bot",
        &["222222222222"],
    );

    // Everything sigward forwarded passed the independent verifier, signed by keys moto
    // issued (the verifier knows no other), presigned URLs and uploads among them.
    let records = world.verifier.records();
    let refused: Vec<_> = records.iter().filter(|r| r["ok"] != true).collect();
    assert!(
        refused.is_empty(),
        "{client:?}: the verifier refused what sigward forwarded: {refused:#?}"
    );
    let kinds: BTreeMap<String, usize> = records.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["kind"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
        m
    });
    eprintln!(
        "clients: {client:?}: {} requests verified: {kinds:?}",
        records.len()
    );
    // Four presign runs fetch a GET each (the SDKs a PUT too).
    let presigned = kinds.get("presigned").copied().unwrap_or(0);
    let expected = if client == Client::CliV2 { 4 } else { 8 };
    assert_eq!(presigned, expected, "{client:?}: {kinds:?}");
    if client == Client::Js {
        // With the account id known (aws_account_id in profile a), it reached DynamoDB at
        // the account-based endpoint, as current SDKs do.
        let hosts: Vec<&str> = records.iter().filter_map(|r| r["host"].as_str()).collect();
        assert!(
            hosts.contains(&"111111111111.ddb.us-east-1.amazonaws.com"),
            "{hosts:?}"
        );
        // Its streamed uploads (one per run but the last) reached moto aws-chunked, their
        // CRC32 trailers checked.
        let trailer = kinds
            .get("chunked:STREAMING-UNSIGNED-PAYLOAD-TRAILER")
            .copied()
            .unwrap_or(0);
        assert_eq!(trailer, 4, "{client:?}: {kinds:?}");
    }
    // Neither an agent's signature nor an unsigned request reached moto.
    let log = world.sigward.log();
    assert!(!log.contains(AGENT_SECRET), "a secret in the log");
}

#[test]
fn the_aws_cli_v2_through_sigward() {
    scenario(Client::CliV2);
}

#[test]
fn the_go_sdk_v2_through_sigward() {
    scenario(Client::Go);
}

#[test]
fn the_javascript_sdk_v3_through_sigward() {
    scenario(Client::Js);
}

/// The verifier is a real check: a request signed with the agent's own key (what sigward
/// must never forward), an unsigned one and a body that does not match its hash are
/// refused, and AWS's documented example signatures verify.
#[test]
fn the_independent_verifier_refuses_what_aws_would() {
    let Some(venv) = venv() else { return };
    let selftest = Command::new("python3")
        .args([VERIFIER, "--self-test"])
        .output()
        .expect("run the verifier's self-test");
    let said = ok(&selftest, "sigv4-verifier --self-test");
    assert!(said.contains("self-test: ok"), "{said}");

    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, dir.path(), &["111111111111"]);
    let verifier = Verifier::start(dir.path(), &moto);
    let script = format!(
        r#"
import boto3, botocore.config, sys
url = "{url}"
def client(key, secret, service="sts"):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
        aws_access_key_id=key, aws_secret_access_key=secret,
        config=botocore.config.Config(retries={{"max_attempts": 1}}))
for key, secret in [("{base}", "{base_secret}"), ("AKIA111111111111XXXX", "agent-secret")]:
    try:
        print(client(key, secret).get_caller_identity()["Arn"])
    except Exception as e:
        print("refused:", e)
s3 = client("{base}", "{base_secret}", "s3")
s3.meta.events.register("before-send.s3.PutObject",
    lambda request, **_: setattr(request, "body", b"not what was signed"))
try:
    s3.create_bucket(Bucket="verifier-check")
    s3.put_object(Bucket="verifier-check", Key="k", Body=b"signed body")
    print("tampered body accepted")
except Exception as e:
    print("refused:", e)
"#,
        url = verifier.url,
        base = moto.base_key.0,
        base_secret = moto.base_key.1,
    );
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", &script])
        .output()
        .expect("python");
    let said = ok(&out, "verifier probes");
    let lines: Vec<&str> = said.lines().collect();
    assert!(lines[0].contains(":user/"), "{said}");
    assert!(
        lines[1].contains("VerifierRejected")
            && lines[1].contains("neither the base key nor one AWS issued"),
        "{said}"
    );
    assert!(
        lines[2].contains("VerifierRejected") && lines[2].contains("does not match the body"),
        "{said}"
    );
    let (status, body) = crate::support::http(
        verifier.url.trim_start_matches("http://"),
        "GET",
        "/",
        "",
        "",
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("an unsigned request"), "{body}");
}

//! End to end with real parts: the aws CLI and boto3 (from the test virtualenv) →
//! sigward (`sigward serve`, real TLS through HTTPS_PROXY, real policy components) →
//! moto's server with signature checking on, so a badly re-signed request fails.
//!
//! moto does not check payload hashes or chunk signatures; `verifier.rs` checks those.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::support::eventually;

pub const AGENT_SECRET: &str = "agent-secret-for-tests";
const ROLE: &str = "sigward-gateway";

/// The test virtualenv (`scripts/python-env`), or `None` (and a notice) outside
/// `scripts/test`; CI requires it.
pub fn venv() -> Option<PathBuf> {
    match std::env::var_os("SIGWARD_VENV").map(PathBuf::from) {
        Some(v) if v.join("bin/moto_server").is_file() => Some(v),
        _ if std::env::var_os("SIGWARD_REQUIRE_MODEL_CHECK").is_some() => {
            panic!("SIGWARD_VENV has no moto_server: run scripts/test (it installs the venv)")
        }
        _ => {
            eprintln!("e2e: skipped (no SIGWARD_VENV with moto; scripts/test sets it up)");
            None
        }
    }
}

/// A child process killed when the test ends, however it ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// moto's server on 127.0.0.1, seeded with a base user and `ROLE` in each account,
/// signature checking on.
pub struct Moto {
    _process: Process,
    pub url: String,
    pub log: PathBuf,
    pub base_key: (String, String),
}

impl Moto {
    pub fn start(venv: &Path, dir: &Path, accounts: &[&str]) -> Moto {
        let port = free_port();
        let log = dir.join("moto.log");
        let process = Process(
            Command::new(venv.join("bin/moto_server"))
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(std::fs::File::create(dir.join("moto.out")).expect("log"))
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("start moto_server"),
        );
        let url = format!("http://127.0.0.1:{port}");
        assert!(
            eventually(Duration::from_secs(30), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "moto_server did not start"
        );
        let seed = Command::new(venv.join("bin/python"))
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/e2e/seed-moto"
            ))
            .arg(&url)
            .arg(ROLE)
            .args(accounts)
            .output()
            .expect("run seed-moto");
        assert!(
            seed.status.success(),
            "seed-moto: {}",
            String::from_utf8_lossy(&seed.stderr)
        );
        let key: serde_json::Value = serde_json::from_slice(&seed.stdout).expect("seed output");
        Moto {
            _process: process,
            url,
            log,
            base_key: (
                key["access_key_id"].as_str().expect("id").into(),
                key["secret_access_key"].as_str().expect("secret").into(),
            ),
        }
    }

    /// How many requests moto has answered (its access log).
    pub fn requests_seen(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("HTTP/1.1\""))
            .count()
    }
}

/// `sigward serve --config …`, with what it printed for agents.
pub struct Sigward {
    _process: Process,
    pub proxy: String,
    pub ca: PathBuf,
    pub endpoint_url: Option<String>,
    /// The admin listener's URL, with `[admin]`.
    pub admin: Option<String>,
    pub log: PathBuf,
}

impl Sigward {
    pub fn start(dir: &Path, config: &str) -> Sigward {
        Self::start_in_shell(dir, config, "")
    }

    /// [`Sigward::start`] with `shell` run first in the same process (`ulimit …`).
    pub fn start_in_shell(dir: &Path, config: &str, shell: &str) -> Sigward {
        let path = dir.join("sigward.toml");
        std::fs::write(&path, config).expect("write config");
        let log = dir.join("sigward.log");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("{shell}\nexec \"$0\" serve --config \"$1\""))
            .arg(env!("CARGO_BIN_EXE_sigward"))
            .arg(&path)
            .env("SIGWARD_LOG", "sigward=info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start sigward");
        let stdout = child.stdout.take().expect("stdout");
        let process = Process(child);
        let mut lines = BufReader::new(stdout).lines();
        let (mut proxy, mut ca, mut endpoint_url, mut admin) = (None, None, None, None);
        while ca.is_none()
            || proxy.is_none()
            || (config.contains("endpoint_listen") && endpoint_url.is_none())
            || (config.contains("[admin]") && admin.is_none())
        {
            let Some(Ok(line)) = lines.next() else {
                panic!(
                    "sigward serve stopped: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            };
            if let Some(v) = line.strip_prefix("HTTPS_PROXY=") {
                proxy = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("AWS_CA_BUNDLE=") {
                ca = Some(PathBuf::from(v));
            } else if let Some(v) = line.strip_prefix("AWS_ENDPOINT_URL=") {
                endpoint_url = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("SIGWARD_ADMIN=") {
                admin = Some(v.to_string());
            }
        }
        Sigward {
            _process: process,
            proxy: proxy.expect("HTTPS_PROXY line"),
            ca: ca.expect("AWS_CA_BUNDLE line"),
            endpoint_url,
            admin,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send `signal` (`TERM`, `INT`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self._process.0.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// Wait at most `within` for the process to exit; its status, if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self._process.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self._process.0.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

pub fn config(dir: &Path, base: &(String, String), upstream: &str, policies: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
endpoint_listen = "127.0.0.1:0"

[state]
dir = "{state}"

[credential.base]
access_key_id = "{id}"
secret_access_key = "{secret}"

[[endpoint]]
name = "e2e"
hosts = ["*.amazonaws.com"]
role = "{ROLE}"
region = "us-east-1"
credential = "base"
accounts = ["111111111111=prod", "222222222222=staging"]
upstream = "{upstream}"
policies = [{policies}]

[[agent]]
name = "claude"
access_key_ids = ["AKIA111111111111XXXX", "AKIA222222222222XXXX"]
secret_access_key = "{AGENT_SECRET}"
"#,
        state = dir.join("state").display(),
        id = base.0,
        secret = base.1,
    )
}

/// An agent's environment: the two lines sigward printed, profiles for two accounts.
pub struct Agent {
    venv: PathBuf,
    env: Vec<(String, String)>,
}

impl Agent {
    pub fn new(venv: &Path, dir: &Path, sigward: &Sigward, secret: &str) -> Agent {
        Self::with_keys(venv, dir, sigward, secret, "XXXX")
    }

    /// An agent whose key ids end in `suffix` (`AKIA<account><suffix>`).
    pub fn with_keys(
        venv: &Path,
        dir: &Path,
        sigward: &Sigward,
        secret: &str,
        suffix: &str,
    ) -> Agent {
        let credentials = dir.join(format!("credentials-{}-{suffix}", secret.len()));
        std::fs::write(
            &credentials,
            format!(
                "[prod]\naws_access_key_id = AKIA111111111111{suffix}\naws_secret_access_key = {secret}\n\
                 [staging]\naws_access_key_id = AKIA222222222222{suffix}\naws_secret_access_key = {secret}\n"
            ),
        )
        .expect("credentials file");
        let empty = dir.join("aws-config");
        std::fs::write(&empty, "").expect("config file");
        let env = [
            ("HTTPS_PROXY", sigward.proxy.clone()),
            ("AWS_CA_BUNDLE", sigward.ca.display().to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                credentials.display().to_string(),
            ),
            ("AWS_CONFIG_FILE", empty.display().to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_RETRY_MODE", "standard".into()),
            ("AWS_MAX_ATTEMPTS", "1".into()),
            ("AWS_PAGER", String::new()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Agent {
            venv: venv.to_path_buf(),
            env,
        }
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.venv.join("bin").join(program));
        clean_aws_env(&mut command);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// `aws --profile PROFILE ARGS…`
    pub fn aws(&self, profile: &str, args: &[&str]) -> Output {
        self.command("aws")
            .args(["--profile", profile])
            .args(args)
            .output()
            .expect("run aws")
    }

    /// `aws --profile PROFILE ARGS…`, started and left running (it may wait for a human).
    pub fn aws_spawn(&self, profile: &str, args: &[&str]) -> std::process::Child {
        self.command("aws")
            .args(["--profile", profile, "--cli-read-timeout", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aws")
    }

    /// Run a boto3 script (`profile` is in its environment as AWS_PROFILE).
    pub fn python(&self, profile: &str, script: &str) -> Output {
        self.command("python")
            .env("AWS_PROFILE", profile)
            .args(["-c", script])
            .output()
            .expect("run python")
    }
}

/// Remove this machine's AWS settings (it points `AWS_CA_BUNDLE` at the system bundle),
/// proxies and CA overrides from a client's environment: each test sets its own.
pub fn clean_aws_env(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("AWS_")
            || name.to_ascii_lowercase().ends_with("_proxy")
            || name == "REQUESTS_CA_BUNDLE"
            || name == "SSL_CERT_FILE"
        {
            command.env_remove(&name);
        }
    }
}

pub fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Deterministic bytes (not all zeros, so corruption would show).
fn content(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn the_aws_cli_and_boto3_through_sigward_to_moto() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, dir.path(), &["111111111111", "222222222222"]);
    let sigward = Sigward::start(
        dir.path(),
        &config(
            dir.path(),
            &moto.base_key,
            &moto.url,
            r#"{ module = "builtin:no-secrets" }"#,
        ),
    );
    let agent = Agent::new(&venv, dir.path(), &sigward, AGENT_SECRET);

    // The key id picks the account; sigward assumed the role there.
    for (profile, account) in [("prod", "111111111111"), ("staging", "222222222222")] {
        let who = json(&ok(
            &agent.aws(profile, &["sts", "get-caller-identity"]),
            "sts",
        ));
        assert_eq!(who["Account"], account, "{profile}: {who}");
        let arn = who["Arn"].as_str().expect("arn");
        assert!(
            arn.contains(&format!(":assumed-role/{ROLE}/sigward-claude")),
            "{profile}: {arn}"
        );
    }

    // S3: a bucket, a small and a 50 MiB (multipart, aws-chunked) file up and down.
    ok(
        &agent.aws("prod", &["s3", "mb", "s3://e2e-bucket"]),
        "s3 mb",
    );
    for (name, len) in [("small.bin", 1000), ("big.bin", 50 << 20)] {
        let up = dir.path().join(name);
        std::fs::write(&up, content(len)).expect("write");
        let key = format!("s3://e2e-bucket/{name}");
        ok(
            &agent.aws("prod", &["s3", "cp", up.to_str().expect("path"), &key]),
            "s3 cp up",
        );
        let down = dir.path().join(format!("{name}.down"));
        ok(
            &agent.aws("prod", &["s3", "cp", &key, down.to_str().expect("path")]),
            "s3 cp down",
        );
        assert!(
            std::fs::read(&down).expect("read") == content(len),
            "{name}: downloaded bytes differ"
        );
    }
    // The bucket is in prod's account, not staging's.
    let listed = ok(&agent.aws("prod", &["s3", "ls"]), "s3 ls");
    assert!(listed.contains("e2e-bucket"), "{listed}");
    let listed = ok(&agent.aws("staging", &["s3", "ls"]), "s3 ls staging");
    assert!(!listed.contains("e2e-bucket"), "{listed}");

    // DynamoDB (JSON protocol).
    ok(
        &agent.aws(
            "prod",
            &[
                "dynamodb",
                "create-table",
                "--table-name",
                "e2e",
                "--attribute-definitions",
                "AttributeName=id,AttributeType=S",
                "--key-schema",
                "AttributeName=id,KeyType=HASH",
                "--billing-mode",
                "PAY_PER_REQUEST",
            ],
        ),
        "create-table",
    );
    ok(
        &agent.aws(
            "prod",
            &[
                "dynamodb",
                "put-item",
                "--table-name",
                "e2e",
                "--item",
                r#"{"id":{"S":"a"},"v":{"S":"hello"}}"#,
            ],
        ),
        "put-item",
    );
    let item = json(&ok(
        &agent.aws(
            "prod",
            &[
                "dynamodb",
                "get-item",
                "--table-name",
                "e2e",
                "--key",
                r#"{"id":{"S":"a"}}"#,
            ],
        ),
        "get-item",
    ));
    assert_eq!(item["Item"]["v"]["S"], "hello");

    // EC2 (its own query protocol).
    let reservations = json(&ok(
        &agent.aws("prod", &["ec2", "describe-instances"]),
        "ec2",
    ));
    assert!(reservations["Reservations"].is_array(), "{reservations}");

    // A policy's deny, in the CLI's words.
    let denied = agent.aws(
        "prod",
        &[
            "secretsmanager",
            "get-secret-value",
            "--secret-id",
            "db-password",
        ],
    );
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("(AccessDenied)")
            && stderr.contains(
                "denied by policy no-secrets: secretsmanager:GetSecretValue in account prod (111111111111)"
            ),
        "{stderr}"
    );

    // boto3, the same way an agent's Python would.
    let script = r#"
import boto3
s3 = boto3.client("s3")
s3.put_object(Bucket="e2e-bucket", Key="boto3.txt", Body=b"from boto3")
print(s3.get_object(Bucket="e2e-bucket", Key="boto3.txt")["Body"].read().decode())
print(boto3.client("sts").get_caller_identity()["Account"])
"#;
    let out = ok(&agent.python("prod", script), "boto3");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["from boto3", "111111111111"]
    );

    // A wrong agent secret: refused by sigward, never seen by moto.
    let before = moto.requests_seen();
    let wrong = Agent::new(&venv, dir.path(), &sigward, "not-the-agent-secret");
    let refused = wrong.aws("prod", &["sts", "get-caller-identity"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("SignatureDoesNotMatch"), "{stderr}");
    let refused = wrong.aws("prod", &["s3", "ls", "s3://e2e-bucket"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("SignatureDoesNotMatch"));
    assert_eq!(moto.requests_seen(), before, "moto saw a refused request");

    // An unknown key id.
    let script = r#"
import boto3, botocore.exceptions
try:
    boto3.client("sts", aws_access_key_id="AKIA333333333333XXXX", aws_secret_access_key="x").get_caller_identity()
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
"#;
    let out = ok(&agent.python("prod", script), "unknown key");
    assert_eq!(out.trim(), "InvalidClientTokenId");

    // A host outside the endpoint's patterns gets no tunnel.
    let proxy = sigward.proxy.trim_start_matches("http://");
    let mut stream = TcpStream::connect(proxy).expect("connect to proxy");
    stream
        .write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n")
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.contains("sigward opens no blind tunnels"),
        "{answer}"
    );
    let cli = agent.aws(
        "prod",
        &[
            "sts",
            "get-caller-identity",
            "--endpoint-url",
            "https://example.com",
        ],
    );
    assert!(!cli.status.success());
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(
        stderr.contains("Failed to connect to proxy URL"),
        "{stderr}"
    );

    // The direct listener (AWS_ENDPOINT_URL): service and region from the scope.
    let endpoint_url = sigward.endpoint_url.clone().expect("endpoint_listen line");
    let direct = agent
        .command("aws")
        .env_remove("HTTPS_PROXY")
        .env("AWS_ENDPOINT_URL", &endpoint_url)
        .args(["--profile", "staging", "sts", "get-caller-identity"])
        .output()
        .expect("aws");
    assert_eq!(json(&ok(&direct, "direct sts"))["Account"], "222222222222");
    // A global service (IAM) both ways: its own host through the tunnel, the
    // partition-wide host from the direct listener. The role in staging can list roles.
    let roles = json(&ok(
        &agent.aws("staging", &["iam", "list-roles"]),
        "iam via proxy",
    ));
    assert!(roles["Roles"].to_string().contains(ROLE), "{roles}");
    let direct = agent
        .command("aws")
        .env_remove("HTTPS_PROXY")
        .env("AWS_ENDPOINT_URL", &endpoint_url)
        .args(["--profile", "staging", "iam", "list-roles"])
        .output()
        .expect("aws");
    assert!(ok(&direct, "direct iam").contains(ROLE));

    // One record line per request, naming agent, call and verdict.
    let log = sigward.log();
    assert!(
        log.lines().any(|l| l.contains("agent=claude")
            && l.contains("secretsmanager:GetSecretValue")
            && l.contains("verdict=deny")),
        "{log}"
    );
    assert!(
        !log.contains(AGENT_SECRET) && !log.contains(&moto.base_key.1),
        "a secret in the log"
    );
}

/// STS refuses the base credential: the agent gets a 503 naming account and role, and
/// nothing is forwarded.
#[test]
fn an_sts_failure_is_a_503_naming_the_account_and_role() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, dir.path(), &["111111111111"]);
    let wrong_base = (moto.base_key.0.clone(), "not-the-base-secret".to_string());
    let sigward = Sigward::start(
        dir.path(),
        &config(
            dir.path(),
            &wrong_base,
            &moto.url,
            r#"{ module = "builtin:no-secrets" }"#,
        ),
    );
    let agent = Agent::new(&venv, dir.path(), &sigward, AGENT_SECRET);
    let script = r#"
import boto3, botocore.exceptions
try:
    boto3.client("s3").list_buckets()
except botocore.exceptions.ClientError as e:
    print(e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"])
    print(e.response["Error"]["Message"])
"#;
    let out = ok(&agent.python("prod", script), "boto3");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("503 ServiceUnavailable"), "{out}");
    let message = lines.next().unwrap_or_default();
    assert!(
        message.contains("account prod (111111111111)")
            && message.contains(&format!("arn:aws:iam::111111111111:role/{ROLE}")),
        "{message}"
    );
}

/// Each agent is its own session at AWS: sigward assumes the role per (account, agent),
/// names the session after the agent and, when configured, sets its source identity and
/// session tags — so the target account sees which agent made each call.
#[test]
fn each_agent_is_its_own_session_at_aws() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, dir.path(), &["111111111111", "222222222222"]);
    let text = config(
        dir.path(),
        &moto.base_key,
        &moto.url,
        r#"{ module = "builtin:no-secrets" }"#,
    )
    .replace(
        "policies = [",
        "source_identity = \"{agent}\"\ntags = { agent = \"{agent}\", endpoint = \"{endpoint}\" }\npolicies = [",
    )
    + "\n[[agent]]\nname = \"codex\"\naccess_key_ids = [\"AKIA111111111111YYYY\", \"AKIA222222222222YYYY\"]\nsecret_access_key = \"codex-secret\"\n";
    let sigward = Sigward::start(dir.path(), &text);
    let claude = Agent::new(&venv, dir.path(), &sigward, AGENT_SECRET);
    let codex = Agent::with_keys(&venv, dir.path(), &sigward, "codex-secret", "YYYY");
    for _ in 0..2 {
        for (agent, name) in [(&claude, "claude"), (&codex, "codex")] {
            for (profile, account) in [("prod", "111111111111"), ("staging", "222222222222")] {
                let who = json(&ok(
                    &agent.aws(profile, &["sts", "get-caller-identity"]),
                    "sts",
                ));
                assert_eq!(who["Account"], account, "{name} {profile}: {who}");
                let arn = who["Arn"].as_str().expect("arn");
                assert!(
                    arn.ends_with(&format!(":assumed-role/{ROLE}/sigward-{name}")),
                    "{name} {profile}: {arn}"
                );
            }
        }
    }
    // 2 agents × 2 accounts: four AssumeRole calls for the eight requests.
    let assumed = sigward.log().matches("assumed role").count();
    assert_eq!(assumed, 4, "{}", sigward.log());
}

//! More than one sigward sharing state through PostgreSQL (`[cluster]`), with real parts:
//! Debian's PostgreSQL (a server of each test's own, started here on 127.0.0.1 with
//! password authentication, so a test may restart it), two `sigward serve` replicas,
//! moto with signature checking on, the aws CLI and boto3 as agents.
//!
//! - an approval held on replica A is listed and approved through replica B's admin API,
//!   and another through the `sigward approvals` CLI pointed at B;
//! - a key issued through A works on B; a revocation through B is refused on A within 1 s;
//! - every replica's audit chain reaches the database; `audit verify --database` checks
//!   them all, and finds a record edited in the database;
//! - kill -9 of a replica holding an approval: the approval is abandoned, not pending;
//! - the database stopped under load: config agents keep being served, issued keys are
//!   refused after the grace, and both recover when it is back, the audit rows caught up;
//! - migrations from an empty database and from the previous version; `sigward check`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::approvals::{TOKEN, admin, approval_config, pending};
use crate::e2e::{AGENT_SECRET, Agent, Moto, Sigward, clean_aws_env, free_port, ok, venv};
use crate::support::eventually;

const SIGWARD: &str = env!("CARGO_BIN_EXE_sigward");

use crate::delivery::sigward;

/// A PostgreSQL server of this test's own.
struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    password_file: PathBuf,
    password: String,
    as_postgres: bool,
}

impl Postgres {
    /// `None` outside `scripts/test` (CI requires it): `scripts/postgres-env` installs it.
    fn start() -> Option<Postgres> {
        Self::start_with(false)
    }

    /// With `tls`, the server takes TLS connections only (a certificate for 127.0.0.1 from
    /// a CA minted here, in `ca.pem` beside the data): `hostssl` in, `hostnossl` rejected.
    fn start_with(tls: bool) -> Option<Postgres> {
        let Some(bin) = std::env::var_os("SIGWARD_TEST_POSTGRES_BIN").map(PathBuf::from) else {
            assert!(
                std::env::var_os("SIGWARD_REQUIRE_MODEL_CHECK").is_none(),
                "SIGWARD_TEST_POSTGRES_BIN is not set: run scripts/test (scripts/postgres-env installs PostgreSQL)"
            );
            eprintln!("cluster: skipped (no SIGWARD_TEST_POSTGRES_BIN; scripts/test sets it)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        // initdb refuses root: as root, the server runs as the postgres user.
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        let password = format!("pw-{}", free_port());
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, format!("{password}\n")).expect("password file");
        if as_postgres {
            for path in [dir.path(), data.as_path(), password_file.as_path()] {
                let status = Command::new("chown")
                    .args(["postgres:", &path.display().to_string()])
                    .status()
                    .expect("chown");
                assert!(status.success(), "chown {}", path.display());
            }
        }
        let pg = Postgres {
            _dir: dir,
            data,
            bin,
            port: free_port(),
            password_file,
            password,
            as_postgres,
        };
        let initdb = pg.run(
            "initdb",
            &[
                "-D",
                &pg.data.display().to_string(),
                "-U",
                "postgres",
                &format!("--pwfile={}", pg.password_file.display()),
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            initdb.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        if tls {
            pg.serve_tls();
        }
        pg.up();
        Some(pg)
    }

    fn ca_pem(&self) -> PathBuf {
        self._dir.path().join("ca.pem")
    }

    fn serve_tls(&self) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "cluster test CA");
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("leaf");
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = params.signed_by(&key, &issuer).expect("leaf cert");
        std::fs::write(self.ca_pem(), ca.pem()).expect("ca.pem");
        let (cert_file, key_file) = (self.data.join("server.crt"), self.data.join("server.key"));
        std::fs::write(&cert_file, leaf.pem()).expect("server.crt");
        std::fs::write(&key_file, key.serialize_pem()).expect("server.key");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(
            self.data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("pg_hba.conf");
        let mut conf = std::fs::read_to_string(self.data.join("postgresql.conf")).expect("conf");
        conf.push_str("\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(self.data.join("postgresql.conf"), conf).expect("conf");
        if self.as_postgres {
            for file in [&cert_file, &key_file] {
                let status = Command::new("chown")
                    .args(["postgres:", &file.display().to_string()])
                    .status()
                    .expect("chown");
                assert!(status.success());
            }
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program).display().to_string();
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &program]);
            c
        } else {
            Command::new(&program)
        };
        command
            .args(args)
            .output()
            .expect("run a PostgreSQL program")
    }

    /// Start the server (again) and wait until it answers.
    fn up(&self) {
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-l",
                &self.data.join("server.log").display().to_string(),
                "-w",
                "-t",
                "60",
                "-o",
                &format!(
                    "-h 127.0.0.1 -p {} -k {} -c fsync=off",
                    self.port,
                    self.data.display()
                ),
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
        );
    }

    /// Stop the server at once (connections dropped).
    fn down(&self) {
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        assert!(out.status.success(), "pg_ctl stop");
    }

    /// `psql -At -c SQL` on `database` as the superuser; its output.
    fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", &self.password)
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-m",
                "immediate",
                "stop",
            ],
        );
    }
}

const POLICIES: &str = r#"{ module = "builtin:read-only", settings = { approvers = ["oncall"] } }, { module = "builtin:no-secrets" }"#;

/// Replica `name`'s folder, config and running process, sharing `database`.
fn replica(
    root: &Path,
    name: &str,
    moto: &Moto,
    pg: &Postgres,
    database: &str,
    copy_secrets_from: Option<&Path>,
    approval_timeout: &str,
) -> (PathBuf, Sigward) {
    let text = replica_config(
        root,
        name,
        moto,
        pg,
        database,
        copy_secrets_from,
        approval_timeout,
        "",
    );
    let dir = root.join(name);
    let process = Sigward::start(&dir, &text);
    (dir, process)
}

/// Replica `name`'s config (its folder made, secrets copied in if asked); `cluster_extra`
/// is added to its `[cluster]`.
#[allow(clippy::too_many_arguments)]
fn replica_config(
    root: &Path,
    name: &str,
    moto: &Moto,
    pg: &Postgres,
    database: &str,
    copy_secrets_from: Option<&Path>,
    approval_timeout: &str,
    cluster_extra: &str,
) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("state")).expect("replica dir");
    // The CA and the keyring issued keys derive from: the same files on every replica.
    if let Some(from) = copy_secrets_from {
        for file in ["ca.pem", "ca.key", "agents.key"] {
            std::fs::copy(from.join("state").join(file), dir.join("state").join(file))
                .unwrap_or_else(|e| panic!("copy {file}: {e}"));
        }
    }
    approval_config(
        &dir,
        moto,
        POLICIES,
        &format!("approval_timeout = \"{approval_timeout}\""),
        &format!(
            "\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n[audit]\npath = \"{audit}\"\n\n\
             [cluster]\ndatabase = \"{database}\"\npassword_file = \"{password}\"\nreplica = \"{name}\"\ngrace = \"2s\"\n{cluster_extra}\n",
            audit = dir.join("audit.jsonl").display(),
            password = pg.password_file.display(),
        ),
    )
}

/// The aws CLI with an issued key (as `sigward credentials` printed it) through `via`.
fn with_key(venv: &Path, via: &Sigward, key: &serde_json::Value, args: &[&str]) -> Output {
    crate::delivery::with_static_key(venv, &via.proxy, &via.ca, key, args)
}

fn config_arg(dir: &Path) -> String {
    dir.join("sigward.toml").display().to_string()
}

/// `sigward agent add bot --account prod` with replica `dir`'s config.
fn add_bot(dir: &Path) {
    ok(
        &sigward(&[
            "agent",
            "add",
            "bot",
            "--account",
            "prod",
            "--config",
            &config_arg(dir),
        ]),
        "agent add",
    );
}

fn issue_key(dir: &Path) -> serde_json::Value {
    let out = ok(
        &sigward(&[
            "credentials",
            "--agent",
            "bot",
            "--account",
            "prod",
            "--config",
            &config_arg(dir),
        ]),
        "sigward credentials",
    );
    serde_json::from_str(&out).expect("credential_process JSON")
}

/// A call `builtin:read-only` holds for a human.
const RUN_INSTANCES: &[&str] = &[
    "ec2",
    "run-instances",
    "--image-id",
    "ami-12c6146b",
    "--count",
    "1",
    "--instance-type",
    "t2.micro",
];

fn run_instances(agent: &Agent) -> std::process::Child {
    agent.aws_spawn("prod", RUN_INSTANCES)
}

/// Lines in a replica's audit file, and its rows in the database.
fn audit_counts(pg: &Postgres, database: &str, dir: &Path, name: &str) -> (usize, usize) {
    let file = std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .count();
    let rows: usize = pg
        .psql(
            database,
            &format!("SELECT count(*) FROM audit WHERE replica = '{name}'"),
        )
        .parse()
        .expect("count");
    (file, rows)
}

/// Replica `name`'s rows in the database catch up with its file (more than its first few
/// lines), and `audit verify --database` finds its chain intact.
fn caught_up_and_intact(pg: &Postgres, database: &str, dir: &Path, name: &str) {
    assert!(
        eventually(Duration::from_secs(20), || {
            let (file, rows) = audit_counts(pg, database, dir, name);
            file > 4 && file == rows
        }),
        "replica {name}'s audit rows did not catch up with its file: {:?}",
        audit_counts(pg, database, dir, name)
    );
    let said = ok(
        &sigward(&[
            "audit",
            "verify",
            "--database",
            "--config",
            &config_arg(dir),
        ]),
        "audit verify --database",
    );
    assert!(said.contains(&format!("database:{name}: intact")), "{said}");
}

#[test]
fn replicas_share_approvals_agents_and_the_audit_trail() {
    let Some(venv) = venv() else { return };
    let Some(pg) = Postgres::start() else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, root.path(), &["111111111111", "222222222222"]);
    let database = pg.create_database("sigward_share");
    let (dir_a, a) = replica(root.path(), "a", &moto, &pg, &database, None, "60s");
    let (dir_b, b) = replica(root.path(), "b", &moto, &pg, &database, Some(&dir_a), "60s");
    let (admin_a, admin_b) = (
        a.admin.clone().expect("admin"),
        b.admin.clone().expect("admin"),
    );
    // One CA: the same AWS_CA_BUNDLE works against either replica.
    assert_eq!(
        std::fs::read(&a.ca).expect("ca a"),
        std::fs::read(&b.ca).expect("ca b")
    );
    let agent_a = Agent::new(&venv, &dir_a, &a, AGENT_SECRET);

    // An approval held on A is listed by B (naming A) and approved through B's API.
    let run = run_instances(&agent_a);
    let approval = pending(&admin_b, "ec2:RunInstances");
    assert_eq!(approval["replica"], "a", "{approval}");
    let id = approval["id"].as_str().expect("id").to_string();
    let (status, body) = admin(
        &admin_b,
        "POST",
        &format!("/approvals/{id}/approve"),
        Some(TOKEN),
        r#"{"by": "bob"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let decided = Instant::now();
    let output = run.wait_with_output().expect("wait");
    eprintln!(
        "cluster: the request on A completed {} ms after B's approval",
        decided.elapsed().as_millis()
    );
    let out = ok(&output, "run-instances approved on B");
    assert!(out.contains("InstanceId"), "{out}");
    // A heard of it by notification, not by its once-a-second poll.
    let log = a.log();
    assert!(
        log.lines().any(|l| l.contains("decided on another replica")
            && l.contains(&id)
            && l.contains("via=\"notification\"")),
        "{log}"
    );
    // Decided once: neither replica lists it, nor can it be decided again.
    for url in [&admin_a, &admin_b] {
        let (status, body) = admin(url, "GET", "/approvals", Some(TOKEN), "");
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains(&id), "{body}");
    }
    let (status, _) = admin(
        &admin_a,
        "POST",
        &format!("/approvals/{id}/deny"),
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 404);

    // A second one, denied with the CLI pointed at B: A's agent sees who and why.
    let run = run_instances(&agent_a);
    let approval = pending(&admin_b, "ec2:RunInstances");
    let id = approval["id"].as_str().expect("id");
    ok(
        &sigward(&[
            "approvals",
            "deny",
            id,
            "--admin",
            &admin_b,
            "--token",
            TOKEN,
            "--by",
            "carol",
            "--reason",
            "not today",
        ]),
        "sigward approvals deny via B",
    );
    let output = run.wait_with_output().expect("wait");
    crate::support::refused(
        &output,
        "AccessDenied",
        "denied by carol: not today",
        "deny on B",
    );

    // A key issued through A works on B.
    add_bot(&dir_a);
    let listed = ok(
        &sigward(&["agent", "list", "--config", &config_arg(&dir_b)]),
        "agent list on B",
    );
    assert!(listed.contains("bot"), "{listed}");
    let key = issue_key(&dir_a);
    let who = ok(
        &with_key(&venv, &b, &key, &["sts", "get-caller-identity"]),
        "an issued key on B",
    );
    assert!(
        who.contains("assumed-role/sigward-gateway/sigward-bot"),
        "{who}"
    );

    // Revoked through B, the key is refused on A within a second.
    let ready = root.path().join("ready");
    let revoked = root.path().join("revoked");
    let field = |name: &str| key[name].as_str().unwrap_or_default().to_string();
    let mut probe = Command::new(venv.join("bin/python"));
    clean_aws_env(&mut probe);
    let probe = probe
        .args([
            "-c",
            r#"
import boto3, botocore.config, os, sys, time
sts = boto3.client("sts", config=botocore.config.Config(retries={"max_attempts": 1}))
sts.get_caller_identity()
open(sys.argv[1], "w").write("ready")
while not os.path.exists(sys.argv[2]):
    time.sleep(0.002)
start = time.monotonic()
while time.monotonic() - start < 10:
    try:
        sts.get_caller_identity()
    except Exception as e:
        print(f"{time.monotonic() - start:.3f}", e)
        break
    time.sleep(0.01)
else:
    print("never refused")
"#,
            &ready.display().to_string(),
            &revoked.display().to_string(),
        ])
        .env("HTTPS_PROXY", &a.proxy)
        .env("AWS_CA_BUNDLE", &a.ca)
        .env("AWS_ACCESS_KEY_ID", field("AccessKeyId"))
        .env("AWS_SECRET_ACCESS_KEY", field("SecretAccessKey"))
        .env("AWS_SESSION_TOKEN", field("SessionToken"))
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the probe");
    assert!(
        eventually(Duration::from_secs(30), || ready.exists()),
        "the probe did not start"
    );
    ok(
        &sigward(&["agent", "revoke", "bot", "--config", &config_arg(&dir_b)]),
        "agent revoke on B",
    );
    std::fs::write(&revoked, "").expect("signal");
    let said = ok(&probe.wait_with_output().expect("probe"), "the probe");
    let (seconds, error) = said.trim().split_once(' ').unwrap_or(("", &said));
    let seconds: f64 = seconds.parse().unwrap_or_else(|_| panic!("{said}"));
    eprintln!("cluster: revoked on B, refused on A after {seconds:.3} s");
    assert!(error.contains("InvalidClientTokenId"), "{said}");
    assert!(
        seconds < 1.0,
        "the revocation took {seconds} s to hold on A"
    );

    // Both chains reach the database; audit verify checks every replica's there.
    assert!(
        eventually(Duration::from_secs(20), || {
            let (file_a, rows_a) = audit_counts(&pg, "sigward_share", &dir_a, "a");
            let (file_b, rows_b) = audit_counts(&pg, "sigward_share", &dir_b, "b");
            file_a > 1 && file_b > 1 && file_a == rows_a && file_b == rows_b
        }),
        "the audit rows did not catch up with the files"
    );
    let verified = sigward(&[
        "audit",
        "verify",
        "--database",
        "--config",
        &config_arg(&dir_a),
    ]);
    let said = ok(&verified, "audit verify --database");
    assert!(
        said.contains("database:a: intact") && said.contains("database:b: intact"),
        "{said}"
    );
    let replay = sigward(&[
        "audit",
        "replay",
        "--database",
        "--config",
        &config_arg(&dir_a),
    ]);
    let said = ok(&replay, "audit replay --database");
    assert!(said.contains("0 differences"), "{said}");
    // Every record names its replica.
    assert_eq!(
        pg.psql(
            "sigward_share",
            "SELECT count(*) FROM audit WHERE line NOT LIKE '%\"replica\":\"' || replica || '\"%'"
        ),
        "0"
    );
    // One record edited in the database: found, and named.
    let edited = pg.psql(
        "sigward_share",
        "UPDATE audit SET line = replace(line, '\"genesis\":\"', '\"genesis\":\"0') \
         WHERE replica = 'b' AND seq = 0 RETURNING seq",
    );
    assert!(edited.starts_with("0\n"), "{edited}");
    let verified = sigward(&[
        "audit",
        "verify",
        "--database",
        "--config",
        &config_arg(&dir_a),
    ]);
    assert!(!verified.status.success(), "an edited record passed");
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(
        said.contains("database:a: intact") && said.contains("database:b: line"),
        "{said}"
    );

    // Metrics name the replica.
    let (_, metrics) = admin(&admin_b, "GET", "/metrics", Some(TOKEN), "");
    assert!(metrics.contains("replica=\"b\""), "{metrics}");

    // A replica whose keyring is not the cluster's is refused at start, saying why.
    let dir_c = root.path().join("c");
    std::fs::create_dir_all(dir_c.join("state")).expect("dir");
    std::fs::write(
        dir_c.join("sigward.toml"),
        std::fs::read_to_string(dir_b.join("sigward.toml"))
            .expect("config b")
            .replace(&dir_b.display().to_string(), &dir_c.display().to_string())
            .replace("replica = \"b\"", "replica = \"c\""),
    )
    .expect("config c");
    let started = Command::new("timeout")
        .args(["30", SIGWARD, "serve", "--config", &config_arg(&dir_c)])
        .output()
        .expect("serve c");
    assert!(
        !started.status.success(),
        "a replica with another keyring served"
    );
    let said = String::from_utf8_lossy(&started.stderr);
    assert!(said.contains("copy the same agents.key"), "{said}");
}

#[test]
fn a_dead_replica_and_a_database_that_goes_away() {
    let Some(venv) = venv() else { return };
    let Some(pg) = Postgres::start() else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, root.path(), &["111111111111"]);
    let database = pg.create_database("sigward_faults");
    let (dir_a, mut a) = replica(root.path(), "a", &moto, &pg, &database, None, "60s");
    let (dir_b, b) = replica(root.path(), "b", &moto, &pg, &database, Some(&dir_a), "3s");
    let admin_b = b.admin.clone().expect("admin");

    // kill -9 of the replica holding an approval: abandoned, not pending forever.
    let agent_a = Agent::new(&venv, &dir_a, &a, AGENT_SECRET);
    let mut run = run_instances(&agent_a);
    let approval = pending(&admin_b, "ec2:RunInstances");
    let id = approval["id"].as_str().expect("id").to_string();
    a.signal("KILL");
    assert!(
        a.wait_exit(Duration::from_secs(10)).is_some(),
        "A did not die"
    );
    let _ = run.kill();
    let _ = run.wait();
    assert!(
        eventually(Duration::from_secs(20), || pg.psql(
            "sigward_faults",
            &format!("SELECT status FROM approvals WHERE id = '{id}'")
        ) == "abandoned"),
        "the dead replica's approval was not abandoned"
    );
    let (_, listed) = admin(&admin_b, "GET", "/approvals", Some(TOKEN), "");
    assert!(!listed.contains(&id), "{listed}");
    let (status, _) = admin(
        &admin_b,
        "POST",
        &format!("/approvals/{id}/approve"),
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 404, "an abandoned approval was decided");

    // The database goes away under load.
    add_bot(&dir_b);
    let key = issue_key(&dir_b);
    let agent_b = Agent::new(&venv, &dir_b, &b, AGENT_SECRET);
    ok(
        &with_key(&venv, &b, &key, &["sts", "get-caller-identity"]),
        "issued key before",
    );
    pg.down();
    let stopped = Instant::now();
    // Config agents keep being served (the audit rows wait in memory)…
    for _ in 0..3 {
        ok(
            &agent_b.aws("prod", &["sts", "get-caller-identity"]),
            "a config agent while the database is down",
        );
    }
    // …a call that needs a human is refused: its approval cannot be shared…
    let needs_approval = agent_b.aws("prod", RUN_INSTANCES);
    crate::support::refused(
        &needs_approval,
        "ServiceUnavailable",
        "approvals cannot be shared now",
        "an approval while the database is down",
    );
    // …issued keys are refused once the grace has passed.
    while stopped.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused = with_key(&venv, &b, &key, &["sts", "get-caller-identity"]);
    crate::support::refused(
        &refused,
        "ServiceUnavailable",
        "issued keys cannot be checked now",
        "an issued key while the database is down",
    );
    pg.up();
    assert!(
        eventually(Duration::from_secs(30), || with_key(
            &venv,
            &b,
            &key,
            &["sts", "get-caller-identity"]
        )
        .status
        .success()),
        "issued keys did not recover with the database"
    );
    // What was recorded while the database was away reached it.
    caught_up_and_intact(&pg, "sigward_faults", &dir_b, "b");

    // A timeout is still a deny, decided in the row.
    let waited = run_instances(&agent_b).wait_with_output().expect("wait");
    crate::support::refused(
        &waited,
        "AccessDenied",
        "approval timed out after 3s",
        "an approval nobody decided",
    );
    assert_eq!(
        pg.psql(
            "sigward_faults",
            "SELECT count(*) FROM approvals WHERE replica = 'b' AND status = 'timed_out'"
        ),
        "1"
    );
    let log = b.log();
    assert!(
        !log.contains(&pg.password),
        "the database password in the log"
    );

    // Rows the database lost are sent again from the file when the replica next starts.
    drop(b);
    pg.psql(
        "sigward_faults",
        "DELETE FROM audit WHERE replica = 'b' AND seq > 1",
    );
    let (_, _b) = replica(root.path(), "b", &moto, &pg, &database, None, "3s");
    caught_up_and_intact(&pg, "sigward_faults", &dir_b, "b");
}

#[test]
fn migrations_from_empty_and_from_the_previous_version_and_check() {
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = |database: &str| sigward::config::Cluster {
        database: format!("postgres://postgres@127.0.0.1:{}/{database}", pg.port),
        password: Some(pg.password.clone()),
        replica: "m".into(),
        grace: Duration::from_secs(5),
        ca_file: None,
        secrets_key_file: None,
    };
    use sigward::state::Database;
    use sigward::state::database::SCHEMA_VERSION;

    // From empty to the newest.
    pg.create_database("sigward_empty");
    let version = runtime.block_on(async {
        let db = Database::connect(&cluster("sigward_empty"))
            .await
            .expect("connect");
        assert_eq!(db.schema_version().await.expect("version"), 0);
        db.migrate(None).await.expect("migrate")
    });
    assert_eq!(version, SCHEMA_VERSION);

    // From the previous version, with its data kept.
    pg.create_database("sigward_previous");
    runtime.block_on(async {
        let db = Database::connect(&cluster("sigward_previous"))
            .await
            .expect("connect");
        assert_eq!(
            db.migrate(Some(SCHEMA_VERSION - 1)).await.expect("migrate"),
            SCHEMA_VERSION - 1
        );
    });
    pg.psql(
        "sigward_previous",
        "INSERT INTO agents (id, name, accounts, ttl_seconds, created_at) VALUES ('i1', 'kept', '[\"111111111111\"]', 60, 1)",
    );
    assert_eq!(
        pg.psql("sigward_previous", "SELECT to_regclass('secrets') IS NULL"),
        "t"
    );
    let version = runtime.block_on(async {
        Database::connect(&cluster("sigward_previous"))
            .await
            .expect("connect")
            .migrate(None)
            .await
            .expect("migrate")
    });
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(
        pg.psql("sigward_previous", "SELECT name FROM agents"),
        "kept"
    );
    assert_eq!(
        pg.psql(
            "sigward_previous",
            "SELECT to_regclass('secrets') IS NOT NULL"
        ),
        "t"
    );

    // sigward check: reachable, the schema's version, the user's rights.
    let config = |database: &str, user: &str| {
        let path = dir.path().join(format!("{database}-{user}.toml"));
        std::fs::write(
            &path,
            format!(
                "[state]\ndir = \"{state}\"\n[cluster]\ndatabase = \"postgres://{user}@127.0.0.1:{port}/{database}\"\npassword_file = \"{password}\"\nreplica = \"m\"\n",
                state = dir.path().join("state").display(),
                port = pg.port,
                password = pg.password_file.display(),
            ),
        )
        .expect("config");
        path.display().to_string()
    };
    let said = ok(
        &sigward(&["check", "--config", &config("sigward_previous", "postgres")]),
        "check",
    );
    assert!(said.contains("1 added with `sigward agent add`"), "{said}");
    // A user who may not write sigward's tables.
    pg.psql(
        "sigward_previous",
        &format!(
            "CREATE ROLE reader LOGIN PASSWORD '{}'; GRANT SELECT ON refinery_schema_history TO reader",
            pg.password
        ),
    );
    let checked = sigward(&["check", "--config", &config("sigward_previous", "reader")]);
    assert!(!checked.status.success());
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(
        said.contains("the user lacks") && said.contains("on approvals"),
        "{said}"
    );
    // A schema newer than this build: refused by check and by serve's migration.
    pg.psql(
        "sigward_previous",
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (99, 'future', '', '0')",
    );
    let checked = sigward(&["check", "--config", &config("sigward_previous", "postgres")]);
    assert!(!checked.status.success());
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(said.contains("schema version 99 is newer"), "{said}");
    let refused = runtime.block_on(async {
        Database::connect(&cluster("sigward_previous"))
            .await
            .expect("connect")
            .migrate(None)
            .await
    });
    assert!(
        refused.is_err_and(|e| e.to_string().contains("upgrade sigward")),
        "a newer schema was migrated"
    );
    // A password in the URL is refused by the config, and an unreachable database by check.
    let path = dir.path().join("password-in-url.toml");
    std::fs::write(
        &path,
        "[cluster]\ndatabase = \"postgres://postgres:secret@127.0.0.1:1/x\"\n",
    )
    .expect("config");
    let refused = sigward(&["check", "--config", &path.display().to_string()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("holds a password"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let path = dir.path().join("unreachable.toml");
    std::fs::write(
        &path,
        format!(
            "[state]\ndir = \"{}\"\n[cluster]\ndatabase = \"postgres://postgres@127.0.0.1:{}/x\"\nreplica = \"m\"\n",
            dir.path().join("state").display(),
            free_port()
        ),
    )
    .expect("config");
    let refused = sigward(&["check", "--config", &path.display().to_string()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("cluster.database"),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    // …and serve does not start without its database.
    let served = Command::new("timeout")
        .args([
            "30",
            SIGWARD,
            "serve",
            "--config",
            &path.display().to_string(),
        ])
        .output()
        .expect("serve");
    assert!(!served.status.success(), "{served:?}");
    let said = String::from_utf8_lossy(&served.stderr);
    assert!(
        said.contains("the database postgres://postgres@127.0.0.1:"),
        "{said}"
    );
}

#[test]
fn the_database_over_tls() {
    let Some(pg) = Postgres::start_with(true) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |query: &str, ca: Option<&Path>| {
        let path = dir.path().join("sigward.toml");
        std::fs::write(
            &path,
            format!(
                "[state]\ndir = \"{state}\"\n[cluster]\ndatabase = \"postgres://postgres@127.0.0.1:{port}/postgres{query}\"\n\
                 password_file = \"{password}\"\nreplica = \"t\"\n{ca}",
                state = dir.path().join("state").display(),
                port = pg.port,
                password = pg.password_file.display(),
                ca = ca.map_or(String::new(), |c| format!("ca_file = \"{}\"\n", c.display())),
            ),
        )
        .expect("config");
        sigward(&["check", "--config", &path.display().to_string()])
    };
    // Required and verified against the server's CA: connected.
    let said = ok(
        &check("?sslmode=require", Some(&pg.ca_pem())),
        "check over TLS",
    );
    assert!(said.contains(": ok"), "{said}");
    // The same server not trusted (the web's roots): refused, saying why.
    let refused = check("?sslmode=require", None);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stdout);
    assert!(
        said.contains("cluster.database") && said.contains("certificate"),
        "{said}"
    );
    // TLS off, to a server that takes only TLS: refused.
    let refused = check("?sslmode=disable", Some(&pg.ca_pem()));
    assert!(!refused.status.success());
    // The default (prefer) uses TLS when the server offers it.
    let said = ok(&check("", Some(&pg.ca_pem())), "check, sslmode prefer");
    assert!(said.contains(": ok"), "{said}");
}

#[test]
fn the_ca_and_keyring_sealed_in_the_database() {
    let Some(venv) = venv() else { return };
    let Some(pg) = Postgres::start() else { return };
    let root = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, root.path(), &["111111111111"]);
    let database = pg.create_database("sigward_sealed");
    let key = root.path().join("cluster.key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).expect("key");
    let extra = format!("secrets_key_file = \"{}\"", key.display());
    // Nothing copied between the replicas: only the key file is shared.
    let start = |name: &str, extra: &str| {
        let text = replica_config(root.path(), name, &moto, &pg, &database, None, "60s", extra);
        let dir = root.path().join(name);
        (dir.clone(), Sigward::start(&dir, &text))
    };
    let (dir_a, a) = start("a", &extra);
    let (dir_b, b) = start("b", &extra);
    for file in ["ca.pem", "ca.key", "agents.key"] {
        assert_eq!(
            std::fs::read(dir_a.join("state").join(file)).expect("a"),
            std::fs::read(dir_b.join("state").join(file)).expect("b"),
            "{file} differs"
        );
    }
    assert_eq!(
        std::fs::read(&a.ca).expect("ca"),
        std::fs::read(&b.ca).expect("ca")
    );
    // Sealed: nothing of the CA's key or the keyring is in the database in the clear.
    let ca_key = std::fs::read_to_string(dir_a.join("state/ca.key")).expect("ca.key");
    let body: String = ca_key.lines().nth(1).expect("a line of the key").into();
    assert_eq!(
        pg.psql(
            "sigward_sealed",
            &format!(
                "SELECT count(*) FROM secrets WHERE position(convert_to('{body}', 'UTF8') IN sealed) > 0 \
                 OR position(convert_to('PRIVATE KEY', 'UTF8') IN sealed) > 0"
            )
        ),
        "0"
    );
    assert_eq!(
        pg.psql("sigward_sealed", "SELECT count(*) FROM secrets"),
        "3"
    );
    // A key issued through A works on B.
    add_bot(&dir_a);
    let issued = issue_key(&dir_a);
    let who = ok(
        &with_key(&venv, &b, &issued, &["sts", "get-caller-identity"]),
        "an issued key on B",
    );
    assert!(who.contains("sigward-bot"), "{who}");
    // Another key opens nothing: that replica is refused at start, naming the file.
    let wrong = root.path().join("wrong.key");
    std::fs::write(&wrong, "a5".repeat(32)).expect("key");
    let text = replica_config(
        root.path(),
        "c",
        &moto,
        &pg,
        &database,
        None,
        "60s",
        &format!("secrets_key_file = \"{}\"", wrong.display()),
    );
    let dir_c = root.path().join("c");
    std::fs::write(dir_c.join("sigward.toml"), text).expect("config");
    let served = Command::new("timeout")
        .args(["30", SIGWARD, "serve", "--config", &config_arg(&dir_c)])
        .output()
        .expect("serve c");
    assert!(
        !served.status.success(),
        "a replica with another key served"
    );
    let said = String::from_utf8_lossy(&served.stderr);
    assert!(
        said.contains("does not open the cluster's") && said.contains("wrong.key"),
        "{said}"
    );
}

//! The policy engine against real components: built-in rule tables, the sandbox's
//! limits and isolation, loading errors, and how a set combines verdicts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sigward::policy::set::Entry;
use sigward::policy::{Failure, Limits, LoadError, LoadedPolicy, ModuleRef, PolicySet, Verdict};

use crate::support::{engine, facet, fixture, load, load_fixture, settings};

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn read_only_rule_table_as_a_component() {
    let policy = load("builtin:read-only");
    let allowed = [
        "s3:GetObject",
        "s3:ListBuckets",
        "s3:HeadObject",
        "ec2:DescribeInstances",
        "dynamodb:GetItem",
        "iam:ListRoles",
        "secretsmanager:GetSecretValue",
    ];
    for action in allowed {
        let verdict = policy.evaluate(&settings("{}"), &facet(action), &limits());
        assert_eq!(verdict, Ok(Verdict::Allow), "{action}");
    }
    for action in [
        "ec2:TerminateInstances",
        "s3:PutObject",
        "s3:DeleteObject",
        "dynamodb:PutItem",
        "iam:CreateUser",
    ] {
        let verdict = policy.evaluate(&settings("{}"), &facet(action), &limits());
        assert_eq!(
            verdict,
            Ok(Verdict::Approve {
                approvers: vec!["oncall".into()],
                prompt: format!("in account prod (111111111111): claude wants {action}"),
            }),
            "{action}"
        );
    }
}

#[test]
fn read_only_settings_reach_the_policy() {
    let policy = load("builtin:read-only");
    let mut f = facet("ec2:TerminateInstances");
    f.resources = vec!["arn:aws:ec2:us-east-1:111111111111:instance/i-0abc".into()];
    let verdict = policy.evaluate(&settings(r#"{"approvers":["alice","bob"]}"#), &f, &limits());
    assert_eq!(
        verdict,
        Ok(Verdict::Approve {
            approvers: vec!["alice".into(), "bob".into()],
            prompt: "in account prod (111111111111): claude wants ec2:TerminateInstances on arn:aws:ec2:us-east-1:111111111111:instance/i-0abc".into(),
        })
    );
    let verdict = policy.evaluate(&settings(r#"{"approverz":["alice"]}"#), &f, &limits());
    assert!(
        matches!(&verdict, Ok(Verdict::Deny { reason }) if reason.contains("unknown field `approverz`")),
        "{verdict:?}"
    );
}

#[test]
fn no_secrets_rule_table_as_a_component() {
    let policy = load("builtin:no-secrets");
    let denied = [
        "secretsmanager:GetSecretValue",
        "kms:Decrypt",
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:GetParametersByPath",
        "ssm:GetParameterHistory",
        "lambda:GetFunction",
        "ec2:GetPasswordData",
        "ecr:GetAuthorizationToken",
        "codeartifact:GetAuthorizationToken",
        "sts:GetSessionToken",
        "cognito-identity:GetId",
        "cognito-identity:GetCredentialsForIdentity",
        "cognito-identity:GetOpenIdToken",
    ];
    for action in denied {
        let verdict = policy.evaluate(&settings("{}"), &facet(action), &limits());
        assert_eq!(
            verdict,
            Ok(Verdict::deny(format!(
                "{action} in account prod (111111111111)"
            ))),
            "{action}"
        );
    }
    for action in [
        "lambda:GetFunctionConfiguration",
        "ssm:DescribeParameters",
        "kms:Encrypt",
        "s3:GetObject",
        "sts:GetCallerIdentity",
    ] {
        assert_eq!(
            policy.evaluate(&settings("{}"), &facet(action), &limits()),
            Ok(Verdict::Allow),
            "{action}"
        );
    }
}

/// The built-ins are no_std guests: no WASI imports (std would bring 13, and several
/// microseconds per evaluation), and `settings` only where the policy reads it.
/// A component built against `sigward:policy@0.1.0` (before `authorizations`) loads,
/// sees the facet it was written for, and judges in a set beside 0.2.0 components.
#[test]
fn policies_built_against_the_first_contract_keep_working() {
    let legacy = load_fixture("contract-v01");
    assert_eq!(legacy.contract(), "0.1.0");
    assert_eq!(load("builtin:read-only").contract(), "0.2.0");
    let mut copy = facet("s3:PutObject");
    copy.resources = vec![
        "arn:aws:s3:::open/copy".into(),
        "arn:aws:s3:::vault/secret".into(),
    ];
    copy.authorizations = vec![
        sigward::facet::Authorization::new("s3:PutObject", Some("arn:aws:s3:::open/copy".into())),
        sigward::facet::Authorization::new(
            "s3:GetObject",
            Some("arn:aws:s3:::vault/secret".into()),
        ),
    ];
    assert_eq!(
        legacy.evaluate(&settings(r#"{"k":1}"#), &copy, &limits()),
        Ok(Verdict::deny(
            r#"0.1.0 policy saw s3:PutObject on arn:aws:s3:::open/copy, arn:aws:s3:::vault/secret (settings {"k":1})"#
        ))
    );
    let harmless = facet("s3:GetObject");
    assert_eq!(
        legacy.evaluate(&settings("{}"), &harmless, &limits()),
        Ok(Verdict::Allow)
    );
    // The reused-instance benchmark floor measures it too.
    let samples = sigward::policy::evaluate::reused_instance_samples(
        &legacy,
        &settings("{}"),
        &harmless,
        3,
        64 << 20,
    )
    .expect("reused-instance samples");
    assert_eq!(samples.len(), 3);
}

#[test]
fn builtins_import_nothing_they_do_not_use() {
    let imports = |name: &str| -> Vec<String> {
        load(&format!("builtin:{name}"))
            .imports()
            .into_iter()
            .filter(|i| !i.starts_with("sigward:policy/types"))
            .collect()
    };
    assert_eq!(imports("read-only"), ["settings"]);
    assert_eq!(imports("no-secrets"), Vec::<String>::new());
    // The std fixture shows what the check would catch.
    assert!(
        load_fixture("snoop")
            .imports()
            .iter()
            .any(|i| i.starts_with("wasi:"))
    );
}

/// Evaluate the endless-loop fixture with fuel to spare, so that `deadline` is what stops
/// it: the verdict and how long it took.
fn loop_until_deadline(
    policy: &LoadedPolicy,
    deadline: Duration,
) -> (Result<Verdict, Failure>, Duration) {
    let limits = Limits {
        deadline,
        fuel: u64::MAX / 2,
        ..Limits::default()
    };
    let start = Instant::now();
    let verdict = policy.evaluate(&settings("{}"), &facet("s3:GetObject"), &limits);
    (verdict, start.elapsed())
}

#[test]
fn endless_loop_stops_at_the_deadline() {
    // Long enough that a loaded CI machine still shows the bound, not scheduling noise.
    let deadline = Duration::from_millis(100);
    let (verdict, took) = loop_until_deadline(&load_fixture("endless-loop"), deadline);
    assert_eq!(verdict, Err(Failure::Deadline(deadline)));
    assert!(
        took < 2 * deadline,
        "stopped after {took:?}, more than twice the deadline"
    );
    assert_eq!(
        Failure::Deadline(deadline).to_string(),
        "deadline exceeded after 100 ms"
    );
}

/// The deadline clock only runs while something is being timed: an idle engine's epoch
/// stands still (an idle proxy spends no CPU on it), and an evaluation that starts while
/// it is parked still stops at its deadline.
#[test]
fn deadline_clock_rests_while_idle_and_wakes_for_an_evaluation() {
    let engine = sigward::policy::Engine::new(sigward::policy::engine::EngineOptions::default())
        .expect("engine");
    let policy = engine
        .load(&ModuleRef::parse(
            fixture("endless-loop").to_str().expect("utf-8"),
        ))
        .expect("load");
    // Fifty idle ticks (~50 ms) park it; give a loaded machine ample time.
    std::thread::sleep(Duration::from_secs(1));
    let parked = engine.epoch_ticks();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        engine.epoch_ticks(),
        parked,
        "the epoch advanced with nothing to time"
    );

    let deadline = Duration::from_millis(100);
    let (verdict, took) = loop_until_deadline(&policy, deadline);
    assert_eq!(verdict, Err(Failure::Deadline(deadline)));
    assert!(
        took < 2 * deadline,
        "stopped after {took:?}, more than twice the deadline"
    );
    // A deadline of 100 ms is 100 ticks past the epoch the evaluation started at.
    assert!(
        engine.epoch_ticks() >= parked + 100,
        "the evaluation ran to its deadline without the clock advancing"
    );
}

#[test]
fn endless_loop_stops_when_fuel_runs_out() {
    let policy = load_fixture("endless-loop");
    let limits = Limits {
        deadline: Duration::from_secs(30),
        fuel: 1_000_000,
        ..Limits::default()
    };
    let start = Instant::now();
    let verdict = policy.evaluate(&settings("{}"), &facet("s3:GetObject"), &limits);
    assert_eq!(verdict, Err(Failure::Fuel(1_000_000)));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn memory_bomb_stops_at_the_limit() {
    let policy = load_fixture("memory-bomb");
    for mib in [2, 8, 32] {
        let limits = Limits {
            memory_bytes: mib << 20,
            ..Limits::default()
        };
        let verdict = policy.evaluate(&settings("{}"), &facet("s3:GetObject"), &limits);
        assert_eq!(verdict, Err(Failure::Memory(mib << 20)));
        assert_eq!(
            Failure::Memory(mib << 20).to_string(),
            format!("memory limit of {mib} MiB exceeded")
        );
    }
}

#[test]
fn trap_is_a_failure_naming_the_trap() {
    let verdict = load_fixture("trap").evaluate(&settings("{}"), &facet("s3:GetObject"), &limits());
    assert!(
        matches!(&verdict, Err(Failure::Trap(m)) if m.contains("unreachable")),
        "{verdict:?}"
    );
}

#[test]
fn malformed_verdict_is_a_failure() {
    let verdict =
        load_fixture("bad-verdict").evaluate(&settings("{}"), &facet("s3:GetObject"), &limits());
    assert_eq!(
        verdict,
        Err(Failure::Malformed("approve with no approvers".into()))
    );
}

/// The snoop fixture reports what it could see of the host: `key=value` pairs.
fn snoop(settings_json: &str) -> std::collections::HashMap<String, String> {
    let verdict =
        load_fixture("snoop").evaluate(&settings(settings_json), &facet("s3:GetObject"), &limits());
    let Ok(Verdict::Deny { reason }) = verdict else {
        panic!("snoop: {verdict:?}")
    };
    reason
        .split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn sandbox_hides_files_environment_and_clocks() {
    // SAFETY-free: set in this process so a leak through WASI would be visible.
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test process has an environment to leak"
    );
    let seen = snoop(r#"{"k":1}"#);
    assert_eq!(seen["file"], "err", "a policy read a host file");
    assert_eq!(seen["env"], "0", "a policy saw environment variables");
    assert_eq!(seen["args"], "0");
    assert_eq!(seen["clock"], "0", "the wall clock is frozen at the epoch");
    assert_eq!(seen["monotonic"], "0", "the monotonic clock does not move");
    assert_eq!(
        seen["settings"], r#"{"k":1}"#,
        "settings arrive through the import"
    );
}

#[test]
fn randomness_is_deterministic_so_verdicts_replay() {
    assert_eq!(snoop("{}")["random"], snoop("{}")["random"]);
}

#[test]
fn no_state_survives_between_evaluations() {
    let policy = load_fixture("counter");
    for _ in 0..2_000 {
        assert_eq!(
            policy.evaluate(&settings("{}"), &facet("s3:GetObject"), &limits()),
            Ok(Verdict::deny("calls=1"))
        );
    }
}

#[test]
fn a_component_of_another_world_is_refused() {
    let error = engine()
        .load(&ModuleRef::File(fixture("not-a-policy")))
        .expect_err("must not load");
    assert!(matches!(error, LoadError::NotAPolicy { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("does not implement the sigward:policy world"),
        "{error}"
    );
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let error = engine()
        .load_bytes(ModuleRef::File("garbage.wasm".into()), b"not wasm at all")
        .expect_err("must not load");
    assert!(matches!(error, LoadError::Compile { .. }), "{error}");
    assert!(!error.to_string().contains('\n'), "one-line error: {error}");
}

#[test]
fn unknown_builtin_names_the_known_ones() {
    let error = engine()
        .load(&ModuleRef::parse("builtin:nope"))
        .expect_err("unknown");
    assert_eq!(
        error.to_string(),
        "unknown built-in policy builtin:nope (known: builtin:read-only, builtin:no-secrets, \
         builtin:allowlist, builtin:iam)"
    );
}

#[test]
fn modules_compile_once_per_digest() {
    let engine = engine();
    let first = engine
        .load(&ModuleRef::parse("builtin:read-only"))
        .expect("load");
    let bytes = std::fs::read(crate::support::builtin_file("read-only")).expect("read built file");
    let second = engine
        .load_bytes(ModuleRef::File("copy.wasm".into()), &bytes)
        .expect("load copy");
    assert_eq!(
        first.digest, second.digest,
        "the embedded builtin is the built component"
    );
    assert!(engine.is_compiled(&first.digest));
    let compiled_before = engine.compiled_count();
    engine
        .load(&ModuleRef::parse("builtin:read-only"))
        .expect("load again");
    assert_eq!(
        engine.compiled_count(),
        compiled_before,
        "a known digest is not compiled again"
    );
}

fn set(entries: &[(&str, &str)]) -> PolicySet {
    let entries = entries
        .iter()
        .map(|(module, settings)| Entry {
            policy: load(module),
            settings: (*settings).into(),
        })
        .collect();
    PolicySet::new("test", entries, Limits::default())
}

#[test]
fn deny_beats_approve_beats_allow() {
    let pair = set(&[("builtin:read-only", "{}"), ("builtin:no-secrets", "{}")]);

    let read = pair.judge(&facet("s3:GetObject"));
    assert_eq!(read.verdict, Verdict::Allow);
    assert_eq!(read.evaluations.len(), 2);

    let mutation = pair.judge(&facet("ec2:TerminateInstances"));
    assert!(
        matches!(mutation.verdict, Verdict::Approve { .. }),
        "{mutation:?}"
    );

    let secret = pair.judge(&facet("secretsmanager:GetSecretValue"));
    assert_eq!(
        secret.verdict,
        Verdict::deny(
            "denied by policy no-secrets: secretsmanager:GetSecretValue in account prod (111111111111)"
        )
    );
    // Every verdict carries the digests of the policies that produced it.
    let digests: Vec<_> = secret.digests().cloned().collect();
    assert_eq!(
        digests,
        vec![
            load("builtin:read-only").digest.clone(),
            load("builtin:no-secrets").digest.clone()
        ]
    );

    // A deny after an approve still wins.
    let order = set(&[("builtin:no-secrets", "{}"), ("builtin:read-only", "{}")]);
    let mut kms = facet("kms:Decrypt");
    kms.action = "Decrypt".into(); // not a read verb: read-only alone would approve
    assert!(matches!(order.judge(&kms).verdict, Verdict::Deny { .. }));
}

#[test]
fn approvers_are_merged_in_order() {
    let two = set(&[
        ("builtin:read-only", r#"{"approvers":["alice","oncall"]}"#),
        ("builtin:read-only", r#"{"approvers":["oncall","bob"]}"#),
    ]);
    let judgement = two.judge(&facet("s3:DeleteBucket"));
    assert_eq!(
        judgement.verdict,
        Verdict::Approve {
            approvers: vec!["alice".into(), "oncall".into(), "bob".into()],
            prompt: "in account prod (111111111111): claude wants s3:DeleteBucket".into(),
        }
    );
}

#[test]
fn an_endpoint_without_policies_denies() {
    let empty = PolicySet::new("bare", Vec::new(), Limits::default());
    assert_eq!(
        empty.judge(&facet("s3:GetObject")).verdict,
        Verdict::deny("endpoint bare has no policies, so nothing is allowed")
    );
}

#[test]
fn a_failing_policy_denies_naming_itself() {
    let trap = fixture("trap");
    let with_trap = set(&[
        ("builtin:read-only", "{}"),
        (trap.to_str().expect("utf-8"), "{}"),
    ]);
    let judgement = with_trap.judge(&facet("s3:GetObject"));
    let label = load_fixture("trap").label();
    let Verdict::Deny { reason } = &judgement.verdict else {
        panic!("{judgement:?}")
    };
    assert!(
        reason.starts_with(&format!("policy {label}: trapped:")),
        "{reason}"
    );
    assert_eq!(judgement.evaluations[1].failure, Some("trap"));
}

#[test]
fn a_misbehaving_policy_hurts_only_its_own_endpoint() {
    let looping = fixture("endless-loop");
    let bad = Arc::new(PolicySet::new(
        "bad",
        vec![Entry {
            policy: load(looping.to_str().expect("utf-8")),
            settings: "{}".into(),
        }],
        Limits {
            deadline: Duration::from_millis(20),
            ..Limits::default()
        },
    ));
    let good = set(&[("builtin:read-only", "{}"), ("builtin:no-secrets", "{}")]);

    let bad_thread = {
        let bad = Arc::clone(&bad);
        std::thread::spawn(move || {
            (0..10).all(|_| {
                matches!(
                    bad.judge(&facet("s3:GetObject")).verdict,
                    Verdict::Deny { .. }
                )
            })
        })
    };
    for _ in 0..2_000 {
        assert_eq!(good.judge(&facet("s3:GetObject")).verdict, Verdict::Allow);
    }
    assert!(
        bad_thread.join().expect("bad endpoint thread"),
        "the looping endpoint denies every time"
    );
}

//! Hot reload: atomic swaps under concurrent evaluation, rejected reloads keeping the
//! current set, and the file/SIGHUP watcher.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sigward::policy::{EndpointSpec, Limits, Policies, PolicySpec, ReloadError, Verdict};

use crate::support::{builtin_file, engine, eventually, facet, fixture, load};

fn spec(name: &str, policies: &[(&str, serde_json::Value)]) -> EndpointSpec {
    EndpointSpec {
        name: name.into(),
        policies: policies
            .iter()
            .map(|(module, settings)| PolicySpec {
                module: (*module).into(),
                settings: Some(settings.clone()),
            })
            .collect(),
        limits: Limits::default(),
    }
}

fn approvers_set(a: &str, b: &str) -> Vec<EndpointSpec> {
    vec![spec(
        "e",
        &[
            ("builtin:read-only", serde_json::json!({ "approvers": [a] })),
            ("builtin:read-only", serde_json::json!({ "approvers": [b] })),
        ],
    )]
}

#[test]
fn reload_under_concurrent_evaluations_is_atomic() {
    let x = approvers_set("x1", "x2");
    let y = approvers_set("y1", "y2");
    let policies = Arc::new(Policies::new(engine(), &x).expect("initial set"));
    let stop = Arc::new(AtomicBool::new(false));
    let seen_x = Arc::new(AtomicUsize::new(0));
    let seen_y = Arc::new(AtomicUsize::new(0));

    let evaluators: Vec<_> = (0..3)
        .map(|_| {
            let (policies, stop, seen_x, seen_y) = (
                Arc::clone(&policies),
                Arc::clone(&stop),
                Arc::clone(&seen_x),
                Arc::clone(&seen_y),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = policies.current();
                    let set = snapshot.endpoint("e").expect("endpoint e");
                    let judgement = set.judge(&facet("s3:DeleteObject"));
                    let Verdict::Approve { approvers, .. } = judgement.verdict else {
                        panic!("evaluation during reload did not approve: {judgement:?}")
                    };
                    match approvers
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .as_slice()
                    {
                        ["x1", "x2"] => seen_x.fetch_add(1, Ordering::Relaxed),
                        ["y1", "y2"] => seen_y.fetch_add(1, Ordering::Relaxed),
                        mixed => panic!("a mixed policy set was visible: {mixed:?}"),
                    };
                }
            })
        })
        .collect();

    for round in 0..40 {
        let next = if round % 2 == 0 { &y } else { &x };
        policies.reload(next).expect("reload");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for evaluator in evaluators {
        evaluator
            .join()
            .expect("no evaluator saw an error or a mixed set");
    }
    assert!(
        seen_x.load(Ordering::Relaxed) > 0 && seen_y.load(Ordering::Relaxed) > 0,
        "both sets were live"
    );
    assert_eq!(policies.current().generation, 41);
}

#[test]
fn in_flight_requests_finish_on_the_set_they_started_with() {
    let policies = Policies::new(engine(), &approvers_set("old", "old")).expect("initial");
    let in_flight = policies.current();
    policies
        .reload(&approvers_set("new", "new"))
        .expect("reload");
    let old = in_flight
        .endpoint("e")
        .expect("e")
        .judge(&facet("s3:DeleteObject"));
    let new = policies
        .current()
        .endpoint("e")
        .expect("e")
        .judge(&facet("s3:DeleteObject"));
    assert!(matches!(old.verdict, Verdict::Approve { ref approvers, .. } if approvers == &["old"]));
    assert!(matches!(new.verdict, Verdict::Approve { ref approvers, .. } if approvers == &["new"]));
}

/// A temp dir with `policy.wasm`, a copy of a built component.
fn policy_dir(component: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.wasm");
    std::fs::copy(component, &path).expect("copy component");
    (dir, path)
}

fn file_spec(path: &Path) -> Vec<EndpointSpec> {
    vec![spec(
        "e",
        &[(path.to_str().expect("utf-8"), serde_json::json!({}))],
    )]
}

fn current_digest(policies: &Policies) -> String {
    policies.current().endpoint("e").expect("e").entries[0]
        .policy
        .digest
        .to_string()
}

/// Replace a file the way deploy tools do: write beside it, rename over it.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn a_broken_module_leaves_the_old_set_active() {
    let (_dir, path) = policy_dir(&builtin_file("read-only"));
    let policies = Policies::new(engine(), &file_spec(&path)).expect("initial");
    let before = current_digest(&policies);

    let cases: [(&[u8], &str); 4] = [
        (b"garbage", "not a valid WebAssembly component"),
        (
            &std::fs::read(fixture("not-a-policy")).expect("read"),
            "does not implement the sigward:policy world",
        ),
        (
            &std::fs::read(fixture("endless-loop")).expect("read"),
            "failed its smoke evaluation: fuel exhausted",
        ),
        (
            &std::fs::read(fixture("trap")).expect("read"),
            "failed its smoke evaluation: trapped",
        ),
    ];
    for (bytes, expected) in cases {
        replace(&path, bytes);
        let error = policies
            .reload(&file_spec(&path))
            .expect_err("broken module must be rejected");
        assert!(error.to_string().contains(expected), "{error}");
        assert_eq!(
            current_digest(&policies),
            before,
            "the old set stays active"
        );
        assert_eq!(policies.current().generation, 1);
        let verdict = policies
            .current()
            .endpoint("e")
            .expect("e")
            .judge(&facet("s3:GetObject"))
            .verdict;
        assert_eq!(verdict, Verdict::Allow, "the old set still judges");
    }
}

#[test]
fn a_module_failing_its_own_cases_is_rejected() {
    let (_dir, path) = policy_dir(&builtin_file("read-only"));
    let policies = Policies::new(engine(), &file_spec(&path)).expect("initial");
    std::fs::write(
        path.with_extension("cases.json"),
        r#"{"cases": [
            {"name": "reads pass", "facet": {"iam_action": "s3:GetObject", "action": "GetObject"}, "expect": {"verdict": "allow"}},
            {"name": "wrongly expects secrets to be readable", "facet": {"iam_action": "secretsmanager:GetSecretValue"}, "expect": {"verdict": "allow"}}
        ]}"#,
    )
    .expect("write cases");
    replace(
        &path,
        &std::fs::read(builtin_file("no-secrets")).expect("read"),
    );
    let error = policies
        .reload(&file_spec(&path))
        .expect_err("failing cases reject the module");
    assert!(matches!(error, ReloadError::Cases { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("wrongly expects secrets to be readable: expected allow, got"),
        "{error}"
    );
    assert_eq!(
        current_digest(&policies),
        load("builtin:read-only").digest.to_string()
    );
}

#[test]
fn watcher_reloads_on_file_change_and_sighup() {
    let (_dir, path) = policy_dir(&builtin_file("read-only"));
    let specs = Arc::new(Mutex::new(file_spec(&path)));
    let policies =
        Arc::new(Policies::new(engine(), &specs.lock().expect("lock")).expect("initial"));
    let files = sigward::policy::reload::watched_files(&specs.lock().expect("lock"), &[]);
    let mut expected = vec![path.clone(), path.with_extension("cases.json")];
    expected.sort();
    assert_eq!(files, expected);
    let source = Arc::clone(&specs);
    let _watcher = sigward::policy::reload::watch(Arc::clone(&policies), files, move || {
        Ok(source.lock().map_err(|e| e.to_string())?.clone())
    })
    .expect("watch");

    // A new module on disk is swapped in.
    replace(
        &path,
        &std::fs::read(builtin_file("no-secrets")).expect("read"),
    );
    let no_secrets = load("builtin:no-secrets").digest.to_string();
    assert!(
        eventually(Duration::from_secs(10), || current_digest(&policies)
            == no_secrets),
        "file change was not picked up"
    );
    let generation = policies.current().generation;

    // A broken one is rejected and the set stays.
    replace(&path, b"garbage");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(current_digest(&policies), no_secrets);
    assert_eq!(policies.current().generation, generation);

    // SIGHUP re-reads the configuration: here, a builtin instead of the file.
    *specs.lock().expect("lock") = vec![spec("e", &[("builtin:read-only", serde_json::json!({}))])];
    signal_hook::low_level::raise(signal_hook::consts::SIGHUP).expect("raise SIGHUP");
    let read_only = load("builtin:read-only").digest.to_string();
    assert!(
        eventually(Duration::from_secs(10), || current_digest(&policies)
            == read_only),
        "SIGHUP did not reload"
    );
    assert!(policies.current().generation > generation);
}

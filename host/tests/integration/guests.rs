//! Policies in other languages: the JavaScript (componentize-js) and Python
//! (componentize-py) examples in `policies/examples/`, built by `scripts/build-guests`,
//! are loaded and tested exactly like the Rust built-ins — against read-only's own cases.
//! Python's runtime calls WASI (`wasi:cli/environment`): the host's empty WASI context
//! serves it.

use std::path::PathBuf;
use std::process::Command;

/// The built examples, or `None` (and a notice) outside `scripts/test`; CI requires them.
fn examples() -> Option<PathBuf> {
    match std::env::var_os("SIGWARD_GUEST_EXAMPLES").map(PathBuf::from) {
        Some(dir) if dir.join(".complete").is_file() => Some(dir),
        _ if std::env::var_os("SIGWARD_REQUIRE_MODEL_CHECK").is_some() => {
            panic!(
                "SIGWARD_GUEST_EXAMPLES is not built: run scripts/test (it runs scripts/build-guests)"
            )
        }
        _ => {
            eprintln!("guests: skipped (no SIGWARD_GUEST_EXAMPLES; scripts/test builds them)");
            None
        }
    }
}

#[test]
fn javascript_and_python_policies_pass_read_onlys_cases() {
    let Some(dir) = examples() else { return };
    let cases = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/read-only/cases.json"
    );
    // Each load compiles a 10-20 MB component (tens of seconds): both at once.
    let runs: Vec<_> = ["read_only_js.wasm", "read_only_py.wasm"]
        .into_iter()
        .map(|name| {
            let module = dir.join(name);
            std::thread::spawn(move || {
                let output = Command::new(env!("CARGO_BIN_EXE_sigward"))
                    .args(["policy", "test"])
                    .arg(&module)
                    .arg(cases)
                    // The interpreters need more than the 8 MiB a Rust policy gets; and
                    // this test judges verdicts, not speed: the 100 ms default deadline
                    // was missed once by the Python guest on a loaded CI machine (the
                    // deadline itself is tested in engine.rs).
                    .args(["--memory-mib", "64", "--deadline-ms", "2000"])
                    .output()
                    .expect("run sigward");
                (name, output)
            })
        })
        .collect();
    let count = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(cases).expect("read-only's cases"),
    )
    .expect("cases JSON")["cases"]
        .as_array()
        .map_or(0, Vec::len);
    assert!(count >= 11, "only {count} cases");
    let all_passed = format!("{count} passed, 0 failed");
    for run in runs {
        let (name, output) = run.join().expect("thread");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(&all_passed), "{name}: {stdout}");
    }
}

#[test]
fn an_interpreter_within_a_rust_policys_memory_limit_is_refused_clearly() {
    let Some(dir) = examples() else { return };
    let facet = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/describe-instances.json"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_sigward"))
        .args(["policy", "eval", "--policy"])
        .arg(dir.join("read_only_js.wasm"))
        .args(["--facet", facet])
        .output()
        .expect("run sigward");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(r#""verdict":"deny""#), "{stdout}");
    assert!(
        stdout.contains("memory limit of 8 MiB exceeded"),
        "{stdout}"
    );
}

fn sigward(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sigward"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run sigward")
}

fn passed(output: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `sigward policy new` in each language: the project builds with its language's tools
/// and passes its own cases, as its README says.
#[test]
fn policy_new_projects_build_and_pass_their_own_cases() {
    let Some(_) = examples() else { return };
    let (js_modules, componentize_py) = (
        PathBuf::from(std::env::var_os("SIGWARD_COMPONENTIZE_JS_MODULES").expect("js tools")),
        PathBuf::from(std::env::var_os("SIGWARD_COMPONENTIZE_PY").expect("python tools")),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();

    let rust = {
        let root = root.clone();
        std::thread::spawn(move || {
            passed(
                &sigward(&root, &["policy", "new", "no-deletes"]),
                "new rust",
            );
            let project = root.join("no-deletes");
            // Its own target dir, kept beside the main build so dependencies compile once.
            // (BUILT_POLICY_DIR is <target>/policy-build/wasm32-wasip2/policy.)
            let target = PathBuf::from(sigward::BUILT_POLICY_DIR).join("../../../scaffold-target");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            for args in [
                &["build", "--release", "--target", "wasm32-wasip2"][..],
                &["test"][..],
            ] {
                let output = Command::new(&cargo)
                    .current_dir(&project)
                    .env("CARGO_TARGET_DIR", &target)
                    .args(args)
                    .output()
                    .expect("cargo");
                assert!(
                    output.status.success(),
                    "cargo {args:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let module = target.join("wasm32-wasip2/release/no_deletes.wasm");
            let module = module.to_str().expect("path");
            passed(
                &sigward(&project, &["policy", "test", module, "cases.json"]),
                "rust cases",
            )
        })
    };

    passed(
        &sigward(&root, &["policy", "new", "no-deletes-js", "--lang", "js"]),
        "new js",
    );
    let js = root.join("no-deletes-js");
    std::os::unix::fs::symlink(&js_modules, js.join("node_modules")).expect("node_modules");
    let built = Command::new("npm")
        .current_dir(&js)
        .args(["run", "build", "--silent"])
        .output()
        .expect("npm");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    passed(
        &sigward(
            &root,
            &["policy", "new", "no-deletes-py", "--lang", "python"],
        ),
        "new py",
    );
    let py = root.join("no-deletes-py");
    let built = Command::new(&componentize_py)
        .current_dir(&py)
        .args([
            "-d",
            "wit",
            "-w",
            "policy",
            "componentize",
            "app",
            "-o",
            "no_deletes_py_py.wasm",
        ])
        .output()
        .expect("componentize-py");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let (js_run, py_run) = (
        std::thread::spawn(move || {
            let mem = ["--memory-mib", "64"];
            passed(
                &sigward(
                    &js,
                    &[
                        &["policy", "test", "no_deletes_js_js.wasm", "cases.json"][..],
                        &mem[..],
                    ]
                    .concat(),
                ),
                "js cases",
            )
        }),
        std::thread::spawn(move || {
            let mem = ["--memory-mib", "64"];
            passed(
                &sigward(
                    &py,
                    &[
                        &["policy", "test", "no_deletes_py_py.wasm", "cases.json"][..],
                        &mem[..],
                    ]
                    .concat(),
                ),
                "python cases",
            )
        }),
    );
    for (what, run) in [("rust", rust), ("js", js_run), ("python", py_run)] {
        let stdout = run.join().expect("thread");
        assert!(stdout.contains("3 passed, 0 failed"), "{what}: {stdout}");
    }

    // A name that is not a crate or package name is refused with a clear error.
    let bad = sigward(&root, &["policy", "new", "No Deletes"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lowercase letters"));
    let again = sigward(&root, &["policy", "new", "no-deletes"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

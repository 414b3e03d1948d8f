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
                    // The interpreters need more than the 8 MiB a Rust policy gets.
                    .args(["--memory-mib", "64"])
                    .output()
                    .expect("run sigward");
                (name, output)
            })
        })
        .collect();
    for run in runs {
        let (name, output) = run.join().expect("thread");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("9 passed, 0 failed"), "{name}: {stdout}");
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

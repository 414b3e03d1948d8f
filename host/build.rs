//! Builds every policy crate under `policies/` as a `wasm32-wasip2` component, so the
//! built-in policies are embedded from source (never committed `.wasm` blobs) and tests
//! find the fixtures. The guests are built by a nested cargo into their own target dir,
//! shared by every build of the host in this target dir, so they compile once.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Built-in policies: (package, name after `builtin:`).
const BUILTINS: &[(&str, &str)] = &[
    ("read-only", "read-only"),
    ("no-secrets", "no-secrets"),
    ("allowlist", "allowlist"),
    ("iam", "iam"),
];

/// Misbehaving policies the engine's tests load (packages `fixture-<name>`).
const FIXTURES: &[&str] = &[
    "endless-loop",
    "memory-bomb",
    "trap",
    "bad-verdict",
    "snoop",
    "counter",
    "not-a-policy",
    "contract-v01",
];

fn main() {
    let host_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = host_dir.parent().expect("host/ sits in the workspace root");
    for input in [
        "policies",
        "guest-sdk",
        "wit",
        "Cargo.lock",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: build beside <profile>.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .unwrap_or(&out_dir)
        .join("policy-build");

    let mut packages: Vec<String> = BUILTINS.iter().map(|(pkg, _)| pkg.to_string()).collect();
    packages.extend(FIXTURES.iter().map(|f| format!("fixture-{f}")));

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--profile",
            "policy",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for pkg in &packages {
        cmd.args(["-p", pkg]);
    }
    // The outer build's flags and wrappers (clippy-driver, host RUSTFLAGS) are not the guests'.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo to build the policies");
    assert!(
        status.success(),
        "building policies/ for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
    );

    let wasm_dir = target_dir.join("wasm32-wasip2").join("policy");
    let mut builtins =
        String::from("/// Built-in policies: (name after `builtin:`, component bytes).\n");
    builtins.push_str("pub const BUILTINS: &[(&str, &[u8])] = &[\n");
    for (pkg, name) in BUILTINS {
        let path = artifact(&wasm_dir, pkg);
        writeln!(
            builtins,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a String cannot fail");
    }
    builtins.push_str("];\n");
    std::fs::write(out_dir.join("builtins.rs"), builtins).expect("write builtins.rs");

    for fixture in FIXTURES {
        artifact(&wasm_dir, &format!("fixture-{fixture}"));
    }
    println!(
        "cargo:rustc-env=SIGWARD_POLICY_WASM_DIR={}",
        wasm_dir.display()
    );
}

fn artifact(wasm_dir: &Path, package: &str) -> PathBuf {
    let path = wasm_dir.join(format!("{}.wasm", package.replace('-', "_")));
    assert!(
        path.is_file(),
        "expected {} after building the policies",
        path.display()
    );
    path
}

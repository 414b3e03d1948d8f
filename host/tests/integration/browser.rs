//! The approvals page in a real browser: Debian's Chromium, driven by playwright-core
//! (`tests/browser/approve.mjs`; scripts/system-packages and scripts/browser-env install
//! them). A held `aws ec2 create-key-pair` completes after the click on Approve.

use std::path::PathBuf;
use std::process::Command;

use crate::approvals::{TOKEN, approval_config};
use crate::e2e::{AGENT_SECRET, Agent, Moto, Sigward, ok, venv};

#[test]
fn approve_in_chromium() {
    let Some(venv) = venv() else { return };
    let modules = std::env::var_os("SIGWARD_BROWSER_MODULES").map(PathBuf::from);
    let (Some(modules), true) = (modules, std::path::Path::new("/usr/bin/chromium").exists())
    else {
        assert!(
            std::env::var_os("SIGWARD_REQUIRE_MODEL_CHECK").is_none(),
            "no Chromium or playwright-core: scripts/test installs them"
        );
        eprintln!("browser: skipped (no Chromium or SIGWARD_BROWSER_MODULES)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let moto = Moto::start(&venv, dir.path(), &["111111111111"]);
    let sigward = Sigward::start(
        dir.path(),
        &approval_config(
            dir.path(),
            &moto,
            r#"{ module = "builtin:read-only" }"#,
            "",
            &format!("\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"),
        ),
    );
    let url = sigward.admin.clone().expect("SIGWARD_ADMIN line");
    let agent = Agent::new(&venv, dir.path(), &sigward, AGENT_SECRET);

    let held = agent.aws_spawn(
        "prod",
        &["ec2", "create-key-pair", "--key-name", "from-the-browser"],
    );

    // ESM resolves packages next to the script: give it the installed node_modules.
    let script = dir.path().join("approve.mjs");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser/approve.mjs"),
        &script,
    )
    .expect("copy the script");
    std::os::unix::fs::symlink(&modules, dir.path().join("node_modules")).expect("symlink");
    let screenshot = dir.path().join("approved.png");
    let clicked = Command::new("node")
        .arg(&script)
        .args([&url, TOKEN, "claude wants ec2:CreateKeyPair"])
        .arg(&screenshot)
        .output()
        .expect("run node");
    let said = ok(&clicked, "the browser");
    assert!(said.starts_with("approved "), "{said}");
    assert!(screenshot.exists());

    let output = held.wait_with_output().expect("wait for aws");
    let out = ok(&output, "create-key-pair after the click");
    assert!(out.contains("from-the-browser"), "{out}");
    assert!(
        sigward.log().contains("by=browser-user"),
        "the decision names who clicked: {}",
        sigward.log()
    );
}

//! `sigward policy new NAME [--lang rust|js|python]`: a policy project that builds and
//! passes its own example cases out of the box. The example rule: deletes are denied,
//! everything else is allowed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The policy's name: lowercase letters, digits and dashes (`no-deletes`).
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// Where to create the project (default: ./NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The contract, so a project builds without this repository (JS and Python).
const WIT: &str = include_str!("../../../wit/policy.wit");
/// Where the Rust SDK lives: this source tree (it is not on crates.io).
const SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk");

pub fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    let name = args.name.as_str();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || name.starts_with('-')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        anyhow::bail!(
            "policy name {name:?}: use lowercase letters, digits and dashes, starting with a letter"
        );
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        anyhow::bail!(
            "{} already exists; choose another name or --dir",
            dir.display()
        );
    }
    let snake = name.replace('-', "_");
    let files: Vec<(&str, String)> = match args.lang {
        Lang::Rust => rust(name, &snake),
        Lang::Js => js(name, &snake),
        Lang::Python => python(name, &snake),
    };
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut out = std::io::stdout();
    writeln!(
        out,
        "created {} ({:?} policy {name})",
        dir.display(),
        args.lang
    )?;
    writeln!(out, "next: see {}", dir.join("README.md").display())?;
    Ok(ExitCode::SUCCESS)
}

fn cases(name: &str) -> String {
    format!(
        r#"{{
  "settings": {{}},
  "cases": [
    {{
      "name": "reads pass",
      "facet": {{"service": "s3", "action": "GetObject", "iam_action": "s3:GetObject", "account": "111111111111", "account_name": "prod", "principal": "claude"}},
      "expect": {{"verdict": "allow"}}
    }},
    {{
      "name": "deletes are denied, naming the action and account",
      "facet": {{"service": "s3", "action": "DeleteObject", "iam_action": "s3:DeleteObject", "account": "111111111111", "account_name": "prod", "principal": "claude"}},
      "expect": {{"verdict": "deny", "reason": "{name}: s3:DeleteObject in account prod (111111111111) deletes"}}
    }},
    {{
      "name": "a word that only starts like Delete is not a delete",
      "facet": {{"service": "x", "action": "Deleted", "iam_action": "x:Deleted", "account": "111111111111"}},
      "expect": {{"verdict": "allow"}}
    }}
  ]
}}
"#
    )
}

fn readme(name: &str, build: &str, module: &str) -> String {
    let interpreted = module.ends_with("_js.wasm") || module.ends_with("_py.wasm");
    format!(
        "# {name}\n\nA sigward policy (made by `sigward policy new`). The example rule: calls whose \
         operation is a delete (`Delete…`) are denied; everything else is allowed.\n\n\
         ```sh\n{build}\nsigward policy test {module} cases.json{mem}\n```\n\n\
         Then use it on an endpoint: `policies = [{{ module = \"{module}\" }}]`{endpoint_mem} (a \
         running sigward reloads it when the file changes). `sigward policy eval` and `sigward \
         policy bench` take the same module path.\n",
        mem = if interpreted { " --memory-mib 64" } else { "" },
        endpoint_mem = if interpreted {
            ", with `memory_mib = 64` on the endpoint: the interpreter needs more than the default 8 MiB"
        } else {
            ""
        },
    )
}

fn rust(name: &str, snake: &str) -> Vec<(&'static str, String)> {
    let module = format!("target/wasm32-wasip2/release/{snake}.wasm");
    vec![
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
sigward-policy-sdk = {{ path = "{SDK_PATH}" }}

# Small, fast components: a fresh instance per evaluation pays for every byte.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true

# A project of its own, even inside another workspace.
[workspace]
"#
            ),
        ),
        (
            "src/lib.rs",
            format!(
                r#"//! `{name}`: deletes are denied; everything else is allowed.

#![cfg_attr(not(test), no_std)]

use sigward_policy_sdk::prelude::*;

pub struct Policy;

impl sigward_policy_sdk::Policy for Policy {{
    fn evaluate(facet: &Facet, _settings: &Settings) -> Verdict {{
        let op = facet.operation();
        let is_delete = op
            .strip_prefix("Delete")
            .is_some_and(|rest| rest.chars().next().is_none_or(|c| c.is_ascii_uppercase()));
        if is_delete {{
            Verdict::deny(format!(
                "{name}: {{}} in account {{}} deletes",
                facet.iam_action_or_derived(),
                facet.account_label()
            ))
        }} else {{
            Verdict::Allow
        }}
    }}
}}

export_policy!(Policy);

#[cfg(test)]
mod tests {{
    use super::*;
    use sigward_policy_sdk::testing::{{evaluate, facet}};

    #[test]
    fn deletes_are_denied() {{
        assert!(evaluate::<Policy>(&facet("s3:DeleteObject"), "{{}}").is_deny());
        assert!(evaluate::<Policy>(&facet("s3:GetObject"), "{{}}").is_allow());
    }}
}}
"#
            ),
        ),
        ("cases.json", cases(name)),
        (
            "README.md",
            readme(
                name,
                "rustup target add wasm32-wasip2   # once\ncargo test                         # the rule, natively\ncargo build --release --target wasm32-wasip2",
                &module,
            ),
        ),
    ]
}

/// The example's build script serves every JavaScript project.
const JS_BUILD: &str = include_str!("../../../policies/examples/js/build.mjs");

fn js(name: &str, snake: &str) -> Vec<(&'static str, String)> {
    let module = format!("{snake}_js.wasm");
    vec![
        (
            "package.json",
            format!(
                r#"{{
  "name": "{name}",
  "private": true,
  "type": "module",
  "scripts": {{ "build": "node build.mjs policy.js wit {module}" }},
  "dependencies": {{ "@bytecodealliance/componentize-js": "0.23.0" }}
}}
"#
            ),
        ),
        ("build.mjs", JS_BUILD.to_string()),
        ("wit/policy.wit", WIT.to_string()),
        (
            "policy.js",
            format!(
                r#"// `{name}`: deletes are denied; everything else is allowed.
// `settings()` returns the operator's settings as JSON text.
import settings from 'settings';

export function evaluate(facet) {{
  const op = facet.action || (facet.iamAction.split(':')[1] ?? '');
  const next = op.charAt('Delete'.length);
  if (op.startsWith('Delete') && (next === '' || (next >= 'A' && next <= 'Z'))) {{
    const action = facet.iamAction || `${{facet.service}}:${{facet.action}}`;
    const account = facet.accountName ? `${{facet.accountName}} (${{facet.account}})` : facet.account;
    return {{ tag: 'deny', val: `{name}: ${{action}} in account ${{account}} deletes` }};
  }}
  void settings;
  return {{ tag: 'allow' }};
}}
"#
            ),
        ),
        ("cases.json", cases(name)),
        (
            "README.md",
            readme(name, "npm install\nnpm run build", &module),
        ),
    ]
}

fn python(name: &str, snake: &str) -> Vec<(&'static str, String)> {
    let module = format!("{snake}_py.wasm");
    vec![
        ("requirements.txt", "componentize-py==0.25.1\n".to_string()),
        ("wit/policy.wit", WIT.to_string()),
        (
            "app.py",
            format!(
                r#""""`{name}`: deletes are denied; everything else is allowed.
`wit_world.settings()` returns the operator's settings as JSON text."""

import wit_world
from wit_world.imports import types


class WitWorld(wit_world.WitWorld):
    def evaluate(self, facet: types.AwsFacet) -> types.Verdict:
        op = facet.action or facet.iam_action.partition(":")[2]
        rest = op[len("Delete"):]
        if op.startswith("Delete") and (rest == "" or rest[0].isupper()):
            action = facet.iam_action or f"{{facet.service}}:{{facet.action}}"
            account = (
                f"{{facet.account_name}} ({{facet.account}})" if facet.account_name else facet.account
            )
            return types.Verdict_Deny(f"{name}: {{action}} in account {{account}} deletes")
        return types.Verdict_Allow()
"#
            ),
        ),
        ("cases.json", cases(name)),
        (
            "README.md",
            readme(
                name,
                &format!(
                    "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt\n.venv/bin/componentize-py -d wit -w policy componentize app -o {module}"
                ),
                &module,
            ),
        ),
    ]
}

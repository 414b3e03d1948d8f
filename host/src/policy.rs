//! The policy engine: WebAssembly components that judge each call.
//!
//! - [`engine`]: the wasmtime configuration (pooling allocator, epochs, fuel) shared by
//!   every policy, and the compile-once-per-digest cache.
//! - [`module`]: where a policy's bytes come from (`builtin:NAME` or a file) and its
//!   compiled, pre-instantiated form.
//! - [`evaluate`]: one evaluation in a fresh, limited sandbox.
//! - [`set`]: an endpoint's ordered policies and how their verdicts combine.
//! - [`reload`]: building a new set off the request path and swapping it in atomically.
//! - [`cases`]: policy test cases (`sigward policy test`, and a module's own fixtures).

pub mod cases;
pub mod engine;
pub mod evaluate;
pub mod module;
pub mod reload;
pub mod set;

/// The current contract, `sigward:policy@0.2.0` (wit/policy.wit).
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/policy.wit",
        world: "policy",
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

/// The first contract, `sigward:policy@0.1.0` (wit/v0.1/policy.wit): components built
/// against it load and are evaluated as they always were.
mod bindings_v01 {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1/policy.wit",
        world: "policy",
        ownership: Borrowing { duplicate_if_necessary: false },
    });
}

pub use engine::{Engine, EngineError};
pub use evaluate::{Failure, Limits};
pub use module::{LoadError, LoadedPolicy, ModuleRef, PolicyDigest};
pub use reload::{EndpointSpec, Policies, PolicySpec, ReloadError};
pub use set::{Evaluation, Judgement, PolicySet};

use serde::{Deserialize, Serialize};

/// A policy's answer, or the combined answer of an endpoint's policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case", deny_unknown_fields)]
pub enum Verdict {
    Allow,
    Deny {
        reason: String,
    },
    Approve {
        approvers: Vec<String>,
        prompt: String,
    },
}

impl Verdict {
    pub fn deny(reason: impl Into<String>) -> Self {
        Verdict::Deny {
            reason: reason.into(),
        }
    }

    /// "allow", "deny" or "approve".
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny { .. } => "deny",
            Verdict::Approve { .. } => "approve",
        }
    }
}

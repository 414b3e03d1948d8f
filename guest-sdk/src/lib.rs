//! The crate a sigward policy depends on, alone.
//!
//! A policy is a type implementing [`Policy`], exported with [`export_policy!`]:
//!
//! ```ignore
//! #![cfg_attr(not(test), no_std)]
//! use sigward_policy_sdk::prelude::*;
//!
//! struct DenyDeletes;
//! impl Policy for DenyDeletes {
//!     fn evaluate(facet: &Facet, _settings: &Settings) -> Verdict {
//!         if facet.action.starts_with("Delete") {
//!             Verdict::deny(format!("{} is not allowed", facet.iam_action))
//!         } else {
//!             Verdict::Allow
//!         }
//!     }
//! }
//! export_policy!(DenyDeletes);
//! ```
//!
//! Built with `cargo build --target wasm32-wasip2 --release`, that is a component sigward
//! loads. The same rules run natively under `cargo test`: call `evaluate` directly with a
//! facet from [`testing`] and settings from [`Settings::from_json`].
//!
//! Policies are `no_std` (with `alloc`): start the crate with
//! `#![cfg_attr(not(test), no_std)]` and `use sigward_policy_sdk::prelude::*;`. The SDK
//! provides the allocator and panic handler. A policy that needs std enables the SDK's
//! `std` feature instead, at a cost of a few microseconds per evaluation.

#![no_std]

extern crate alloc;
#[cfg(any(feature = "std", not(target_arch = "wasm32")))]
extern crate std;

mod matching;
#[cfg(all(target_arch = "wasm32", not(feature = "std")))]
mod runtime;
mod settings;
pub mod testing;

pub use matching::{is_read_action, wildcard_match, wildcard_match_ignore_case};
pub use settings::Settings;

/// The bindings generated from `wit/policy.wit`. Policy authors use the re-exports at the
/// crate root; the module is public because [`export_policy!`] expands to code that names it.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/policy.wit",
        world: "policy",
        pub_export_macro: true,
        default_bindings_module: "sigward_policy_sdk::bindings",
        additional_derives: [PartialEq, Eq, Clone],
    });
}

/// The approvers and prompt of an [`Verdict::Approve`].
pub use bindings::sigward::policy::types::Approval;
/// One (IAM action, resource) pair AWS authorizes for a call (the WIT `authorization`).
pub use bindings::sigward::policy::types::Authorization;
/// Everything a policy usually needs, including the `alloc` types a `no_std` crate lacks.
pub mod prelude {
    pub use crate::{
        Approval, Authorization, Facet, Policy, Settings, Verdict, export_policy, is_read_action,
        wildcard_match, wildcard_match_ignore_case,
    };
    pub use alloc::borrow::ToOwned;
    pub use alloc::boxed::Box;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec::Vec;
    pub use alloc::{format, vec};
}

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// What sigward understood of one AWS call (the WIT `aws-facet` record).
pub use bindings::sigward::policy::types::AwsFacet as Facet;
/// A policy's answer (the WIT `verdict` variant).
pub use bindings::sigward::policy::types::Verdict;

/// A policy's rules. `evaluate` is called once per request, in a fresh sandbox: nothing a
/// call stores (statics, caches) is there on the next call.
pub trait Policy {
    fn evaluate(facet: &Facet, settings: &Settings) -> Verdict;
}

impl Verdict {
    /// Refuse the call; `reason` is shown to the agent.
    pub fn deny(reason: impl Into<String>) -> Self {
        Verdict::Deny(reason.into())
    }

    /// Hold the call for one of `approvers`, who are shown `prompt`.
    pub fn approve<S: Into<String>>(
        approvers: impl IntoIterator<Item = S>,
        prompt: impl Into<String>,
    ) -> Self {
        Verdict::Approve(Approval {
            approvers: approvers.into_iter().map(Into::into).collect(),
            prompt: prompt.into(),
        })
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow)
    }

    pub fn is_deny(&self) -> bool {
        matches!(self, Verdict::Deny(_))
    }

    pub fn is_approve(&self) -> bool {
        matches!(self, Verdict::Approve(_))
    }
}

impl Facet {
    /// Every (IAM action, resource) pair AWS authorizes for the call. sigward always
    /// fills `authorizations`; for a facet without them (a hand-built test facet) they
    /// are derived as sigward derives them for an old record: `iam_action` on each of
    /// `resources`, or on an unknown resource (`None`) when there are none.
    pub fn pairs(&self) -> Vec<Authorization> {
        if !self.authorizations.is_empty() {
            return self.authorizations.clone();
        }
        let action = self.iam_action_or_derived();
        if self.resources.is_empty() {
            return alloc::vec![Authorization {
                action,
                resource: None,
            }];
        }
        self.resources
            .iter()
            .map(|r| Authorization {
                action: action.clone(),
                resource: Some(r.clone()),
            })
            .collect()
    }

    /// Judge every pair of [`Facet::pairs`] with `judge`, combined as sigward combines
    /// policies: the first deny wins, then any approval (approvers merged, prompts
    /// joined), else allow. A call is allowed only if each thing it does is.
    pub fn judge_each(&self, mut judge: impl FnMut(&Authorization) -> Verdict) -> Verdict {
        let mut approvers: Vec<String> = Vec::new();
        let mut prompts: Vec<String> = Vec::new();
        for pair in self.pairs() {
            match judge(&pair) {
                Verdict::Allow => {}
                deny @ Verdict::Deny(_) => return deny,
                Verdict::Approve(approval) => {
                    for approver in approval.approvers {
                        if !approvers.contains(&approver) {
                            approvers.push(approver);
                        }
                    }
                    if !prompts.contains(&approval.prompt) {
                        prompts.push(approval.prompt);
                    }
                }
            }
        }
        if approvers.is_empty() {
            Verdict::Allow
        } else {
            Verdict::approve(approvers, prompts.join("; "))
        }
    }

    /// The IAM action, falling back to `service:action` when sigward left it empty.
    pub fn iam_action_or_derived(&self) -> String {
        if self.iam_action.is_empty() {
            format!("{}:{}", self.service, self.action)
        } else {
            self.iam_action.clone()
        }
    }

    /// The operation name, falling back to the part of `iam_action` after the colon.
    pub fn operation(&self) -> &str {
        if self.action.is_empty() {
            self.iam_action.split_once(':').map_or("", |(_, op)| op)
        } else {
            &self.action
        }
    }

    /// "prod (111111111111)" when the operator labelled the account, else "111111111111".
    pub fn account_label(&self) -> String {
        match &self.account_name {
            Some(name) if !name.is_empty() => format!("{name} ({})", self.account),
            _ => self.account.clone(),
        }
    }

    /// The value of the first param called `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Export a [`Policy`] type as the component's `evaluate`.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[doc(hidden)]
        struct __SigwardPolicyExport;

        impl $crate::bindings::Guest for __SigwardPolicyExport {
            fn evaluate(facet: $crate::Facet) -> $crate::Verdict {
                <$policy as $crate::Policy>::evaluate(&facet, &$crate::Settings::from_host())
            }
        }

        $crate::bindings::export!(__SigwardPolicyExport);
    };
}

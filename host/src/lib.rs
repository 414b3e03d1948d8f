//! sigward: a proxy between AI agents and the AWS APIs. Each call arrives through a
//! [`proxy`] listener, is understood as an aws facet ([`aws`], [`facet`]), judged by
//! WebAssembly policies ([`policy`]), re-signed and forwarded — in the order the
//! [`pipeline`] spells out.

#![forbid(unsafe_code)]

pub mod admin;
pub mod agents;
pub mod approval;
pub mod audit;
pub mod authorize;
pub mod aws;
pub mod cli;
pub mod config;
pub mod facet;
pub mod metrics;
pub mod modules;
pub mod pipeline;
pub mod policy;
pub mod proxy;
pub mod state;
pub mod tls;
pub mod upstream;

/// Where this build put its compiled policy components (built-ins and test fixtures).
/// For tests and tools working from a source checkout; the binary embeds the built-ins.
pub const BUILT_POLICY_DIR: &str = env!("SIGWARD_POLICY_WASM_DIR");

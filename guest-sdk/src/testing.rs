//! A native test harness: build facets in one line and run a policy's rules under
//! `cargo test`, without building WebAssembly.

use alloc::format;
use alloc::string::ToString;
use alloc::vec::Vec;

use crate::{Authorization, Facet, Policy, Settings, Verdict};

/// A facet for `iam_action` (`"ec2:TerminateInstances"`) in account 111111111111,
/// us-east-1, with `service` and `action` derived from it. Adjust fields as needed.
pub fn facet(iam_action: &str) -> Facet {
    let (service, action) = iam_action.split_once(':').unwrap_or(("", iam_action));
    Facet {
        service: service.to_string(),
        action: action.to_string(),
        iam_action: iam_action.to_string(),
        account: "111111111111".to_string(),
        account_name: None,
        region: "us-east-1".to_string(),
        resources: Vec::new(),
        method: "POST".to_string(),
        host: format!("{service}.us-east-1.amazonaws.com"),
        path: "/".to_string(),
        principal: "agent".to_string(),
        endpoint: "default".to_string(),
        params: Vec::new(),
        authorizations: Vec::new(),
    }
}

/// One authorization: `action` on `resource` (`None`: a resource sigward could not derive).
pub fn authorization(action: &str, resource: Option<&str>) -> Authorization {
    Authorization {
        action: action.to_string(),
        resource: resource.map(ToString::to_string),
    }
}

/// Evaluate policy `P` natively with JSON `settings`.
pub fn evaluate<P: Policy>(facet: &Facet, settings: &str) -> Verdict {
    P::evaluate(facet, &Settings::from_json(settings))
}

//! Helpers shared by the integration tests.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sigward::facet::Facet;
use sigward::policy::engine::EngineOptions;
use sigward::policy::{Engine, LoadedPolicy, ModuleRef};

/// One engine for the whole test binary, as in the proxy.
pub fn engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE
        .get_or_init(|| Engine::new(EngineOptions::default()).expect("engine"))
        .clone()
}

/// The compiled component for a fixture under `policies/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    let path = PathBuf::from(sigward::BUILT_POLICY_DIR)
        .join(format!("fixture_{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "fixture {name} not built at {}",
        path.display()
    );
    path
}

/// The compiled component for a built-in policy, as a file.
pub fn builtin_file(name: &str) -> PathBuf {
    PathBuf::from(sigward::BUILT_POLICY_DIR).join(format!("{}.wasm", name.replace('-', "_")))
}

pub fn load(module: &str) -> Arc<LoadedPolicy> {
    engine()
        .load(&ModuleRef::parse(module))
        .unwrap_or_else(|e| panic!("load {module}: {e}"))
}

pub fn load_fixture(name: &str) -> Arc<LoadedPolicy> {
    load(fixture(name).to_str().expect("utf-8 path"))
}

/// A facet for `iam_action` in account 111111111111 ("prod").
pub fn facet(iam_action: &str) -> Facet {
    let (service, action) = iam_action.split_once(':').expect("service:Action");
    Facet {
        service: service.into(),
        action: action.into(),
        iam_action: iam_action.into(),
        account: "111111111111".into(),
        account_name: Some("prod".into()),
        region: "us-east-1".into(),
        method: "POST".into(),
        host: format!("{service}.us-east-1.amazonaws.com"),
        path: "/".into(),
        principal: "claude".into(),
        endpoint: "default".into(),
        ..Facet::default()
    }
}

pub fn settings(json: &str) -> Arc<str> {
    json.into()
}

/// Poll `condition` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

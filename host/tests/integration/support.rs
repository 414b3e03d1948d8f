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

/// One raw HTTP/1.1 exchange on a new connection; the request must end with
/// `Connection: close`. Returns the status and the whole response text.
pub fn http_exchange(address: &str, request: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address)
        .unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// `METHOD path` to `address` with `headers` (whole `Name: value\r\n` lines) and `body`:
/// the status and the response body.
pub fn http(address: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let (status, response) = http_exchange(
        address,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A client command that failed with AWS error `code` and a message containing `detail`.
pub fn refused(output: &std::process::Output, code: &str, detail: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains(code) && stderr.contains(detail),
        "{what}: expected {code} ({detail}), got {:?}: {stderr}",
        output.status
    );
}

//! Peers that do not play along, with real processes: an STS that fails, an upstream that
//! never answers, agents that stop mid-body or never start TLS, more connections than
//! sigward may hold, and a process at its open-file limit. Every wait ends, in an AWS
//! error that says which bound was reached; nothing spins.
//!
//! The upstream here is a plain HTTP/1.1 server written for these tests (it plays STS as
//! well): what it does is chosen per request so that each fault is the only one.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::ambiguity::{
    AGENT_KEY, AGENT_SECRET, Call, open_tunnel, status, via_connect, via_endpoint,
};
use crate::e2e::Sigward;
use crate::verifier::tls_to;

#[derive(Default)]
struct Upstream {
    assume_roles: AtomicUsize,
    /// Requests for `/hang…` that arrived (and were never answered).
    hung: AtomicUsize,
    /// Requests for `/slow…` that arrived (each answered after a second).
    slow: AtomicUsize,
    /// The AssumeRole calls' bodies.
    assume_bodies: std::sync::Mutex<Vec<String>>,
    /// Every other request that arrived whole.
    calls: AtomicUsize,
}

/// AssumeRole is refused (403, after 500 ms, so that callers overlap) when `sts_fails`;
/// `/hang…` is never answered, `/slow…` after a second; anything else is read whole and
/// answered 200.
fn start_upstream(sts_fails: bool) -> (Arc<Upstream>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let state = Arc::new(Upstream::default());
    let shared = Arc::clone(&state);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = Arc::clone(&shared);
            std::thread::spawn(move || serve(stream, &state, sts_fails));
        }
    });
    (state, url)
}

fn serve(stream: TcpStream, state: &Upstream, sts_fails: bool) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = head.split_whitespace().nth(1).unwrap_or_default();
        if !body.starts_with(b"Action=AssumeRole") {
            state.calls.fetch_add(1, Ordering::SeqCst);
        }
        if path.starts_with("/hang") {
            state.hung.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(120));
            return;
        }
        if path.starts_with("/slow") {
            state.slow.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_secs(1));
        }
        let response = if body.starts_with(b"Action=AssumeRole") {
            state.assume_roles.fetch_add(1, Ordering::SeqCst);
            state
                .assume_bodies
                .lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&body).into_owned());
            if sts_fails {
                std::thread::sleep(Duration::from_millis(500));
                xml_response(
                    "403 Forbidden",
                    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not allowed to assume the role</Message></Error><RequestId>1</RequestId></ErrorResponse>",
                )
            } else {
                xml_response(
                    "200 OK",
                    "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>\
                     <Credentials><AccessKeyId>ASIAFAULTSROLEKEY001</AccessKeyId><SecretAccessKey>faults-role-secret</SecretAccessKey>\
                     <SessionToken>faults-token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>\
                     <AssumedRoleUser><AssumedRoleId>AROAFAULTS:s</AssumedRoleId><Arn>arn:aws:sts::111111111111:assumed-role/r/s</Arn></AssumedRoleUser>\
                     </AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>",
                )
            }
        } else {
            xml_response("200 OK", "<ok/>")
        };
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn xml_response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn config(dir: &Path, upstream: &str, proxy: &str) -> String {
    format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
endpoint_listen = "127.0.0.1:0"
{proxy}
[state]
dir = "{state}"
[credential.base]
access_key_id = "AKIAFAULTSBASEKEY001"
secret_access_key = "faults-base-secret"
[[endpoint]]
name = "aws"
hosts = ["*.amazonaws.com"]
role = "r"
region = "us-east-1"
credential = "base"
upstream = "{upstream}"
response_timeout = "2s"
policies = [{{ module = "builtin:allowlist", settings = {{ accounts = {{ "*" = {{ "*" = ["*"] }} }} }} }}]
[[agent]]
name = "claude"
access_key_ids = ["{AGENT_KEY}"]
secret_access_key = "{AGENT_SECRET}"
"#,
        state = dir.join("state").display(),
    )
}

fn identity() -> Call<'static> {
    Call::post(
        "sts",
        "/",
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        "Action=GetCallerIdentity&Version=2011-06-15",
    )
}

fn get_object(bucket_key: &'static str) -> Call<'static> {
    Call {
        method: "GET",
        uri: bucket_key,
        headers: vec![],
        body: Vec::new(),
        service: "s3",
        region: "us-east-1",
        payload_hash: Some("UNSIGNED-PAYLOAD"),
    }
}

/// Whether the peer closes `stream` within `within` without sending anything.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
        || matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

#[test]
fn an_sts_failure_is_shared_by_its_waiters_and_remembered_briefly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, url) = start_upstream(true);
    let sigward = Arc::new(Sigward::start(dir.path(), &config(dir.path(), &url, "")));

    // Six requests for one account at once: one AssumeRole, six refusals.
    let waiters: Vec<_> = (0..6)
        .map(|_| {
            let sigward = Arc::clone(&sigward);
            std::thread::spawn(move || via_endpoint(&sigward, &identity()))
        })
        .collect();
    for waiter in waiters {
        let response = waiter.join().expect("thread");
        assert_eq!(status(&response), 503, "{response}");
        assert!(
            response.contains("not allowed to assume the role"),
            "{response}"
        );
    }
    assert_eq!(upstream.assume_roles.load(Ordering::SeqCst), 1);

    // Right after, the failure is remembered: no new attempt, and the agent is told so.
    let response = via_endpoint(&sigward, &identity());
    assert_eq!(status(&response), 503, "{response}");
    assert!(response.contains("the last attempt"), "{response}");
    assert_eq!(upstream.assume_roles.load(Ordering::SeqCst), 1);

    // Past the memory, sigward tries again.
    std::thread::sleep(Duration::from_millis(2300));
    let response = via_endpoint(&sigward, &identity());
    assert_eq!(status(&response), 503, "{response}");
    assert_eq!(upstream.assume_roles.load(Ordering::SeqCst), 2);
}

#[test]
fn every_wait_on_a_peer_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, url) = start_upstream(false);
    let sigward = Sigward::start(
        dir.path(),
        &config(
            dir.path(),
            &url,
            "handshake_timeout = \"500ms\"\nbody_timeout = \"1s\"",
        ),
    );
    let direct = sigward
        .endpoint_url
        .as_deref()
        .expect("endpoint_url")
        .trim_start_matches("https://")
        .to_string();

    // A client that connects and never starts TLS is let go.
    let mut silent = TcpStream::connect(&direct).expect("connect");
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)),
        "a silent client on the direct listener was kept"
    );
    // The same after a CONNECT.
    let mut tunnel =
        TcpStream::connect(sigward.proxy.trim_start_matches("http://")).expect("connect");
    tunnel
        .write_all(b"CONNECT sts.us-east-1.amazonaws.com:443 HTTP/1.1\r\nHost: sts.us-east-1.amazonaws.com:443\r\n\r\n")
        .expect("CONNECT");
    let mut answer = [0u8; 19];
    tunnel.read_exact(&mut answer).expect("CONNECT answer");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let mut rest = [0u8; 64];
    let _ = tunnel.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = tunnel.read(&mut rest);
    assert!(
        closed_within(&mut tunnel, Duration::from_secs(10)),
        "a silent client in a tunnel was kept"
    );

    // An upstream that never answers: a 504 naming the host, after response_timeout.
    let started = Instant::now();
    let response = via_endpoint(&sigward, &get_object("/hang/key"));
    assert_eq!(status(&response), 504, "{response}");
    assert!(response.contains("GatewayTimeout"), "{response}");
    assert!(
        response.contains("s3.us-east-1.amazonaws.com did not answer within 2000 ms"),
        "{response}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(upstream.hung.load(Ordering::SeqCst), 1);
    // Through a tunnel too.
    let response = via_connect(
        &sigward,
        "s3.us-east-1.amazonaws.com",
        &get_object("/hang/k2"),
    );
    assert_eq!(status(&response), 504, "{response}");

    // A body read whole that stops coming: RequestTimeout, and nothing is forwarded.
    let before = upstream.calls.load(Ordering::SeqCst);
    let call = Call::post(
        "dynamodb",
        "/",
        &[
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "DynamoDB_20120810.DescribeTable"),
        ],
        r#"{"TableName":"a-table-name-long-enough-to-stop-halfway"}"#,
    );
    let bytes = call.bytes(&direct);
    let mut tls = tls_to(&sigward.ca, sigward.endpoint_url.as_deref().expect("url"));
    tls.write_all(&bytes[..bytes.len() - 20]).expect("write");
    tls.flush().expect("flush");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert_eq!(status(&response), 400, "{response}");
    assert!(response.contains("RequestTimeout"), "{response}");
    assert!(response.contains("proxy.body_timeout"), "{response}");
    assert_eq!(
        upstream.calls.load(Ordering::SeqCst),
        before,
        "a cut-off body was forwarded"
    );

    // A streamed upload that stops coming: the same, after the upstream saw part of it.
    let mut upload = Call {
        method: "PUT",
        uri: "/bucket/big",
        headers: vec![],
        body: vec![b'x'; 2 << 20],
        service: "s3",
        region: "us-east-1",
        payload_hash: Some("UNSIGNED-PAYLOAD"),
    };
    upload
        .headers
        .push(("content-type", "application/octet-stream"));
    let bytes = upload.bytes(&direct);
    let mut tls = tls_to(&sigward.ca, sigward.endpoint_url.as_deref().expect("url"));
    tls.write_all(&bytes[..bytes.len() - (1 << 20)])
        .expect("write");
    tls.flush().expect("flush");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert_eq!(status(&response), 400, "{response}");
    assert!(response.contains("RequestTimeout"), "{response}");
}

#[test]
fn at_max_connections_sigward_waits_for_one_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_upstream, url) = start_upstream(false);
    let sigward = Sigward::start(dir.path(), &config(dir.path(), &url, "max_connections = 2"));
    let direct = sigward
        .endpoint_url
        .as_deref()
        .expect("endpoint_url")
        .to_string();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut tls = tls_to(&sigward.ca, &direct);
            tls.write_all(b"").expect("handshake");
            let _ = tls.conn.complete_io(&mut tls.sock);
            tls
        })
        .collect();
    // A third connection is not served while two are open …
    let third = std::thread::spawn({
        let ca = sigward.ca.clone();
        let direct = direct.clone();
        move || {
            let started = Instant::now();
            let mut tls = tls_to(&ca, &direct);
            let _ = tls.conn.complete_io(&mut tls.sock);
            started.elapsed()
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!third.is_finished(), "a third connection was served");
    // … and is once one of them ends.
    drop(held);
    let waited = third.join().expect("thread");
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    let response = via_endpoint(&sigward, &identity());
    assert_eq!(status(&response), 200, "{response}");
}

#[test]
fn at_the_open_file_limit_accepting_backs_off_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_upstream, url) = start_upstream(false);
    // A hard limit sigward cannot raise: it runs out of descriptors.
    let sigward =
        Sigward::start_in_shell(dir.path(), &config(dir.path(), &url, ""), "ulimit -n 64");
    let proxy = sigward.proxy.trim_start_matches("http://").to_string();
    let flood: Vec<TcpStream> = (0..120)
        .filter_map(|_| TcpStream::connect(&proxy).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let failures = sigward.log().matches("accept failed").count();
    assert!(
        failures > 0,
        "the limit was never reached: {}",
        sigward.log()
    );
    assert!(
        failures < 40,
        "{failures} accept warnings in 2 s: the accept loop spins"
    );
    drop(flood);
    // Served again once descriptors are free (the paused loop comes back within 1 s).
    std::thread::sleep(Duration::from_millis(1500));
    let response = via_connect(&sigward, "sts.us-east-1.amazonaws.com", &identity());
    assert_eq!(status(&response), 200, "{response}");

    // A soft limit below the hard one is raised, and the log says so.
    let dir = tempfile::tempdir().expect("tempdir");
    let raised =
        Sigward::start_in_shell(dir.path(), &config(dir.path(), &url, ""), "ulimit -S -n 64");
    assert!(
        crate::support::eventually(Duration::from_secs(5), || raised
            .log()
            .contains("raised the open-file limit")),
        "{}",
        raised.log()
    );
}

#[test]
fn bodies_are_read_only_for_known_agents_and_within_a_memory_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_upstream, url) = start_upstream(false);
    let sigward = Sigward::start(
        dir.path(),
        &config(
            dir.path(),
            &url,
            "max_buffered_mib = 1\nbody_timeout = \"5s\"",
        ),
    );
    let endpoint = sigward.endpoint_url.clone().expect("endpoint_url");
    let direct = endpoint.trim_start_matches("https://").to_string();
    // Warm up (TLS, STS) before measuring.
    assert_eq!(status(&via_endpoint(&sigward, &identity())), 200);
    let before = sigward.memory_kib("VmRSS");

    // Six 60 MiB POSTs signed with a key no agent has: refused from their headers, and
    // their bodies never read.
    let senders: Vec<_> = (0..6)
        .map(|_| {
            let ca = sigward.ca.clone();
            let endpoint = endpoint.clone();
            let direct = direct.clone();
            std::thread::spawn(move || {
                let head = format!(
                    "POST / HTTP/1.1\r\nhost: {direct}\r\ncontent-type: application/x-amz-json-1.0\r\n\
                     x-amz-target: DynamoDB_20120810.PutItem\r\nx-amz-date: 20261124T000000Z\r\n\
                     authorization: AWS4-HMAC-SHA256 Credential=AKIA999999999999XXXX/20261124/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=00\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n",
                    60 << 20
                );
                let mut tls = tls_to(&ca, &endpoint);
                let _ = tls.write_all(head.as_bytes());
                let block = vec![b' '; 1 << 20];
                for _ in 0..60 {
                    if tls.write_all(&block).is_err() {
                        break;
                    }
                }
                let mut response = Vec::new();
                let _ = tls.read_to_end(&mut response);
                String::from_utf8_lossy(&response).into_owned()
            })
        })
        .collect();
    for sender in senders {
        let response = sender.join().expect("thread");
        assert!(
            response.is_empty() || status(&response) == 403,
            "{response}"
        );
    }
    let after = sigward.memory_kib("VmRSS");
    let grew = after.saturating_sub(before) / 1024;
    eprintln!("six unauthenticated 60 MiB bodies: RSS {before} KiB → {after} KiB (+{grew} MiB)");
    assert!(grew < 32, "sigward grew by {grew} MiB");

    // A refusal made before the body is read still reaches a client that sends its body
    // without waiting for `100 Continue` (as the JS, Go and Rust SDKs do): sigward reads
    // and discards it (up to 1 MiB) before answering, instead of leaving a broken pipe.
    let stranger = {
        let mut tls = tls_to(&sigward.ca, &endpoint);
        let body = vec![b' '; 300 << 10];
        let head = format!(
            "POST / HTTP/1.1\r\nhost: {direct}\r\ncontent-type: application/x-amz-json-1.0\r\n\
             x-amz-target: DynamoDB_20120810.PutItem\r\nx-amz-date: 20261124T000000Z\r\n\
             authorization: AWS4-HMAC-SHA256 Credential=AKIA999999999999XXXX/20261124/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date, Signature=00\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).expect("head");
        tls.write_all(&body)
            .expect("the whole body, no broken pipe");
        let mut response = vec![0u8; 4096];
        let n = tls.read(&mut response).expect("an answer");
        String::from_utf8_lossy(&response[..n]).into_owned()
    };
    assert_eq!(status(&stranger), 403, "{stranger}");
    assert!(stranger.contains("InvalidClientTokenId"), "{stranger}");

    // An agent's body that does not fit in what is left of the budget: 503 SlowDown.
    let holder = Call::post(
        "dynamodb",
        "/",
        &[
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "DynamoDB_20120810.PutItem"),
        ],
        &format!(
            r#"{{"TableName":"t","Item":{{"id":{{"S":"{}"}}}}}}"#,
            "x".repeat(700 << 10)
        ),
    );
    let bytes = holder.bytes(&direct);
    let mut held = tls_to(&sigward.ca, &endpoint);
    held.write_all(&bytes[..bytes.len() / 2])
        .expect("half a body");
    held.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(500));
    let response = via_endpoint(&sigward, &holder);
    assert_eq!(
        status(&response),
        503,
        "{}",
        &response[..response.len().min(600)]
    );
    assert!(response.contains("SlowDown"), "{response}");
    assert!(response.contains("max_buffered_mib"), "{response}");
    // Once the first is done, there is room again.
    held.write_all(&bytes[bytes.len() / 2..]).expect("the rest");
    let mut first = Vec::new();
    let _ = held.read_to_end(&mut first);
    assert_eq!(status(&String::from_utf8_lossy(&first)), 200);
    let response = via_endpoint(&sigward, &holder);
    assert_eq!(
        status(&response),
        200,
        "{}",
        &response[..response.len().min(600)]
    );
}

/// The config of [`config`], with an audit log and a long response timeout.
fn audited_config(dir: &Path, upstream: &str, proxy: &str) -> String {
    format!(
        "{}\n[audit]\npath = \"{}\"\n",
        config(dir, upstream, proxy)
            .replace("response_timeout = \"2s\"", "response_timeout = \"60s\""),
        dir.join("audit.jsonl").display()
    )
}

/// The audit records so far.
fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn a_shutdown_lets_requests_finish_and_records_what_it_cuts_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, url) = start_upstream(false);
    let mut sigward = Sigward::start(
        dir.path(),
        &audited_config(dir.path(), &url, "shutdown_grace = \"3s\""),
    );
    assert_eq!(status(&via_endpoint(&sigward, &identity())), 200);
    let direct = sigward
        .endpoint_url
        .clone()
        .expect("endpoint_url")
        .trim_start_matches("https://")
        .to_string();
    let ca = sigward.ca.clone();
    let url_direct = sigward.endpoint_url.clone().expect("url");
    let send = move |call: Call<'static>| {
        let ca = ca.clone();
        let url_direct = url_direct.clone();
        std::thread::spawn(move || {
            let host = url_direct.trim_start_matches("https://").to_string();
            let mut tls = tls_to(&ca, &url_direct);
            let _ = tls.write_all(&call.bytes(&host));
            let mut response = Vec::new();
            let _ = tls.read_to_end(&mut response);
            String::from_utf8_lossy(&response).into_owned()
        })
    };
    let slow = send(get_object("/slow/key"));
    let hung = send(get_object("/hang/key"));
    assert!(crate::support::eventually(Duration::from_secs(10), || {
        upstream.slow.load(Ordering::SeqCst) == 1 && upstream.hung.load(Ordering::SeqCst) == 1
    }));

    sigward.signal("TERM");
    // No new connections …
    assert!(
        crate::support::eventually(Duration::from_secs(2), || TcpStream::connect(&direct)
            .is_err()),
        "the direct listener still accepts after SIGTERM"
    );
    // … the request in flight finishes …
    let answer = slow.join().expect("thread");
    assert_eq!(status(&answer), 200, "{answer}");
    // … and after the grace period the process exits 0, the hung request cut off.
    let exit = sigward.wait_exit(Duration::from_secs(15)).expect("exited");
    assert!(exit.success(), "{exit:?}: {}", sigward.log());
    let _ = hung.join();

    let records = audit_records(dir.path());
    let outcome = |path: &str| {
        records
            .iter()
            .find(|r| r["facet"]["path"] == path)
            .map(|r| (r["outcome"].clone(), r["status"].clone()))
    };
    assert_eq!(
        outcome("/slow/key"),
        Some((serde_json::json!("answered"), serde_json::json!(200)))
    );
    assert_eq!(
        outcome("/hang/key"),
        Some((serde_json::json!("shutdown"), serde_json::json!(503)))
    );
    sigward::audit::verify(&dir.path().join("audit.jsonl")).expect("the chain is intact");
}

#[test]
fn a_request_whose_agent_goes_away_is_recorded_as_abandoned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, url) = start_upstream(false);
    let sigward = Sigward::start(dir.path(), &audited_config(dir.path(), &url, ""));
    let endpoint = sigward.endpoint_url.clone().expect("url");
    let host = endpoint.trim_start_matches("https://").to_string();
    let mut tls = tls_to(&sigward.ca, &endpoint);
    tls.write_all(&get_object("/hang/gone").bytes(&host))
        .expect("write");
    tls.flush().expect("flush");
    assert!(crate::support::eventually(
        Duration::from_secs(10),
        || upstream.hung.load(Ordering::SeqCst) == 1
    ));
    drop(tls);
    assert!(
        crate::support::eventually(Duration::from_secs(10), || audit_records(dir.path())
            .iter()
            .any(|r| r["facet"]["path"] == "/hang/gone" && r["outcome"] == "abandoned")),
        "no abandoned record: {:?}",
        audit_records(dir.path())
    );
}

/// Needs root (a tmpfs is mounted); skipped with a notice otherwise.
#[test]
fn the_audit_log_refuses_while_its_disk_is_full_and_serves_again_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("audit-disk");
    std::fs::create_dir(&disk).expect("mount point");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&disk)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a small tmpfs here (not root?)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(disk.clone());
    let (_upstream, url) = start_upstream(false);
    let text = format!(
        "{}\n[audit]\npath = \"{}\"\n",
        config(dir.path(), &url, ""),
        disk.join("audit.jsonl").display()
    );
    let sigward = Sigward::start(dir.path(), &text);
    assert_eq!(status(&via_endpoint(&sigward, &identity())), 200);

    // Fill the disk.
    let filler = disk.join("filler");
    {
        let mut file = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 4096];
        while file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
    }
    let mut refused = None;
    for _ in 0..40 {
        let response = via_endpoint(&sigward, &identity());
        if status(&response) == 503 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("requests went on while the audit log could not be written");
    assert!(refused.contains("cannot be written"), "{refused}");

    // Room again: served again, no restart, and the chain has no torn line.
    std::fs::remove_file(&filler).expect("free the disk");
    assert!(
        crate::support::eventually(Duration::from_secs(5), || status(&via_endpoint(
            &sigward,
            &identity()
        )) == 200),
        "not served again: {}",
        sigward.log()
    );
    assert!(
        sigward.log().contains("can be written again"),
        "{}",
        sigward.log()
    );
    let intact = sigward::audit::verify(&disk.join("audit.jsonl")).expect("intact");
    assert!(intact.seals.is_empty());
}

#[test]
fn a_thousand_idle_tunnels_are_held_and_each_still_serves() {
    const TUNNELS: usize = 1000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_upstream, url) = start_upstream(false);
    let sigward = Sigward::start(dir.path(), &config(dir.path(), &url, ""));
    let host = "sts.us-east-1.amazonaws.com";
    assert_eq!(status(&via_connect(&sigward, host, &identity())), 200);
    let before = sigward.memory_kib("VmRSS");
    let mut tunnels = Vec::with_capacity(TUNNELS);
    for n in 0..TUNNELS {
        match open_tunnel(&sigward, host) {
            Ok(tls) => tunnels.push(tls),
            Err(e) => panic!("tunnel {n}: {e}"),
        }
    }
    let held = sigward.memory_kib("VmRSS");
    let per_tunnel = (held.saturating_sub(before) * 1024) / TUNNELS as u64;
    let mut errors = 0;
    for tls in &mut tunnels {
        let sent = tls.write_all(&identity().bytes(host));
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response);
        if sent.is_err() || status(&String::from_utf8_lossy(&response)) != 200 {
            errors += 1;
        }
    }
    eprintln!(
        "{TUNNELS} idle TLS tunnels: RSS {before} KiB → {held} KiB, {per_tunnel} bytes per tunnel; then one request on each: {errors} errors"
    );
    assert_eq!(errors, 0);
    assert!(per_tunnel < 256 << 10, "{per_tunnel} bytes per idle tunnel");
}

#[test]
fn a_signature_that_does_not_cover_the_body_is_checked_before_the_body_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_upstream, url) = start_upstream(false);
    let sigward = Sigward::start(dir.path(), &config(dir.path(), &url, ""));
    let endpoint = sigward.endpoint_url.clone().expect("url");
    let host = endpoint.trim_start_matches("https://").to_string();
    // A small S3 upload (read whole, so that it is understood) with a declared hash, a
    // wrong signature and `Expect: 100-continue`: refused at once — sigward does not ask
    // for the body of a request it will not serve.
    let body = vec![b'x'; 1000];
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    let call = Call {
        method: "PUT",
        uri: "/bucket/key",
        headers: vec![("expect", "100-continue")],
        body,
        service: "s3",
        region: "us-east-1",
        payload_hash: Some(&hash),
    };
    let bytes = call.bytes(&host);
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let (before, signature) = head.rsplit_once("Signature=").expect("signed");
    let wrong = if signature.starts_with('0') { "1" } else { "0" };
    let head = format!("{before}Signature={wrong}{}", &signature[1..]);
    let mut tls = tls_to(&sigward.ca, &endpoint);
    tls.write_all(head.as_bytes()).expect("head");
    tls.flush().expect("flush");
    let mut response = vec![0u8; 2048];
    let n = tls.read(&mut response).expect("an answer without the body");
    let response = String::from_utf8_lossy(&response[..n]);
    assert!(!response.starts_with("HTTP/1.1 100"), "{response}");
    assert_eq!(status(&response), 403, "{response}");
}

#[test]
fn sessions_carry_the_agents_source_identity_and_tags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, url) = start_upstream(false);
    let text = config(dir.path(), &url, "").replace(
        "response_timeout = \"2s\"",
        "source_identity = \"{agent}\"\ntags = { agent = \"{agent}\", endpoint = \"{endpoint}\", account = \"{account}\" }",
    );
    let sigward = Sigward::start(dir.path(), &text);
    assert_eq!(status(&via_endpoint(&sigward, &identity())), 200);
    let bodies = upstream.assume_bodies.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(bodies[0].as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("RoleSessionName"), Some("sigward-claude"));
    assert_eq!(get("SourceIdentity"), Some("claude"));
    let mut tags: Vec<(String, String)> = (1..=3)
        .filter_map(|n| {
            Some((
                get(&format!("Tags.member.{n}.Key"))?.to_string(),
                get(&format!("Tags.member.{n}.Value"))?.to_string(),
            ))
        })
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            ("account".to_string(), "111111111111".to_string()),
            ("agent".to_string(), "claude".to_string()),
            ("endpoint".to_string(), "aws".to_string()),
        ]
    );
}

//! What moto does not check, checked here by an independent verifier: a recording
//! upstream (a plain HTTP/1.1 server written for this test; it also plays STS) that
//! recomputes the re-signed aws-chunked chunk signatures with its own HMAC-SHA256, and
//! sees whether a body whose hash does not match ever arrives whole. Also: presigned
//! URLs are re-presigned, and concurrent first requests for an account cause one
//! AssumeRole.
//!
//! The agent here is this test, signing with aws-sigv4 and speaking TLS (rustls, trusting
//! sigward's CA) to sigward's direct listener.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use sigward::aws::chunked::Chain;
use sigward::aws::sigv4::{Outgoing, SigningCredentials, resign};

use crate::e2e::Sigward;

const AGENT_KEY: &str = "AKIA111111111111XXXX";
const AGENT_SECRET: &str = "verifier-agent-secret";
const ROLE_KEY: &str = "ASIAVERIFIERROLEKEY1";
const ROLE_SECRET: &str = "verifier-role-secret";

/// A request as the upstream received it: head and de-framed body.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
    complete: bool,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

#[derive(Default)]
pub(crate) struct Upstream {
    pub(crate) recorded: Mutex<Vec<Recorded>>,
    assume_roles: AtomicUsize,
}

/// Serve on 127.0.0.1 until the process ends; answers AssumeRole slowly (so concurrent
/// callers overlap) and everything else with 200.
pub(crate) fn start_upstream() -> (Arc<Upstream>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let state = Arc::new(Upstream::default());
    let shared = Arc::clone(&state);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let state = Arc::clone(&shared);
            std::thread::spawn(move || serve(stream, &state));
        }
    });
    (state, url)
}

fn serve(stream: TcpStream, state: &Upstream) {
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
        let mut recorded = Recorded {
            head,
            body: Vec::new(),
            complete: false,
        };
        let discard = recorded
            .head
            .split_whitespace()
            .nth(1)
            .is_some_and(|p| p.starts_with("/discard"));
        if let Some(len) = recorded.header("content-length").filter(|_| discard) {
            // Count, do not keep.
            let len: usize = len.parse().expect("length");
            let mut buffer = vec![0; 1 << 16];
            let mut read = 0;
            while read < len {
                match reader.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
            recorded.complete = read == len;
        } else if let Some(len) = recorded.header("content-length") {
            let len: usize = len.parse().expect("length");
            let mut body = vec![0; len];
            let mut read = 0;
            while read < len {
                match reader.read(&mut body[read..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
            body.truncate(read);
            recorded.complete = read == len;
            recorded.body = body;
        } else {
            recorded.complete = true;
        }
        let complete = recorded.complete;
        let is_sts = recorded.body.starts_with(b"Action=AssumeRole");
        state.recorded.lock().expect("lock").push(recorded.clone());
        if !complete {
            return;
        }
        let body = if is_sts {
            state.assume_roles.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            format!(
                "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult>\
                 <Credentials><AccessKeyId>{ROLE_KEY}</AccessKeyId><SecretAccessKey>{ROLE_SECRET}</SecretAccessKey>\
                 <SessionToken>verifier-token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>\
                 <AssumedRoleUser><AssumedRoleId>AROAVERIFIER:s</AssumedRoleId><Arn>arn:aws:sts::111111111111:assumed-role/r/s</Arn></AssumedRoleUser>\
                 </AssumeRoleResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleResponse>"
            )
        } else {
            "<ok/>".to_string()
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn start_sigward(dir: &std::path::Path, upstream: &str) -> Sigward {
    start_sigward_with(dir, upstream, "")
}

fn start_sigward_with(dir: &std::path::Path, upstream: &str, extra: &str) -> Sigward {
    Sigward::start(
        dir,
        &format!(
            r#"
[proxy]
listen = "127.0.0.1:0"
endpoint_listen = "127.0.0.1:0"
[state]
dir = "{}"
[credential.base]
access_key_id = "AKIAVERIFIERBASEKEY0"
secret_access_key = "verifier-base-secret"
[[endpoint]]
name = "verifier"
hosts = ["*.amazonaws.com"]
role = "r"
region = "us-east-1"
credential = "base"
upstream = "{upstream}"
{extra}
policies = [{{ module = "builtin:no-secrets" }}]
[[agent]]
name = "claude"
access_key_ids = ["{AGENT_KEY}", "AKIA222222222222XXXX", "AKIA333333333333XXXX"]
secret_access_key = "{AGENT_SECRET}"
"#,
            dir.join("state").display()
        ),
    )
}

/// Send raw bytes over TLS to sigward's direct listener; return the response text.
fn send(sigward: &Sigward, request: &[u8]) -> String {
    send_to(
        &sigward.ca,
        sigward.endpoint_url.as_deref().expect("endpoint_url"),
        request,
    )
}

fn send_to(ca: &std::path::Path, url: &str, request: &[u8]) -> String {
    let mut tls = tls_to(ca, url);
    tls.write_all(request).expect("write");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// A TLS connection to sigward's direct listener at `url`, trusting only its `ca`.
pub(crate) fn tls_to(
    ca: &std::path::Path,
    url: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("ca.pem"))
        .expect("ca");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connection =
        rustls::ClientConnection::new(Arc::new(config), "127.0.0.1".try_into().expect("name"))
            .expect("tls");
    let tcp = TcpStream::connect(url.trim_start_matches("https://")).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    rustls::StreamOwned::new(connection, tcp)
}

/// Sign as the agent for `host` (sigward's own address); returns the head's headers and
/// the seed signature.
fn agent_sign(
    method: &str,
    uri: &str,
    host: &str,
    extra: &[(&str, &str)],
    payload: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> (String, String) {
    let mut headers: Vec<(&str, &str)> = vec![("host", host)];
    headers.extend_from_slice(extra);
    let agent = SigningCredentials {
        access_key_id: AGENT_KEY.into(),
        secret_access_key: AGENT_SECRET.into(),
        session_token: None,
    };
    let signed = resign(
        &Outgoing {
            method,
            uri,
            headers: &headers,
            payload_hash: payload,
            body,
            presign: None,
        },
        "s3",
        "us-east-1",
        &agent,
        now,
    )
    .expect("sign");
    let mut head = format!("{method} {uri} HTTP/1.1\r\nConnection: close\r\n");
    for (n, v) in headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .chain(signed.headers)
    {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    (head, signed.signature)
}

/// The agent's presigned-URL parameters for `method uri` at `host`, as `&k=v…` to append.
fn agent_presign(method: &str, uri: &str, host: &str, now: SystemTime) -> String {
    let agent = SigningCredentials {
        access_key_id: AGENT_KEY.into(),
        secret_access_key: AGENT_SECRET.into(),
        session_token: None,
    };
    let headers = [("host", host)];
    let presigned = resign(
        &Outgoing {
            method,
            uri,
            headers: &headers,
            payload_hash: None,
            body: b"",
            presign: Some(Duration::from_secs(300)),
        },
        "s3",
        "us-east-1",
        &agent,
        now,
    )
    .expect("presign");
    presigned
        .params
        .iter()
        .map(|(k, v)| {
            format!(
                "&{k}={}",
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect()
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC-SHA256 (RFC 2104), written out: the verifier shares no signing code with sigward.
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner_hash = Sha256::new()
        .chain_update(&inner)
        .chain_update(data)
        .finalize();
    Sha256::new()
        .chain_update(&outer)
        .chain_update(inner_hash)
        .finalize()
        .into()
}

/// Check every chunk signature of a recorded aws-chunked body against `secret`, starting
/// from the seed in its Authorization header. Returns the data.
fn verify_chunks(recorded: &Recorded, secret: &str) -> Result<Vec<u8>, String> {
    let auth = recorded.header("authorization").ok_or("no authorization")?;
    let seed = auth
        .rsplit_once("Signature=")
        .ok_or("no seed")?
        .1
        .to_string();
    let credential = auth
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split(',').next())
        .ok_or("no credential")?;
    let scope = credential.split_once('/').ok_or("scope")?.1.to_string();
    let date = recorded.header("x-amz-date").ok_or("no date")?;
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), &date.as_bytes()[..8]);
    for part in scope.split('/').skip(1) {
        key = hmac(&key, part.as_bytes());
    }
    let empty = hex::encode(Sha256::digest(b""));
    let mut previous = seed;
    let mut rest = recorded.body.as_slice();
    let mut data = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("no chunk header")?;
        let line = std::str::from_utf8(&rest[..end]).map_err(|e| e.to_string())?;
        let (size, claimed) = line
            .split_once(";chunk-signature=")
            .ok_or(format!("bad chunk header {line:?}"))?;
        let size = usize::from_str_radix(size, 16).map_err(|e| e.to_string())?;
        let chunk = &rest[end + 2..end + 2 + size];
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{date}\n{scope}\n{previous}\n{empty}\n{}",
            hex::encode(Sha256::digest(chunk))
        );
        let expected = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        if expected != claimed {
            return Err(format!(
                "chunk of {size} bytes: signature {claimed} != {expected}"
            ));
        }
        data.extend_from_slice(chunk);
        previous = expected;
        rest = &rest[end + 2 + size + 2..];
        if size == 0 {
            return Ok(data);
        }
    }
}

fn chunked_body(chain: &mut Chain, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for data in chunks.iter().copied().chain([&b""[..]]) {
        let sig = chain.sign_chunk(&bytes::Bytes::copy_from_slice(data));
        out.extend_from_slice(format!("{:x};chunk-signature={sig}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[test]
fn an_independent_verifier_checks_what_moto_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, url) = start_upstream();
    let sigward = start_sigward(dir.path(), &url);
    let host = sigward
        .endpoint_url
        .as_deref()
        .expect("endpoint url")
        .trim_start_matches("https://")
        .to_string();
    let recorded = |path: &str| -> Vec<Recorded> {
        upstream
            .recorded
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| {
                r.head
                    .split_whitespace()
                    .nth(1)
                    .is_some_and(|p| p.starts_with(path))
            })
            .cloned()
            .collect()
    };

    // Concurrent first requests for one account: one AssumeRole.
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let ca = sigward.ca.clone();
            let endpoint_url = sigward.endpoint_url.clone().expect("endpoint url");
            let host = host.clone();
            std::thread::spawn(move || {
                let now = SystemTime::now();
                let (head, _) = agent_sign(
                    "GET",
                    &format!("/warm-{i}/k"),
                    &host,
                    &[],
                    Some("UNSIGNED-PAYLOAD"),
                    b"",
                    now,
                );
                send_to(&ca, &endpoint_url, format!("{head}\r\n").as_bytes())
            })
        })
        .collect();
    for t in threads {
        let response = t.join().expect("thread");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    assert_eq!(
        upstream.assume_roles.load(Ordering::SeqCst),
        1,
        "single flight"
    );

    // A signed aws-chunked upload: every chunk re-signed with the role's key.
    let now = SystemTime::now();
    let chunks: [&[u8]; 3] = [&[b'a'; 65536], &[b'b'; 65536], b"tail of the object"];
    let decoded: usize = chunks.iter().map(|c| c.len()).sum();
    let encoded_len = {
        let mut scratch = Chain::new(AGENT_KEY, AGENT_SECRET, now, "us-east-1", "s3", "0");
        chunked_body(&mut scratch, &chunks).len()
    };
    let (extra_len, decoded_len) = (encoded_len.to_string(), decoded.to_string());
    let extra = [
        ("content-encoding", "aws-chunked"),
        ("content-length", extra_len.as_str()),
        ("x-amz-decoded-content-length", decoded_len.as_str()),
    ];
    let (head, seed) = agent_sign(
        "PUT",
        "/bucket/chunked",
        &host,
        &extra,
        Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        b"",
        now,
    );
    let mut agent_chain = Chain::new(AGENT_KEY, AGENT_SECRET, now, "us-east-1", "s3", &seed);
    let body = chunked_body(&mut agent_chain, &chunks);
    let mut request = format!("{head}\r\n").into_bytes();
    request.extend_from_slice(&body);
    let response = send(&sigward, &request);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let got = recorded("/bucket/chunked");
    assert_eq!(got.len(), 1);
    assert!(
        got[0]
            .header("authorization")
            .is_some_and(|a| a.contains(ROLE_KEY))
    );
    let data = verify_chunks(&got[0], ROLE_SECRET).expect("chunks verify with the role's key");
    assert_eq!(data, chunks.concat());
    assert!(
        verify_chunks(&got[0], AGENT_SECRET).is_err(),
        "the agent's chunk signatures did not survive"
    );
    assert_eq!(got[0].body.len(), body.len(), "Content-Length holds");

    // A tampered chunk: refused, and the tampered bytes never reach the upstream.
    let (head, seed) = agent_sign(
        "PUT",
        "/bucket/tampered",
        &host,
        &extra,
        Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        b"",
        now,
    );
    let mut agent_chain = Chain::new(AGENT_KEY, AGENT_SECRET, now, "us-east-1", "s3", &seed);
    let mut body = chunked_body(&mut agent_chain, &chunks);
    let at = body
        .windows(4)
        .position(|w| w == b"bbbb")
        .expect("second chunk");
    body[at] = b'X';
    let mut request = format!("{head}\r\n").into_bytes();
    request.extend_from_slice(&body);
    let response = send(&sigward, &request);
    assert!(response.contains("SignatureDoesNotMatch"), "{response}");
    for r in recorded("/bucket/tampered") {
        assert!(!r.complete, "a request with a bad chunk arrived whole");
        assert!(
            !r.body.windows(4).any(|w| w == b"Xbbb"),
            "the tampered chunk was forwarded"
        );
    }

    // A streamed body whose bytes do not match its declared hash never arrives whole.
    let big = vec![7u8; 3 << 20];
    let wrong = hex::encode(Sha256::digest(b"something else"));
    let length = big.len().to_string();
    let (head, _) = agent_sign(
        "PUT",
        "/bucket/mismatch",
        &host,
        &[("content-length", length.as_str())],
        Some(&wrong),
        b"",
        now,
    );
    let mut request = format!("{head}\r\n").into_bytes();
    request.extend_from_slice(&big);
    let response = send(&sigward, &request);
    assert!(response.contains("XAmzContentSHA256Mismatch"), "{response}");
    for r in recorded("/bucket/mismatch") {
        assert!(!r.complete, "a body with the wrong hash arrived whole");
    }
    // The same body with its true hash arrives whole.
    let right = hex::encode(Sha256::digest(&big));
    let (head, _) = agent_sign(
        "PUT",
        "/bucket/match",
        &host,
        &[("content-length", length.as_str())],
        Some(&right),
        b"",
        now,
    );
    let mut request = format!("{head}\r\n").into_bytes();
    request.extend_from_slice(&big);
    let response = send(&sigward, &request);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let got = recorded("/bucket/match");
    assert!(got.len() == 1 && got[0].complete && got[0].body == big);

    // A small body (read whole, for understanding) is checked against its hash too.
    let small = b"a small object";
    let (head, _) = agent_sign(
        "PUT",
        "/bucket/small-mismatch",
        &host,
        &[("content-length", "14")],
        Some(&wrong),
        b"",
        now,
    );
    let mut request = format!("{head}\r\n").into_bytes();
    request.extend_from_slice(small);
    let response = send(&sigward, &request);
    assert!(response.contains("XAmzContentSHA256Mismatch"), "{response}");
    assert!(recorded("/bucket/small-mismatch").is_empty());

    // A presigned URL is re-presigned with the role's credentials.
    let query = agent_presign("GET", "/bucket/presigned?versionId=1", &host, now);
    let request = format!(
        "GET /bucket/presigned?versionId=1{query} HTTP/1.1\r\nhost: {host}\r\nConnection: close\r\n\r\n"
    );
    let response = send(&sigward, request.as_bytes());
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let got = recorded("/bucket/presigned");
    let target = got[0]
        .head
        .split_whitespace()
        .nth(1)
        .expect("target")
        .to_string();
    assert!(
        target.contains(&format!("X-Amz-Credential={ROLE_KEY}")),
        "{target}"
    );
    assert!(
        target.contains("X-Amz-Security-Token=verifier-token"),
        "{target}"
    );
    assert!(!target.contains(AGENT_KEY), "{target}");
    assert!(target.contains("versionId=1"), "{target}");
    let parsed = sigward::aws::request::Request::parse(got[0].head.as_bytes()).expect("parse");
    let scope = sigward::aws::scope::Scope::of(&parsed)
        .expect("scope")
        .expect("signed");
    assert_eq!(
        sigward::aws::sigv4::verify(&parsed, &scope, ROLE_SECRET, SystemTime::now()),
        Ok(())
    );
}

/// An egress proxy for the brokered dial: answers CONNECT, records what was asked for,
/// relays bytes. Returns its address and the authorities it was asked to connect to.
fn start_egress_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&asked);
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(client.try_clone().expect("clone"));
                let mut first = String::new();
                reader.read_line(&mut first).expect("read");
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let authority = first
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                log.lock().expect("lock").push(authority.clone());
                let mut client = client;
                let Ok(server) = TcpStream::connect(&authority) else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
                    return;
                };
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .expect("write");
                let (mut c2, mut s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let mut server = server;
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut reader, &mut server);
                });
                let _ = std::io::copy(&mut s2, &mut c2);
            });
        }
    });
    (address, asked)
}

/// `dial_via`: STS and API calls both go through the egress proxy. With
/// `verify_signatures = false` the agent's secret is not checked (and start-up warns).
#[test]
fn the_brokered_dial_carries_sts_and_api_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, url) = start_upstream();
    let (proxy, asked) = start_egress_proxy();
    let sigward = start_sigward_with(
        dir.path(),
        &url,
        &format!("dial_via = \"http://{proxy}\"\nverify_signatures = false"),
    );
    assert!(
        sigward.log().contains("verify_signatures = false"),
        "{}",
        sigward.log()
    );
    let host = sigward
        .endpoint_url
        .as_deref()
        .expect("endpoint url")
        .trim_start_matches("https://")
        .to_string();
    // Signed with a placeholder secret: accepted, since signatures are not verified.
    let agent = SigningCredentials {
        access_key_id: AGENT_KEY.into(),
        secret_access_key: "placeholder".into(),
        session_token: None,
    };
    let headers = [("host", host.as_str())];
    let signed = resign(
        &Outgoing {
            method: "GET",
            uri: "/brokered/object",
            headers: &headers,
            payload_hash: Some("UNSIGNED-PAYLOAD"),
            body: b"",
            presign: None,
        },
        "s3",
        "us-east-1",
        &agent,
        SystemTime::now(),
    )
    .expect("sign");
    let mut request =
        format!("GET /brokered/object HTTP/1.1\r\nhost: {host}\r\nConnection: close\r\n");
    for (n, v) in &signed.headers {
        request.push_str(&format!("{n}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let response = send(&sigward, request.as_bytes());
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(upstream.assume_roles.load(Ordering::SeqCst), 1);
    let upstream_authority = url.trim_start_matches("http://").to_string();
    let asked = asked.lock().expect("lock").clone();
    assert!(
        !asked.is_empty() && asked.iter().all(|a| *a == upstream_authority),
        "{asked:?}"
    );
    let recorded = upstream.recorded.lock().expect("lock").clone();
    assert!(
        recorded
            .iter()
            .any(|r| r.head.starts_with("GET /brokered/object"))
    );
    assert!(
        recorded
            .iter()
            .any(|r| r.body.starts_with(b"Action=AssumeRole"))
    );
}

/// A 1 GiB upload streams: sigward's memory does not grow by more than a few MiB.
#[test]
fn a_gigabyte_upload_streams_through_in_constant_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, url) = start_upstream();
    let sigward = start_sigward(dir.path(), &url);
    let host = sigward
        .endpoint_url
        .as_deref()
        .expect("endpoint url")
        .trim_start_matches("https://")
        .to_string();
    const SIZE: usize = 1 << 30;
    let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let mut hasher = Sha256::new();
    for _ in 0..SIZE / block.len() {
        hasher.update(&block);
    }
    let hash = hex::encode(hasher.finalize());
    // Warm up (STS, TLS, a first request) before measuring.
    let (head, _) = agent_sign(
        "GET",
        "/discard/warm",
        &host,
        &[],
        Some("UNSIGNED-PAYLOAD"),
        b"",
        SystemTime::now(),
    );
    assert!(send(&sigward, format!("{head}\r\n").as_bytes()).starts_with("HTTP/1.1 200"));
    let before = sigward.memory_kib("VmRSS");

    let length = SIZE.to_string();
    let (head, _) = agent_sign(
        "PUT",
        "/discard/gigabyte",
        &host,
        &[("content-length", length.as_str())],
        Some(&hash),
        b"",
        SystemTime::now(),
    );
    let url = sigward.endpoint_url.clone().expect("url");
    let ca = sigward.ca.clone();
    // Written block by block: the test never holds the gigabyte either.
    let response = {
        let mut tls = tls_to(&ca, &url);
        tls.write_all(format!("{head}\r\n").as_bytes())
            .expect("head");
        for _ in 0..SIZE / block.len() {
            tls.write_all(&block).expect("body");
        }
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let peak = sigward.memory_kib("VmHWM");
    let grew_mib = peak.saturating_sub(before) / 1024;
    eprintln!("1 GiB upload: sigward RSS {before} KiB before, peak {peak} KiB (+{grew_mib} MiB)");
    assert!(
        grew_mib < 16,
        "sigward grew by {grew_mib} MiB for a 1 GiB upload"
    );
    let recorded = upstream.recorded.lock().expect("lock").clone();
    assert!(
        recorded
            .iter()
            .any(|r| r.head.starts_with("PUT /discard/gigabyte") && r.complete),
        "the upload did not arrive whole"
    );
}

/// A presigned PUT carries no payload hash (`UNSIGNED-PAYLOAD` is implied): it streams like
/// any upload, past the 64 MiB sigward reads whole, and arrives complete.
#[test]
fn a_presigned_upload_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, url) = start_upstream();
    let sigward = start_sigward(dir.path(), &url);
    let host = sigward
        .endpoint_url
        .as_deref()
        .expect("endpoint url")
        .trim_start_matches("https://")
        .to_string();
    let query = agent_presign("PUT", "/discard/presigned-upload", &host, SystemTime::now())
        .replacen('&', "?", 1);
    const SIZE: usize = 80 << 20;
    let block = vec![7u8; 1 << 20];
    let mut tls = tls_to(&sigward.ca, sigward.endpoint_url.as_deref().expect("url"));
    tls.write_all(
        format!(
            "PUT /discard/presigned-upload{query} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {SIZE}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("head");
    for _ in 0..SIZE / block.len() {
        tls.write_all(&block).expect("body");
    }
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let recorded = upstream.recorded.lock().expect("lock").clone();
    let upload = recorded
        .iter()
        .find(|r| r.head.starts_with("PUT /discard/presigned-upload"))
        .expect("the upload reached the upstream");
    assert!(upload.complete, "the upload did not arrive whole");
    assert!(
        upload
            .head
            .contains(&format!("X-Amz-Credential={ROLE_KEY}")),
        "{}",
        upload.head
    );
}

/// `sigward serve --config` watches its config: an edit that changes the policies takes
/// effect on the running proxy.
#[test]
fn a_config_edit_reloads_the_running_proxys_policies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_upstream, url) = start_upstream();
    let sigward = start_sigward(dir.path(), &url);
    let host = sigward
        .endpoint_url
        .as_deref()
        .expect("endpoint url")
        .trim_start_matches("https://")
        .to_string();
    let get_secret = || {
        let body = br#"{"SecretId":"db-password"}"#;
        let headers = [
            ("host", host.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "secretsmanager.GetSecretValue"),
        ];
        let agent = SigningCredentials {
            access_key_id: AGENT_KEY.into(),
            secret_access_key: AGENT_SECRET.into(),
            session_token: None,
        };
        let signed = resign(
            &Outgoing {
                method: "POST",
                uri: "/",
                headers: &headers,
                payload_hash: None,
                body,
                presign: None,
            },
            "secretsmanager",
            "us-east-1",
            &agent,
            SystemTime::now(),
        )
        .expect("sign");
        let mut request = format!(
            "POST / HTTP/1.1\r\nConnection: close\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (n, v) in headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .chain(signed.headers)
        {
            request.push_str(&format!("{n}: {v}\r\n"));
        }
        request.push_str("\r\n");
        let mut request = request.into_bytes();
        request.extend_from_slice(body);
        send(&sigward, &request)
    };
    let denied = get_secret();
    assert!(
        denied.starts_with("HTTP/1.1 403") && denied.contains("denied by policy no-secrets"),
        "{denied}"
    );
    let path = dir.path().join("sigward.toml");
    let config = std::fs::read_to_string(&path).expect("config");
    std::fs::write(
        &path,
        config.replace("builtin:no-secrets", "builtin:read-only"),
    )
    .expect("edit config");
    assert!(
        crate::support::eventually(Duration::from_secs(10), || get_secret()
            .starts_with("HTTP/1.1 200")),
        "the edited config did not take effect: {}",
        sigward.log()
    );
}

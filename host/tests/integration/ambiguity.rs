//! One request, one meaning, tried as an attacker holding a valid agent key would: each
//! request here is signed correctly with the agent's key and hand-built so that sigward
//! and AWS could read it differently (the operation named twice, a header twice, a body
//! whose media type says another protocol, a JSON key twice, a host that is not the
//! service's, a region that builds a host). With only `builtin:read-only` and
//! `builtin:no-secrets`, every one of them must be refused with a 400 that says what was
//! ambiguous, and the upstream — a recording server playing AWS (verifier.rs) — must
//! receive nothing but the AssumeRole calls. Controls show the same calls, sent with one
//! meaning, are forwarded, so the harness can see a forward when there is one.
//!
//! Both listeners are used: CONNECT (as HTTPS_PROXY clients do, TLS to a leaf for the
//! AWS host) and the direct listener (AWS_ENDPOINT_URL).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sigward::aws::sigv4::{Outgoing, SigningCredentials, resign};

use crate::e2e::Sigward;
use crate::verifier::{Upstream, start_upstream, tls_to};

pub(crate) const AGENT_KEY: &str = "AKIA111111111111XXXX";
pub(crate) const AGENT_SECRET: &str = "ambiguity-agent-secret";

fn start(dir: &Path, upstream: &str) -> Sigward {
    Sigward::start(
        dir,
        &format!(
            r#"
[proxy]
listen = "127.0.0.1:0"
endpoint_listen = "127.0.0.1:0"
[state]
dir = "{state}"
[audit]
path = "{audit}"
[credential.base]
access_key_id = "AKIAAMBIGUITYBASEKEY"
secret_access_key = "ambiguity-base-secret"
[[endpoint]]
name = "aws"
hosts = ["*.amazonaws.com"]
role = "r"
region = "us-east-1"
credential = "base"
upstream = "{upstream}"
approval_timeout = "1s"
policies = [{{ module = "builtin:read-only" }}, {{ module = "builtin:no-secrets" }}]
[[agent]]
name = "claude"
access_key_ids = ["{AGENT_KEY}"]
secret_access_key = "{AGENT_SECRET}"
"#,
            state = dir.join("state").display(),
            audit = dir.join("audit.jsonl").display(),
        ),
    )
}

/// One hand-built request, signed with the agent's key over exactly these headers
/// (repeated ones included, joined as SigV4 canonicalises them).
pub(crate) struct Call<'a> {
    pub(crate) method: &'a str,
    pub(crate) uri: &'a str,
    pub(crate) headers: Vec<(&'a str, &'a str)>,
    pub(crate) body: Vec<u8>,
    pub(crate) service: &'a str,
    pub(crate) region: &'a str,
    pub(crate) payload_hash: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub(crate) fn post(
        service: &'a str,
        uri: &'a str,
        headers: &[(&'a str, &'a str)],
        body: &str,
    ) -> Self {
        Call {
            method: "POST",
            uri,
            headers: headers.to_vec(),
            body: body.as_bytes().to_vec(),
            service,
            region: "us-east-1",
            payload_hash: None,
        }
    }

    /// The bytes on the wire for `host` (the Host header and the signed host).
    pub(crate) fn bytes(&self, host: &str) -> Vec<u8> {
        let mut headers: Vec<(&str, &str)> = vec![("host", host)];
        headers.extend_from_slice(&self.headers);
        let length = self.body.len().to_string();
        headers.push(("content-length", &length));
        let agent = SigningCredentials {
            access_key_id: AGENT_KEY.into(),
            secret_access_key: AGENT_SECRET.into(),
            session_token: None,
        };
        let signed = resign(
            &Outgoing {
                method: self.method,
                uri: self.uri,
                headers: &headers,
                payload_hash: self.payload_hash,
                body: &self.body,
                presign: None,
            },
            self.service,
            self.region,
            &agent,
            SystemTime::now(),
        )
        .expect("sign");
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.uri);
        for (n, v) in headers
            .iter()
            .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
            .chain(signed.headers)
        {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("connection: close\r\n\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A TLS connection through a CONNECT tunnel to `host`, as HTTPS_PROXY clients open one
/// (the handshake done); the proxy's answer when it refuses the CONNECT.
pub(crate) fn open_tunnel(
    sigward: &Sigward,
    host: &str,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let proxy = sigward.proxy.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(proxy).expect("connect to the proxy");
    tcp.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(
        tcp,
        "CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n"
    )
    .expect("CONNECT");
    let mut reader = BufReader::new(tcp.try_clone().expect("clone"));
    let mut status = String::new();
    reader.read_line(&mut status).expect("CONNECT answer");
    if !status.contains(" 200") {
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        return Err(format!("{status}{rest}"));
    }
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("CONNECT headers");
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&sigward.ca).expect("ca.pem"))
        .expect("ca");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = host.to_string().try_into().expect("server name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("tls");
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    Ok(tls)
}

/// Send through a CONNECT tunnel to `host`, as HTTPS_PROXY clients do.
pub(crate) fn via_connect(sigward: &Sigward, host: &str, call: &Call<'_>) -> String {
    let mut tls = match open_tunnel(sigward, host) {
        Ok(tls) => tls,
        Err(refused) => return refused,
    };
    tls.write_all(&call.bytes(host)).expect("write");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// Send to the direct listener (AWS_ENDPOINT_URL): the host comes from the scope.
pub(crate) fn via_endpoint(sigward: &Sigward, call: &Call<'_>) -> String {
    let url = sigward.endpoint_url.as_deref().expect("endpoint_url");
    let mut tls = tls_to(&sigward.ca, url);
    tls.write_all(&call.bytes(url.trim_start_matches("https://")))
        .expect("write");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// What reached the upstream, less the AssumeRole calls sigward makes itself.
fn forwarded(upstream: &Upstream) -> Vec<String> {
    upstream
        .recorded
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| !r.body.starts_with(b"Action=AssumeRole"))
        .map(|r| {
            format!(
                "{}\n{}",
                r.head.lines().next().unwrap_or_default(),
                String::from_utf8_lossy(&r.body)
            )
        })
        .collect()
}

pub(crate) fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The facet of the latest audit record for `action` (the writer may lag the response).
fn audited(dir: &Path, action: &str) -> serde_json::Value {
    let mut found = serde_json::Value::Null;
    let seen = crate::support::eventually(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
        found = text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|record| record["facet"].clone())
            .find(|facet| facet["action"] == action)
            .unwrap_or_default();
        !found.is_null()
    });
    assert!(seen, "no audit record for {action}");
    found
}

const FORM: (&str, &str) = (
    "content-type",
    "application/x-www-form-urlencoded; charset=utf-8",
);
const JSON: (&str, &str) = ("content-type", "application/x-amz-json-1.0");

#[test]
fn requests_with_two_meanings_are_refused_and_never_reach_the_upstream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, url) = start_upstream();
    let sigward = start(dir.path(), &url);

    // Controls: one meaning each, forwarded (read-only allows them).
    let describe = Call::post(
        "ec2",
        "/",
        &[FORM],
        "Action=DescribeInstances&Version=2016-11-15",
    );
    for response in [
        via_connect(&sigward, "ec2.us-east-1.amazonaws.com", &describe),
        via_endpoint(&sigward, &describe),
    ] {
        assert_eq!(status(&response), 200, "control: {response}");
    }
    let get_item = Call::post(
        "dynamodb",
        "/",
        &[JSON, ("x-amz-target", "DynamoDB_20120810.GetItem")],
        r#"{"TableName":"public","Key":{"id":{"S":"1"}}}"#,
    );
    let response = via_connect(&sigward, "dynamodb.us-east-1.amazonaws.com", &get_item);
    assert_eq!(status(&response), 200, "control: {response}");
    assert_eq!(
        audited(dir.path(), "GetItem")["resources"],
        serde_json::json!(["arn:aws:dynamodb:us-east-1:111111111111:table/public"])
    );
    let before = forwarded(&upstream).len();
    assert_eq!(before, 3, "the controls were forwarded");

    // Each: (what it tries, the call, the host it is sent to, what the refusal names).
    let terminate = "Action=TerminateInstances&InstanceId.1=i-0123456789abcdef0&Version=2016-11-15";
    let cases: Vec<(&str, Call<'_>, &str, &str)> = vec![
        (
            "Action in the URL (a read) and in the body (a write)",
            Call::post("ec2", "/?Action=DescribeInstances", &[FORM], terminate),
            "ec2.us-east-1.amazonaws.com",
            "Action is in both the URL query and the form body",
        ),
        (
            "Action twice in the body",
            Call::post(
                "ec2",
                "/",
                &[FORM],
                "Action=DescribeInstances&Action=TerminateInstances&InstanceId.1=i-1",
            ),
            "ec2.us-east-1.amazonaws.com",
            "Action appears 2 times",
        ),
        (
            "Action spelled in another case",
            Call::post(
                "iam",
                "/",
                &[FORM],
                "action=CreateUser&UserName=mallory&Version=2010-05-08",
            ),
            "iam.amazonaws.com",
            "is spelled",
        ),
        (
            "an upper-case form Content-Type hiding the body's Action",
            Call::post(
                "ec2",
                "/?Action=DescribeInstances",
                &[("content-type", "APPLICATION/X-WWW-FORM-URLENCODED")],
                terminate,
            ),
            "ec2.us-east-1.amazonaws.com",
            "Action is in both",
        ),
        (
            "GetCallerIdentity in the URL, AssumeRole in the body",
            Call::post(
                "sts",
                "/?Action=GetCallerIdentity&Version=2011-06-15",
                &[FORM],
                "Action=AssumeRole&RoleArn=arn:aws:iam::111111111111:role/admin&RoleSessionName=x&Version=2011-06-15",
            ),
            "sts.amazonaws.com",
            "Action is in both",
        ),
        (
            "X-Amz-Target and Action together",
            Call::post(
                "sqs",
                "/",
                &[FORM, ("x-amz-target", "AmazonSQS.ListQueues")],
                "Action=DeleteQueue&QueueUrl=https://sqs.us-east-1.amazonaws.com/111111111111/q",
            ),
            "sqs.us-east-1.amazonaws.com",
            "X-Amz-Target and an Action parameter",
        ),
        (
            "X-Amz-Target twice",
            Call::post(
                "dynamodb",
                "/",
                &[
                    JSON,
                    ("x-amz-target", "DynamoDB_20120810.DescribeTable"),
                    ("x-amz-target", "DynamoDB_20120810.DeleteTable"),
                ],
                r#"{"TableName":"public"}"#,
            ),
            "dynamodb.us-east-1.amazonaws.com",
            "header x-amz-target appears more than once",
        ),
        (
            "Content-Type twice",
            Call::post(
                "dynamodb",
                "/",
                &[
                    JSON,
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("x-amz-target", "DynamoDB_20120810.DescribeTable"),
                ],
                r#"{"TableName":"public"}"#,
            ),
            "dynamodb.us-east-1.amazonaws.com",
            "header content-type appears more than once",
        ),
        (
            "a JSON target with a form body",
            Call::post(
                "dynamodb",
                "/",
                &[FORM, ("x-amz-target", "DynamoDB_20120810.DescribeTable")],
                "Action=DeleteTable&TableName=vault",
            ),
            "dynamodb.us-east-1.amazonaws.com",
            "X-Amz-Target and an Action parameter",
        ),
        (
            "a JSON target with a body of another media type",
            Call::post(
                "dynamodb",
                "/",
                &[
                    ("content-type", "text/plain"),
                    ("x-amz-target", "DynamoDB_20120810.DescribeTable"),
                ],
                r#"{"TableName":"public"}"#,
            ),
            "dynamodb.us-east-1.amazonaws.com",
            "a JSON call with a body of Content-Type",
        ),
        (
            "a JSON key twice (the read names one table, the upstream may take the other)",
            Call::post(
                "dynamodb",
                "/",
                &[JSON, ("x-amz-target", "DynamoDB_20120810.GetItem")],
                r#"{"TableName":"public","Key":{"id":{"S":"1"}},"TableName":"vault"}"#,
            ),
            "dynamodb.us-east-1.amazonaws.com",
            "has the key",
        ),
        (
            "a JSON key twice in another case",
            Call::post(
                "secretsmanager",
                "/",
                &[
                    ("content-type", "application/x-amz-json-1.1"),
                    ("x-amz-target", "secretsmanager.DescribeSecret"),
                ],
                r#"{"SecretId":"public","secretId":"vault"}"#,
            ),
            "secretsmanager.us-east-1.amazonaws.com",
            "has the keys",
        ),
        (
            "a JSON body that is not JSON",
            Call::post(
                "dynamodb",
                "/",
                &[JSON, ("x-amz-target", "DynamoDB_20120810.DescribeTable")],
                "TableName=vault",
            ),
            "dynamodb.us-east-1.amazonaws.com",
            "not one JSON object",
        ),
        (
            "a body in an encoding sigward does not read",
            Call::post(
                "dynamodb",
                "/",
                &[
                    JSON,
                    ("content-encoding", "br"),
                    ("x-amz-target", "DynamoDB_20120810.DescribeTable"),
                ],
                r#"{"TableName":"public"}"#,
            ),
            "dynamodb.us-east-1.amazonaws.com",
            "not one sigward decodes",
        ),
        (
            "a query parameter in the URL and the body",
            Call::post(
                "sqs",
                "/?QueueUrl=https://sqs.us-east-1.amazonaws.com/111111111111/public",
                &[FORM],
                "Action=GetQueueAttributes&QueueUrl=https://sqs.us-east-1.amazonaws.com/111111111111/vault",
            ),
            "sqs.us-east-1.amazonaws.com",
            "has the key",
        ),
        (
            "a customer's host under amazonaws.com (EC2 public DNS)",
            describe_again(),
            "ec2-203-0-113-5.compute-1.amazonaws.com",
            "is not an endpoint of any service signing as",
        ),
        (
            "a name that only mentions the service",
            describe_again(),
            "my-ec2-lb-123.us-east-1.elb.amazonaws.com",
            "is not an endpoint",
        ),
        (
            "an S3 access point judged as a bucket",
            Call {
                method: "GET",
                uri: "/secret.txt",
                headers: vec![],
                body: Vec::new(),
                service: "s3",
                region: "us-east-1",
                payload_hash: Some("UNSIGNED-PAYLOAD"),
            },
            "vault-111111111111.s3-accesspoint.us-east-1.amazonaws.com",
            "S3 access point endpoint",
        ),
    ];
    for (what, call, host, names) in &cases {
        let response = via_connect(&sigward, host, call);
        assert_eq!(status(&response), 400, "{what}: {response}");
        assert!(
            response.contains(names),
            "{what}: expected {names:?} in {response}"
        );
        assert_eq!(
            forwarded(&upstream).len(),
            before,
            "{what} reached the upstream"
        );
        // The same bytes on the direct listener (the host from the scope) are refused
        // too, except the host cases, which only a tunnel can name.
        if !host.contains("compute-1") && !host.contains("elb") && !host.contains("accesspoint") {
            let response = via_endpoint(&sigward, call);
            assert_eq!(status(&response), 400, "{what} (direct): {response}");
            assert_eq!(
                forwarded(&upstream).len(),
                before,
                "{what} reached the upstream"
            );
        }
    }

    // The scope's region never builds a host: on the direct listener a crafted region is
    // refused before anything is dialled.
    for region in [
        "evil.example#",
        "x.evil.example?",
        "evil.example:443/",
        "us-east-9",
    ] {
        let mut call = describe_again();
        call.region = region;
        let response = via_endpoint(&sigward, &call);
        assert!(
            matches!(status(&response), 400 | 403),
            "region {region:?}: {response}"
        );
        assert_eq!(forwarded(&upstream).len(), before, "region {region:?}");
    }

    // A bucket is everything left of S3's endpoint: a bucket name with "s3" labels in it
    // is judged as the whole name.
    let get = Call {
        method: "GET",
        uri: "/k",
        headers: vec![],
        body: Vec::new(),
        service: "s3",
        region: "us-east-1",
        payload_hash: Some("UNSIGNED-PAYLOAD"),
    };
    let response = via_connect(&sigward, "a.s3.b.s3.us-east-1.amazonaws.com", &get);
    assert_eq!(status(&response), 200, "{response}");
    assert_eq!(
        audited(dir.path(), "GetObject")["resources"],
        serde_json::json!(["arn:aws:s3:::a.s3.b/k"])
    );
}

fn describe_again() -> Call<'static> {
    Call::post(
        "ec2",
        "/",
        &[FORM],
        "Action=DescribeInstances&Version=2016-11-15",
    )
}

#[test]
fn a_body_that_carries_the_call_is_read_whatever_its_payload_hash_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (upstream, url) = start_upstream();
    let sigward = start(dir.path(), &url);

    // UNSIGNED-PAYLOAD on a query service: the body is still read, so the DeleteQueue in
    // it is judged (read-only holds it for a human, who does not come), not an empty call.
    let mut delete = Call::post(
        "sqs",
        "/",
        &[FORM],
        "Action=DeleteQueue&QueueUrl=https://sqs.us-east-1.amazonaws.com/111111111111/q",
    );
    delete.payload_hash = Some("UNSIGNED-PAYLOAD");
    let response = via_connect(&sigward, "sqs.us-east-1.amazonaws.com", &delete);
    assert_eq!(status(&response), 403, "{response}");
    assert_eq!(
        audited(dir.path(), "DeleteQueue")["iam_action"],
        "sqs:DeleteQueue"
    );
    assert!(
        forwarded(&upstream).is_empty(),
        "{:?}",
        forwarded(&upstream)
    );

    // A large JSON body (over a MiB) is read and judged from its fields.
    let padding = "x".repeat(2 << 20);
    let body = format!(r#"{{"TableName":"public","Key":{{"id":{{"S":"{padding}"}}}}}}"#);
    let get = Call::post(
        "dynamodb",
        "/",
        &[JSON, ("x-amz-target", "DynamoDB_20120810.GetItem")],
        &body,
    );
    let response = via_connect(&sigward, "dynamodb.us-east-1.amazonaws.com", &get);
    assert_eq!(
        status(&response),
        200,
        "{}",
        &response[..response.len().min(400)]
    );
    let facet = audited(dir.path(), "GetItem");
    assert_eq!(
        facet["resources"],
        serde_json::json!(["arn:aws:dynamodb:us-east-1:111111111111:table/public"])
    );

    // aws-chunked framing on a JSON service: the body cannot be read, so it is refused.
    let mut chunked = Call::post(
        "dynamodb",
        "/",
        &[
            JSON,
            ("content-encoding", "aws-chunked"),
            ("x-amz-target", "DynamoDB_20120810.DescribeTable"),
        ],
        "16;chunk-signature=0\r\n{\"TableName\":\"vault\"}\r\n",
    );
    chunked.payload_hash = Some("UNSIGNED-PAYLOAD");
    let before = forwarded(&upstream).len();
    let response = via_connect(&sigward, "dynamodb.us-east-1.amazonaws.com", &chunked);
    assert_eq!(status(&response), 400, "{response}");
    assert!(response.contains("was not read"), "{response}");
    assert_eq!(forwarded(&upstream).len(), before);
}

/// Refusals made before the credential scope names the service still come in the format
/// the client parses: from the target header, the media type, the path and the host.
#[test]
fn refusals_before_the_scope_speak_the_clients_protocol() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_upstream, url) = start_upstream();
    let sigward = start(dir.path(), &url);
    let unsigned = |host: &str, head: &str, body: &str| {
        let mut tls = open_tunnel(&sigward, host).expect("tunnel");
        let request = format!(
            "{head}\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(request.as_bytes()).expect("write");
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    };
    let header = |response: &str, name: &str| {
        response
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    // JSON (a target): a JSON error.
    let json = unsigned(
        "dynamodb.us-east-1.amazonaws.com",
        "POST / HTTP/1.1\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\nContent-Type: application/x-amz-json-1.0",
        "{}",
    );
    assert_eq!(status(&json), 403, "{json}");
    assert!(header(&json, "content-type").contains("json"), "{json}");
    assert!(
        json.contains("\"__type\"") && json.contains("MissingAuthenticationToken"),
        "{json}"
    );
    // REST-JSON (Lambda, by its host): a JSON error.
    let rest_json = unsigned(
        "lambda.us-east-1.amazonaws.com",
        "GET /2015-03-31/functions/ HTTP/1.1",
        "",
    );
    assert_eq!(status(&rest_json), 403, "{rest_json}");
    assert!(
        header(&rest_json, "content-type").contains("json"),
        "{rest_json}"
    );
    // Query (a form body, in any case): the query protocol's XML error.
    let query = unsigned(
        "sqs.us-east-1.amazonaws.com",
        "POST / HTTP/1.1\r\nContent-Type: APPLICATION/X-WWW-FORM-URLENCODED",
        "Action=ListQueues",
    );
    assert_eq!(status(&query), 403, "{query}");
    assert!(query.contains("<ErrorResponse>"), "{query}");
    // A Host that is not the tunnel's, on a JSON call: still a JSON error.
    let mismatch = {
        let mut tls = open_tunnel(&sigward, "dynamodb.us-east-1.amazonaws.com").expect("tunnel");
        tls.write_all(
            b"POST / HTTP/1.1\r\nHost: sqs.us-east-1.amazonaws.com\r\nX-Amz-Target: DynamoDB_20120810.ListTables\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        .expect("write");
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    };
    assert_eq!(status(&mismatch), 400, "{mismatch}");
    assert!(
        header(&mismatch, "content-type").contains("json"),
        "{mismatch}"
    );
}

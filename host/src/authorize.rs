//! sigward as an authorizer for a proxy the operator already runs: the request as the
//! agent signed it is understood and judged by the matching endpoint's policies, and the
//! answer is allow or a refusal with its reason. Nothing is re-signed or forwarded — the
//! request goes out as the agent signed it, so the agent holds real AWS keys here and
//! sigward cannot check their signatures; it judges what the request asks for.
//!
//! Two ways to ask:
//! - [`serve_ext_authz`]: Envoy's `ext_authz` HTTP service. Envoy sends the original
//!   method, path and headers (and the body with `with_request_body`); 200 allows, any
//!   other status is returned to the client with its body — an AWS-shaped error.
//! - [`squid_helper`]: a Squid external ACL helper, one request per line on stdin, `OK` or
//!   `ERR message=…` per line on stdout.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::aws::request::{Request as AwsRequest, strip_port};
use crate::aws::scope::Scope;
use crate::aws::tables::Protocol;
use crate::aws::{self};
use crate::config::Config;
use crate::pipeline::{MAX_BUFFERED, host_matches};
use crate::policy::{Policies, Verdict};
use crate::proxy::errors::aws_error;
use crate::proxy::listener::serve_plain;
use crate::upstream::{Body, response};

/// What the authorizer decided about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// 200 to allow; otherwise the status the client should get.
    pub status: u16,
    /// The AWS error code of a refusal.
    pub code: &'static str,
    pub message: String,
    /// How to phrase the refusal for the client.
    pub protocol: Protocol,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.status == 200
    }
}

/// The endpoints' policies, with the config's agent names for the key ids it knows.
pub struct Authorizer {
    config: Config,
    principals: HashMap<String, String>,
    policies: Arc<Policies>,
}

impl Authorizer {
    pub fn new(config: Config, policies: Arc<Policies>) -> Self {
        let principals = config
            .agents
            .iter()
            .flat_map(|a| {
                a.access_key_ids
                    .iter()
                    .map(move |k| (k.clone(), a.name.clone()))
            })
            .collect();
        Self {
            config,
            principals,
            policies,
        }
    }

    /// Judge one request: `target` is its path and query, `headers` include `Host`.
    pub fn decide(
        &self,
        method: &str,
        target: &str,
        headers: Vec<(&str, &[u8])>,
        body: &[u8],
    ) -> Decision {
        let request = AwsRequest::from_parts(method, target, headers, body);
        let mut protocol = aws::protocol_hint(&request, None);
        let refuse = |protocol, status, code, message: String| Decision {
            status,
            code,
            message,
            protocol,
        };
        let scope = match Scope::of(&request) {
            Ok(Some(scope)) => scope,
            Ok(None) => {
                return refuse(
                    protocol,
                    403,
                    "MissingAuthenticationToken",
                    "sigward: the request is not signed".into(),
                );
            }
            Err(e) => {
                return refuse(
                    protocol,
                    403,
                    "IncompleteSignature",
                    format!("sigward: {e}"),
                );
            }
        };
        protocol = aws::protocol_hint(&request, Some(scope.service));
        let host = strip_port(request.host());
        let Some(endpoint) = self
            .config
            .endpoints
            .iter()
            .find(|e| e.hosts.iter().any(|p| host_matches(p, host)))
        else {
            return refuse(
                protocol,
                403,
                "AccessDenied",
                format!("sigward: {host:?} is not a host any endpoint covers"),
            );
        };
        let view = request.clone().with_decoded_body();
        let (mut facet, understood) = match aws::understand_call(&view, &endpoint.accounts) {
            Ok(understood) => understood,
            Err(e) => {
                let hint = if body.is_empty() && method == "POST" {
                    " (no request body reached sigward: query-protocol calls name their action in it; forward the body to the authorizer)"
                } else {
                    ""
                };
                return refuse(
                    protocol,
                    403,
                    "AccessDenied",
                    format!("sigward: cannot tell what the request does: {e}{hint}"),
                );
            }
        };
        protocol = understood;
        facet.principal = self
            .principals
            .get(scope.access_key_id)
            .cloned()
            .unwrap_or_else(|| scope.access_key_id.to_string());
        facet.endpoint.clone_from(&endpoint.name);

        let snapshot = self.policies.current();
        let Some(set) = snapshot.endpoint(&endpoint.name) else {
            return refuse(
                protocol,
                403,
                "AccessDenied",
                format!("sigward: endpoint {} has no policy set", endpoint.name),
            );
        };
        let judgement = set.judge(&facet);
        let decision = match judgement.verdict {
            Verdict::Allow => Decision {
                status: 200,
                code: "",
                message: "allowed".into(),
                protocol,
            },
            Verdict::Deny { reason } => refuse(protocol, 403, "AccessDenied", reason),
            Verdict::Approve { approvers, prompt } => refuse(
                protocol,
                403,
                "AccessDenied",
                format!(
                    "approval by {} is required ({prompt}); an authorizer cannot hold requests",
                    approvers.join(", ")
                ),
            ),
        };
        tracing::info!(
            target: "sigward::authorize",
            endpoint = %endpoint.name,
            principal = %facet.principal,
            call = %format!("{} {} {}", facet.iam_action, facet.account, facet.region),
            allowed = decision.allowed(),
            reason = %decision.message,
        );
        decision
    }
}

/// Serve Envoy's `ext_authz` HTTP protocol until the process ends. `path_prefix` is
/// what Envoy's `path_prefix` puts before the original path.
pub async fn serve_ext_authz(
    listener: TcpListener,
    authorizer: Arc<Authorizer>,
    path_prefix: String,
) {
    let path_prefix: Arc<str> = path_prefix.into();
    serve_plain(listener, "authorizer", move |request, _| {
        let authorizer = Arc::clone(&authorizer);
        let path_prefix = Arc::clone(&path_prefix);
        async move { check(request, &authorizer, &path_prefix).await }
    })
    .await;
}

async fn check(
    request: Request<Incoming>,
    authorizer: &Authorizer,
    prefix: &str,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = match target.strip_prefix(prefix) {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => target.to_string(),
    };
    let decision = match Limited::new(body, MAX_BUFFERED).collect().await {
        Ok(body) => {
            let body = body.to_bytes();
            let headers: Vec<(&str, &[u8])> = parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes()))
                .collect();
            authorizer.decide(parts.method.as_str(), &target, headers, &body)
        }
        Err(e) => Decision {
            status: 413,
            code: "RequestEntityTooLarge",
            message: format!("sigward: the request body could not be read: {e}"),
            protocol: Protocol::RestXml,
        },
    };
    if decision.allowed() {
        let mut response = response(StatusCode::OK, "text/plain", Bytes::new());
        response
            .headers_mut()
            .insert("x-sigward-verdict", HeaderValue::from_static("allow"));
        return response;
    }
    aws_error(
        decision.protocol,
        decision.status,
        decision.code,
        &decision.message,
        "sigward-authorize",
    )
    .into_response()
}

/// The `external_acl_type` format [`squid_line`] reads.
pub const SQUID_FORMAT: &str =
    "%>rm %>ru %>ha{Authorization} %>ha{X-Amz-Target} %>ha{Content-Type}";

/// Answer one line of Squid's external ACL helper protocol, configured as
///
/// ```text
/// external_acl_type sigward concurrency=8 ttl=0 negative_ttl=0 %>rm %>ru %>ha{Authorization} %>ha{X-Amz-Target} %>ha{Content-Type} /path/to/sigward squid-helper --config …
/// ```
///
/// that is: a channel id (with `concurrency`), the method, the URL as the client sent
/// it, then the three headers %-encoded (`-` when absent), then the acl's own arguments
/// (ignored). The answer is `[channel] OK` or `[channel] ERR message=…` (%-encoded).
/// Squid does not show the helper a request body, so calls that name their action only
/// in the body (the query protocol: STS, IAM, EC2 over POST) cannot be understood and are
/// refused with a reason saying so.
pub fn squid_line(authorizer: &Authorizer, line: &str) -> String {
    let mut tokens: Vec<&str> = line.split_whitespace().collect();
    let channel = match tokens.first() {
        Some(first) if first.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{} ", tokens.remove(0))
        }
        _ => String::new(),
    };
    let err = |message: &str| {
        format!(
            "{channel}ERR message={}",
            percent_encoding::utf8_percent_encode(message, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    let [method, url, authorization, target, content_type, ..] = tokens.as_slice() else {
        return err(&format!(
            "sigward: expected the external_acl_type format {SQUID_FORMAT}"
        ));
    };
    // "http://host[:port]/path?query": the host and the path and query, as sent.
    let Some((authority, path)) = url
        .split_once("://")
        .map(|(_, rest)| rest.find('/').map_or((rest, "/"), |i| rest.split_at(i)))
    else {
        return err(&format!("sigward: {url:?} is not an absolute URL"));
    };
    let mut headers: Vec<(&str, String)> = vec![("host", authority.to_string())];
    for (name, token) in [
        ("authorization", authorization),
        ("x-amz-target", target),
        ("content-type", content_type),
    ] {
        if *token != "-" {
            let value = percent_encoding::percent_decode_str(token).decode_utf8_lossy();
            headers.push((name, value.into_owned()));
        }
    }
    let header_refs: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    let decision = authorizer.decide(method, path, header_refs, b"");
    if decision.allowed() {
        format!("{channel}OK")
    } else {
        err(&format!(
            "{} {}: {}",
            decision.status, decision.code, decision.message
        ))
    }
}

/// Run the Squid helper on stdin/stdout until stdin closes.
pub fn squid_helper(authorizer: &Authorizer) -> std::io::Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        writeln!(out, "{}", squid_line(authorizer, &line))?;
        out.flush()?;
    }
    Ok(())
}

//! Understanding one AWS API call: from the decrypted HTTP request to the aws facet.
//!
//! **One request, one meaning.** A request is forwarded only if it has exactly one
//! meaning: the facet is derived from the same parameters the service will act on, and
//! every request whose meaning could depend on which of two readings the upstream picks
//! is refused (400, naming what was ambiguous) — a header sent twice, the operation named
//! twice or in two ways, a body whose media type and selector disagree, a body that
//! carries the call but was not read, a JSON key given twice, a host that is not one of
//! the service's own endpoint forms, a region AWS does not have. When unsure, refuse:
//! real SDKs never send such requests, so a refusal costs nothing legitimate, while a
//! forwarded ambiguity lets an agent run a call its policies never judged.
//!
//! - [`ambiguity`]: the checks that refuse a request two readers could read differently;
//! - [`request`]: the raw HTTP/1.1 request, its query and (decoded) body;
//! - [`scope`]: the SigV4 credential scope — the truth for service and region;
//! - [`account`]: the target account, from the access key id;
//! - [`host`]: what an AWS host name says (region, endpoint, S3 bucket);
//! - [`tables`]: every service and operation, generated from AWS's models;
//! - [`resources`]: the ARNs a call touches;
//! - [`authorizations`]: every (IAM action, resource) pair AWS authorizes for it;
//! - [`sigv4`]: verifying the agent's signature and re-signing;
//! - [`chunked`]: aws-chunked bodies, verified and re-signed chunk by chunk;
//! - [`sts`]: the target account's assumed-role credentials, cached.

pub mod account;
pub mod ambiguity;
pub mod authorizations;
pub mod chunked;
pub mod host;
pub mod request;
pub mod resources;
pub mod scope;
pub mod sigv4;
pub mod sts;
pub mod tables;

use std::borrow::Cow;

use serde_json::value::RawValue;

use self::account::{AccountNames, account_of_key};
use self::ambiguity::Media;
use self::host::HostError;
use self::request::{Request, RequestError};
use self::scope::{Scope, ScopeError};
use self::tables::{Operation, Protocol, Service, TABLES};
use crate::facet::Facet;

/// At most this many params reach a policy, each value at most [`MAX_PARAM_VALUE`] bytes.
pub const MAX_PARAMS: usize = 64;
pub const MAX_PARAM_VALUE: usize = 1024;

/// Why a request could not be understood. Each is the agent's fault (a 4xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnderstandError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error("ambiguous request: {0}")]
    Ambiguous(String),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("host {host:?} is not an endpoint of any service signing as {signing:?}")]
    NotAnEndpoint { host: String, signing: String },
    #[error("{0:?} is not an AWS region sigward knows")]
    UnknownRegion(String),
    #[error("the body carries {service}'s {protocol} call but was not read: {why}")]
    UnreadBody {
        service: String,
        protocol: &'static str,
        why: request::Unread,
    },
    #[error("the {protocol} body cannot be read: {why}")]
    Body { protocol: &'static str, why: String },
    #[error("sigward cannot judge {operation}: {why}")]
    Unjudgeable { operation: String, why: String },
    #[error("unknown service: nothing signs as {0:?}")]
    UnknownService(String),
    #[error("the request is not signed and host {0:?} names no AWS service")]
    Unsigned(String),
    #[error("unknown operation for {service}: {detail}")]
    UnknownOperation { service: String, detail: String },
    #[error("credential scope region {scope} does not match host region {host}")]
    RegionMismatch { scope: String, host: String },
    #[error(
        "access key id {0} names no account: use a key id with the account in it \
         (AKIA<12-digit account>XXXX) or a new-generation key id"
    )]
    NoAccount(String),
}

/// Understand a raw request (`sigward facet`).
pub fn understand_bytes(bytes: &[u8], names: &AccountNames) -> Result<Facet, UnderstandError> {
    understand(&Request::parse(bytes)?, names)
}

/// Build the facet of one request. `principal` and `endpoint` are left for the proxy.
pub fn understand(request: &Request, names: &AccountNames) -> Result<Facet, UnderstandError> {
    understand_call(request, names).map(|(facet, _)| facet)
}

/// [`understand`], with the protocol the call speaks (how to answer it with an error).
pub fn understand_call(
    request: &Request,
    names: &AccountNames,
) -> Result<(Facet, Protocol), UnderstandError> {
    ambiguity::check_headers(request)?;
    let scope = Scope::of(request)?;
    let host_name = request.host();
    let aws_host = host::parse(host_name)?;

    let (region, signing) = match (&scope, &aws_host) {
        (Some(scope), _) => {
            if !host::is_region(scope.region) {
                return Err(UnderstandError::UnknownRegion(scope.region.to_string()));
            }
            (scope.region.to_string(), scope.service.to_string())
        }
        // An unsigned request (cognito-identity GetId, by design): the host names the
        // service, in one of its endpoint forms.
        (None, Some(h)) => TABLES
            .services
            .iter()
            .find_map(|s| {
                let region = if h.s3 {
                    (s.signing == "s3").then_some(h.region.as_deref())?
                } else {
                    s.endpoint_region(&h.name)?
                };
                Some((region.unwrap_or("us-east-1").to_string(), s.signing.clone()))
            })
            .ok_or_else(|| UnderstandError::Unsigned(host_name.to_string()))?,
        (None, None) => return Err(UnderstandError::Unsigned(host_name.to_string())),
    };

    // The body: its media type, read strictly, and a form body decoded once (query and
    // EC2 protocols name the operation in it and its pairs are params).
    let media = ambiguity::media(request);
    let form: Vec<(String, String)> = if media == Media::Form {
        request::decode_query(&String::from_utf8_lossy(&request.body))
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    } else {
        Vec::new()
    };
    let (candidates, host_region) = endpoint_services(&signing, aws_host.as_ref())?;
    // `Action` selects the operation of query and EC2 services; beside a JSON target it
    // is a second selector. Elsewhere it is an ordinary parameter (OpenSearch's
    // `?action=` filter).
    let action = if request.header("x-amz-target").is_some()
        || candidates
            .iter()
            .any(|s| s.speaks(Protocol::Query) || s.speaks(Protocol::Ec2))
    {
        ambiguity::action(request, &form)?
    } else {
        None
    };
    if let Some(h) = &aws_host {
        check_region(&region, h, host_region.as_deref())?;
    }
    let bucket = aws_host.as_ref().and_then(|h| h.bucket.as_deref());
    let resolved = resolve(request, action, &signing, &candidates, bucket)?;
    ambiguity::check_query(
        request,
        resolved
            .operation
            .template
            .query
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(resolved.operation.required_query.iter().map(String::as_str)),
    )?;
    let service = resolved.service;
    let operation = resolved.operation;
    check_body(request, media, &resolved)?;

    // An unsigned request (cognito-identity GetId, by design) names no account.
    let account = match &scope {
        Some(scope) => Some(
            account_of_key(scope.access_key_id)
                .ok_or_else(|| UnderstandError::NoAccount(scope.access_key_id.to_string()))?,
        ),
        None => None,
    };
    let account_name = account
        .as_ref()
        .and_then(|a| names.name(a))
        .map(str::to_string);
    let account = account.map(|a| a.to_string()).unwrap_or_default();

    let body = Body::parse(request, form, resolved.protocol)?;
    let params = params(request, &body, resolved.protocol)?;
    let partition = partition(&region);
    let call = resources::Context {
        service: &service.iam,
        partition,
        region: &region,
        account: &account,
        labels: &resolved.labels,
        params: &params,
        batch_tables: &body.batch_tables,
    };
    let mut resources = resources::resources(&call);
    let authorizations = authorizations::authorizations(&authorizations::Context {
        request,
        call: &call,
        service,
        operation,
        resources: &resources,
    })?;
    // The resources the pairs name beyond the call's own (DeleteObjects' keys, a
    // transaction's tables): up to a thousand, so looked up in a set.
    let mut named: std::collections::HashSet<&str> = resources.iter().map(String::as_str).collect();
    let mut more = Vec::new();
    for pair in &authorizations {
        if let Some(arn) = pair.resource.as_deref().filter(|r| r.starts_with("arn:"))
            && named.insert(arn)
        {
            more.push(arn.to_string());
        }
    }
    resources.extend(more);
    // One PartiQL statement is one PartiQL action (the table's `iam_action` for
    // ExecuteStatement is one of the four).
    let iam_action = match authorizations.as_slice() {
        [one] if operation.name == "ExecuteStatement" => one.action.clone(),
        _ => operation.iam_action.clone(),
    };

    let facet = Facet {
        service: signing,
        action: operation.name.clone(),
        iam_action,
        account,
        account_name,
        region,
        resources,
        method: request.method.to_string(),
        host: host_name.to_string(),
        path: request.path(),
        principal: String::new(),
        endpoint: String::new(),
        params,
        authorizations,
    };
    Ok((facet, resolved.protocol))
}

/// The body must say what its selector says, and be read when it carries the call: a
/// JSON target with a JSON body, an `Action` with a form body, the RPCv2 CBOR path with
/// a CBOR body — never one protocol's selector with another's body.
fn check_body(
    request: &Request<'_>,
    media: Media,
    resolved: &Resolved<'_>,
) -> Result<(), UnderstandError> {
    let protocol = resolved.protocol;
    let (name, wants) = match protocol {
        Protocol::Json => ("JSON", Media::Json),
        Protocol::Query => ("query", Media::Form),
        Protocol::Ec2 => ("EC2 query", Media::Form),
        Protocol::Cbor => ("RPCv2 CBOR", Media::Cbor),
        Protocol::RestJson | Protocol::RestXml => return Ok(()),
    };
    let mixed = |why: String| Err(UnderstandError::Ambiguous(why));
    if protocol != Protocol::Json && request.header("x-amz-target").is_some() {
        return mixed(format!("X-Amz-Target on a {name} call"));
    }
    if protocol != Protocol::Cbor
        && (request.header("smithy-protocol").is_some() || is_cbor_path(request.raw_path))
    {
        return mixed(format!(
            "an RPCv2 CBOR path or Smithy-Protocol header on a {name} call"
        ));
    }
    if !request.has_body() {
        return Ok(());
    }
    if media != wants {
        return mixed(format!(
            "a {name} call with a body of Content-Type {:?}",
            request.header("content-type").unwrap_or("(none)")
        ));
    }
    if let Some(why) = &request.unread {
        return Err(UnderstandError::UnreadBody {
            service: resolved.service.id.clone(),
            protocol: name,
            why: why.clone(),
        });
    }
    Ok(())
}

fn is_cbor_path(path: &str) -> bool {
    path.strip_prefix("/service/")
        .is_some_and(|rest| rest.contains("/operation/"))
}

/// Whether the services signing as `signing` carry every call in the body (JSON, query,
/// EC2 and RPCv2 CBOR protocols only): such bodies are read whole, whatever their
/// declared payload hash, because the operation and its resources are in them.
///
/// S3's `DeleteObjects` (`POST /bucket?delete`) names the keys it deletes in its XML body:
/// that body is read too, so that each key is judged.
pub fn body_carries_call(request: &Request<'_>, signing: &str) -> bool {
    if signing == "s3"
        && request.method == "POST"
        && request.query.iter().any(|(k, _)| k == "delete")
    {
        return true;
    }
    let services = TABLES.by_signing(signing);
    !services.is_empty() && services.iter().all(|&i| !TABLES.services[i].is_rest())
}

/// The protocol a request most likely speaks, for refusing it before it is understood:
/// its headers and path first, then what the services signing as `signing` speak — or,
/// without a signing name, the service whose endpoint form the host is.
pub fn protocol_hint(request: &Request, signing: Option<&str>) -> Protocol {
    if request
        .header("smithy-protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("rpc-v2-cbor"))
        || is_cbor_path(request.raw_path)
    {
        return Protocol::Cbor;
    }
    if request.header("x-amz-target").is_some() {
        return Protocol::Json;
    }
    let service = match signing {
        Some(signing) => TABLES
            .by_signing(signing)
            .first()
            .map(|&i| &TABLES.services[i]),
        None => host::parse(request.host()).ok().flatten().and_then(|h| {
            TABLES.services.iter().find(|s| {
                if h.s3 {
                    s.id == "s3"
                } else {
                    s.id != "s3" && s.endpoint_region(&h.name).is_some()
                }
            })
        }),
    };
    let is_form = ambiguity::media(request) == Media::Form;
    match service {
        Some(s) if is_form && s.speaks(Protocol::Ec2) => Protocol::Ec2,
        _ if is_form => Protocol::Query,
        Some(s) if s.speaks(Protocol::RestJson) => Protocol::RestJson,
        Some(s) if s.speaks(Protocol::Json) => Protocol::Json,
        Some(s) if s.speaks(Protocol::Query) => Protocol::Query,
        Some(s) if s.speaks(Protocol::Ec2) => Protocol::Ec2,
        _ => Protocol::RestXml,
    }
}

/// The regional host of the service signing as `signing` (`sqs.eu-west-1.amazonaws.com`),
/// for requests that arrive at sigward's own address (`AWS_ENDPOINT_URL`). The credential
/// scope never builds a host by itself: the region must be one AWS has, and the host one
/// of the service's own endpoint forms.
pub fn regional_host(signing: &str, region: &str) -> Option<String> {
    if !host::is_region(region) {
        return None;
    }
    let service = TABLES
        .by_signing(signing)
        .iter()
        .map(|&i| &TABLES.services[i])
        .find(|s| s.signing == signing)?;
    // Services with only a partition-wide endpoint (IAM, Route 53, CloudFront …) are
    // signed for us-east-1 and served from it; S3 and STS also have regional ones.
    if !service.global.is_empty() && !matches!(signing, "s3" | "sts") && partition(region) == "aws"
    {
        return service
            .endpoint_region(&service.global)
            .is_some()
            .then(|| service.global.clone());
    }
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    let host = format!("{}.{region}.{suffix}", service.prefix);
    (service.endpoint_region(&host) == Some(Some(region))).then_some(host)
}

pub(crate) fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// A host that names a region must name the scope's; a host that names none is a global
/// endpoint, signed for us-east-1 — except S3's, which any region may use.
fn check_region(
    scope_region: &str,
    host: &host::AwsHost,
    host_region: Option<&str>,
) -> Result<(), UnderstandError> {
    let host_region = match host_region {
        Some(region) => region,
        None if host.s3 => return Ok(()),
        None if host.name.ends_with(".cn") => "cn-north-1",
        None => "us-east-1",
    };
    if host_region == scope_region {
        Ok(())
    } else {
        Err(UnderstandError::RegionMismatch {
            scope: scope_region.to_string(),
            host: host_region.to_string(),
        })
    }
}

struct Resolved<'t> {
    service: &'t Service,
    operation: &'t Operation,
    protocol: Protocol,
    labels: Vec<(String, String)>,
}

/// The services a request may be for: those signing as `signing` whose endpoint forms
/// include the host ("bedrock-agent.…", not the other services signing as "bedrock"); S3's
/// data-plane hosts are S3's. With the region the host names, if it names one.
fn endpoint_services<'t>(
    signing: &str,
    aws_host: Option<&host::AwsHost>,
) -> Result<(Vec<&'t Service>, Option<String>), UnderstandError> {
    let mut candidates: Vec<&'t Service> = TABLES
        .by_signing(signing)
        .iter()
        .map(|&i| &TABLES.services[i])
        .collect();
    if candidates.is_empty() {
        return Err(UnderstandError::UnknownService(signing.to_string()));
    }
    let Some(h) = aws_host else {
        return Ok((candidates, None));
    };
    let mut host_region = None;
    if h.s3 {
        candidates.retain(|s| s.signing == "s3");
        host_region.clone_from(&h.region);
    } else {
        // S3's own operations only on its data-plane hosts: elsewhere (Object Lambda,
        // directory buckets' control host) the bucket would not be what it names.
        candidates.retain(|s| s.id != "s3");
        let mut regions = Vec::new();
        candidates.retain(|s| match s.endpoint_region(&h.name) {
            Some(region) => {
                regions.push(region);
                true
            }
            None => false,
        });
        host_region = regions.into_iter().flatten().next().map(str::to_string);
    }
    if candidates.is_empty() {
        return Err(UnderstandError::NotAnEndpoint {
            host: h.name.clone(),
            signing: signing.to_string(),
        });
    }
    Ok((candidates, host_region))
}

/// Find the operation: by `X-Amz-Target` (JSON), by the RPCv2 CBOR path, by `Action`
/// (query/EC2), or by method and URI template (REST), among the `candidates`.
fn resolve<'t>(
    request: &Request,
    action: Option<&str>,
    signing: &str,
    candidates: &[&'t Service],
    bucket: Option<&str>,
) -> Result<Resolved<'t>, UnderstandError> {
    let unknown = |detail: String| UnderstandError::UnknownOperation {
        service: signing.to_string(),
        detail,
    };

    // JSON protocols: X-Amz-Target: <targetPrefix>.<Operation>.
    if let Some(target) = request.header("x-amz-target") {
        let (prefix, name) = target
            .rsplit_once('.')
            .ok_or_else(|| unknown(format!("X-Amz-Target {target:?}")))?;
        // The target must name one of the services the scope and host allow.
        for &i in TABLES.by_target(prefix) {
            let service = &TABLES.services[i];
            if candidates.iter().any(|c| std::ptr::eq(*c, service))
                && let Some(operation) = service.operation(name)
            {
                return Ok(Resolved {
                    service,
                    operation,
                    protocol: Protocol::Json,
                    labels: Vec::new(),
                });
            }
        }
        return Err(unknown(format!("X-Amz-Target {target:?}")));
    }

    // Smithy RPCv2 CBOR: POST /service/<Service>/operation/<Operation>.
    let path = request.raw_path;
    if let Some(rest) = path.strip_prefix("/service/")
        && let Some((_, name)) = rest.split_once("/operation/")
    {
        for service in candidates.iter().filter(|s| s.speaks(Protocol::Cbor)) {
            if let Some(operation) = service.operation(name) {
                return Ok(Resolved {
                    service,
                    operation,
                    protocol: Protocol::Cbor,
                    labels: Vec::new(),
                });
            }
        }
    }

    // Query and EC2 protocols: Action=<Operation> in the query or the form body.
    if let Some(action) = action {
        let speaks_query = |s: &&&Service| s.speaks(Protocol::Query) || s.speaks(Protocol::Ec2);
        for service in candidates.iter().filter(speaks_query) {
            if let Some(operation) = service.operation(action) {
                let protocol = if service.speaks(Protocol::Ec2) {
                    Protocol::Ec2
                } else {
                    Protocol::Query
                };
                return Ok(Resolved {
                    service,
                    operation,
                    protocol,
                    labels: Vec::new(),
                });
            }
        }
        return Err(unknown(format!("Action={action}")));
    }

    // REST: method + URI template + required query keys and headers; most specific wins.
    let mut segments: Vec<&str> = path.split('/').skip(1).filter(|s| !s.is_empty()).collect();
    if let Some(bucket) = bucket {
        segments.insert(0, bucket);
    }
    let has_query = |key: &str, value: Option<&str>| {
        request
            .query
            .iter()
            .any(|(k, v)| k == key && value.is_none_or(|want| v == want))
    };
    let has_header = |name: &str| request.header(name).is_some();
    // Services sharing a signing name (S3 and S3 Control) compete: the most specific
    // match wins, and a deprecated operation loses a tie to its replacement.
    let best = candidates
        .iter()
        .filter(|s| s.is_rest())
        .filter_map(|service| {
            service
                .match_rest(request.method, &segments, has_query, has_header)
                .map(|(operation, labels)| (*service, operation, labels))
        })
        .max_by_key(|(_, operation, _)| (operation.specificity(), !operation.deprecated));
    match best {
        Some((service, operation, labels)) => {
            let protocol = if service.speaks(Protocol::RestXml) {
                Protocol::RestXml
            } else {
                Protocol::RestJson
            };
            Ok(Resolved {
                service,
                operation,
                protocol,
                labels,
            })
        }
        None => Err(unknown(format!("{} {}", request.method, request.raw_path))),
    }
}

/// What a request body contributes: top-level scalar fields (JSON) or form pairs (query).
#[derive(Default)]
struct Body {
    params: Vec<(String, String)>,
    /// DynamoDB batch operations name their tables as keys of `RequestItems`.
    batch_tables: Vec<String>,
}

/// A JSON object read one level deep: nested values stay unparsed slices.
pub(crate) struct TopLevel<'a>(pub(crate) Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = TopLevel<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some((key, value)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    fields.push((key, value));
                }
                Ok(TopLevel(fields))
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

impl Body {
    /// Read what the body says. A JSON or CBOR call's body must be one object (map) with
    /// no key twice; a REST-JSON body that is not an object is a payload, not parameters.
    fn parse(
        request: &Request<'_>,
        form: Vec<(String, String)>,
        protocol: Protocol,
    ) -> Result<Self, UnderstandError> {
        let mut body = Body::default();
        if request.body.is_empty() {
            if protocol == Protocol::Query || protocol == Protocol::Ec2 {
                body.params = form;
            }
            return Ok(body);
        }
        let unreadable = |name: &'static str, why: String| UnderstandError::Body {
            protocol: name,
            why,
        };
        match protocol {
            Protocol::Json | Protocol::RestJson => {
                let fields = match serde_json::from_slice::<TopLevel<'_>>(&request.body) {
                    Ok(TopLevel(fields)) => fields,
                    Err(e) if protocol == Protocol::Json => {
                        return Err(unreadable("JSON", format!("not one JSON object ({e})")));
                    }
                    Err(_) => return Ok(body),
                };
                ambiguity::unique_keys(fields.iter().map(|(k, _)| k.as_ref()), "the JSON body")?;
                for (key, raw) in fields {
                    let text = raw.get();
                    match text.as_bytes().first() {
                        Some(b'[') => {
                            let items: Vec<&RawValue> =
                                serde_json::from_str(text).unwrap_or_default();
                            for item in items {
                                if let Some(value) = scalar(item) {
                                    body.params.push((key.to_string(), value));
                                }
                            }
                        }
                        Some(b'{') if key == "RequestItems" => {
                            let TopLevel(tables) = serde_json::from_str::<TopLevel<'_>>(text)
                                .map_err(|e| unreadable("JSON", format!("RequestItems: {e}")))?;
                            ambiguity::unique_keys(
                                tables.iter().map(|(k, _)| k.as_ref()),
                                "RequestItems",
                            )?;
                            body.batch_tables
                                .extend(tables.into_iter().map(|(name, _)| name.into_owned()));
                        }
                        _ => {
                            if let Some(value) = scalar(raw) {
                                body.params.push((key.into_owned(), value));
                            }
                        }
                    }
                }
            }
            Protocol::Query | Protocol::Ec2 => body.params = form,
            Protocol::Cbor => {
                let mut cursor = std::io::Cursor::new(request.body.as_ref());
                let value: ciborium::Value = ciborium::from_reader(&mut cursor)
                    .map_err(|e| unreadable("RPCv2 CBOR", format!("not CBOR ({e})")))?;
                if cursor.position() != request.body.len() as u64 {
                    return Err(unreadable("RPCv2 CBOR", "bytes follow the CBOR map".into()));
                }
                let ciborium::Value::Map(entries) = value else {
                    return Err(unreadable("RPCv2 CBOR", "not one CBOR map".into()));
                };
                let mut keys = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    let ciborium::Value::Text(key) = key else {
                        return Err(unreadable("RPCv2 CBOR", "a map key is not text".into()));
                    };
                    let values = match value {
                        ciborium::Value::Array(items) => items,
                        other => vec![other],
                    };
                    for value in values {
                        if let Some(value) = cbor_scalar(value) {
                            body.params.push((key.clone(), value));
                        }
                    }
                    keys.push(key);
                }
                ambiguity::unique_keys(keys.iter().map(String::as_str), "the CBOR body")?;
            }
            Protocol::RestXml => {}
        }
        Ok(body)
    }
}

/// A CBOR text, integer, float or boolean as text; `None` for anything else.
fn cbor_scalar(value: ciborium::Value) -> Option<String> {
    match value {
        ciborium::Value::Text(text) => Some(text),
        ciborium::Value::Integer(i) => Some(i128::from(i).to_string()),
        ciborium::Value::Float(f) => Some(f.to_string()),
        ciborium::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON string, number or boolean as text; `None` for anything else.
fn scalar(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text).ok(),
        b'{' | b'[' | b'n' => None,
        _ => Some(text.to_string()),
    }
}

/// Query parameters (less the SigV4 ones) then body fields, bounded in count and size.
/// A query or EC2 call reads its parameters from the URL and the form alike: no key may
/// be given twice across both.
fn params(
    request: &Request<'_>,
    body: &Body,
    protocol: Protocol,
) -> Result<Vec<(String, String)>, UnderstandError> {
    const SIGNING: &[&str] = &[
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    ];
    let all = request
        .query
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .filter(|(k, _)| !SIGNING.contains(k))
        .chain(body.params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if protocol == Protocol::Query || protocol == Protocol::Ec2 {
        ambiguity::unique_keys(all.clone().map(|(k, _)| k), "the query parameters")?;
    }
    Ok(all
        .take(MAX_PARAMS)
        .map(|(k, v)| (truncate(k), truncate(v)))
        .collect())
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_PARAM_VALUE {
        return text.to_string();
    }
    let mut end = MAX_PARAM_VALUE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::regional_host;

    #[test]
    fn regional_and_global_hosts() {
        let host = |s: &str, r: &str| regional_host(s, r);
        assert_eq!(
            host("sqs", "eu-west-1").as_deref(),
            Some("sqs.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            host("sts", "us-east-1").as_deref(),
            Some("sts.us-east-1.amazonaws.com")
        );
        assert_eq!(
            host("s3", "eu-west-1").as_deref(),
            Some("s3.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            host("iam", "us-east-1").as_deref(),
            Some("iam.amazonaws.com")
        );
        assert_eq!(
            host("monitoring", "cn-north-1").as_deref(),
            Some("monitoring.cn-north-1.amazonaws.com.cn")
        );
        assert_eq!(host("no-such-service", "us-east-1"), None);
        // The scope's region never makes a host of its own.
        for region in [
            "evil.example#",
            "evil.example/",
            "x.evil.example?",
            "us-east-1.evil.example:443/",
            "user@evil.example",
            "compute-1",
            "us-east-9",
        ] {
            assert_eq!(host("sqs", region), None, "{region}");
        }
    }
}

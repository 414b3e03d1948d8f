//! One request's path through sigward, in order:
//! authenticate → understand → judge → credentials → re-sign → forward → record.
//!
//! - authenticate: a config agent's key, or a key sigward issued ([`crate::agents`]);
//! - judge: the endpoint's policies; an approve verdict waits here for a human
//!   ([`crate::approval`]), and nothing goes on that the audit log could not record;
//! - record: the log line, the metrics and the audit log line ([`crate::audit`]).
//!
//! Every refusal is an AWS-shaped error in the protocol the agent speaks, and nothing is
//! forwarded unless every stage said yes: a request is never sent with the agent's own
//! signature, unsigned, or with a body that did not verify.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use sha2::Digest as _;

use crate::agents::LiveAgents;
use crate::approval::{self, Approvals, Outcome};
use crate::audit::AuditLog;
use crate::aws::chunked::{Chain, Resigner};
use crate::aws::request::{Request as AwsRequest, strip_port};
use crate::aws::scope::Scope;
use crate::aws::sigv4::{self, AGENT_SIGNATURE_HEADERS, Outgoing, SigningCredentials};
use crate::aws::sts::CredentialCache;
use crate::aws::tables::Protocol;
use crate::aws::{self, request::MAX_BODY};
use crate::config::{Agent, Config, Endpoint, Mode};
use crate::facet::Facet;
use crate::metrics::{Metrics, Totals};
use crate::policy::evaluate::Limits;
use crate::policy::{Judgement, Policies, Verdict};
use crate::proxy::body::{self, Failure};
use crate::proxy::errors::aws_error;
use crate::proxy::listener::{Arrival, Handler};
use crate::upstream::{Body, BoxError, Upstream};

/// A body without a declared hash must be read whole to check its signature (only S3
/// declares one); past this it is refused.
pub const MAX_BUFFERED: usize = 64 << 20;

/// Headers that describe one connection, not the request: never forwarded either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// An endpoint's running parts.
pub struct Route {
    pub endpoint: Endpoint,
    pub upstream: Upstream,
    pub credentials: CredentialCache,
    /// Where new approvals are posted (the endpoint's `approval_webhook`).
    pub webhook: Option<(Upstream, String)>,
}

/// Everything a request needs, shared by every connection.
pub struct Pipeline {
    pub routes: Vec<Route>,
    agents: HashMap<String, Agent>,
    issued: Arc<LiveAgents>,
    pub approvals: Arc<Approvals>,
    audit: Option<Arc<AuditLog>>,
    pub metrics: Metrics,
    policies: Arc<Policies>,
    request_ids: AtomicU64,
    /// `[proxy] body_timeout`: how long an agent may keep its body waiting.
    body_timeout: Duration,
    /// `[proxy] max_buffered_mib`: what all bodies read whole may hold together.
    body_budget: body::Budget,
    /// Requests being handled now (a shutdown waits for them).
    in_flight: AtomicUsize,
    /// Set when sigward is stopping: new requests are refused, and those cut off are
    /// recorded as `shutdown` rather than `abandoned`.
    stopping: AtomicBool,
}

/// A refusal: status, AWS error code, message.
struct Refusal {
    status: u16,
    code: &'static str,
    message: String,
}

fn refuse(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
    }
}

/// An authenticated agent: its name and the secret its signatures are checked with.
struct Caller {
    name: String,
    secret: String,
}

/// What the record line and the audit log say about a request.
#[derive(Default)]
struct Record {
    agent: String,
    summary: String,
    service: String,
    verdict: &'static str,
    policies: String,
    /// Kept only with an audit log.
    facet: Option<Facet>,
    judgement: Option<Judgement>,
    settings: Vec<Arc<str>>,
    limits: Option<Limits>,
    approval: Option<Outcome>,
    request_bytes: Option<u64>,
}

/// One request being handled: counted while it runs, and recorded exactly once — by
/// [`Pending::finish`] when it is answered, or when it is dropped unanswered.
struct Pending<'p> {
    pipeline: &'p Pipeline,
    route: usize,
    id: String,
    started: Instant,
    record: Record,
    finished: bool,
}

impl<'p> Pending<'p> {
    fn new(pipeline: &'p Pipeline, route: usize) -> Self {
        pipeline.in_flight.fetch_add(1, Ordering::AcqRel);
        let id = format!(
            "{:016x}",
            pipeline
                .request_ids
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        );
        Self {
            pipeline,
            route,
            id,
            started: Instant::now(),
            record: Record::default(),
            finished: false,
        }
    }

    fn finish(&mut self, result: &Result<Response<Body>, Refusal>) {
        self.finished = true;
        let record = std::mem::take(&mut self.record);
        let latency_us = self.started.elapsed().as_micros() as u64;
        self.pipeline
            .record(&self.id, self.route, record, result, "answered", latency_us);
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.pipeline.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.finished {
            return;
        }
        let (outcome, refusal) = if self.pipeline.stopping.load(Ordering::Acquire) {
            (
                "shutdown",
                refuse(
                    503,
                    "ServiceUnavailable",
                    "sigward shut down before the answer",
                ),
            )
        } else {
            (
                "abandoned",
                refuse(
                    499,
                    "ClientClosedRequest",
                    "the agent went away before the answer",
                ),
            )
        };
        let record = std::mem::take(&mut self.record);
        let latency_us = self.started.elapsed().as_micros() as u64;
        self.pipeline.record(
            &self.id,
            self.route,
            record,
            &Err(refusal),
            outcome,
            latency_us,
        );
    }
}

impl Pipeline {
    pub fn new(
        config: &Config,
        routes: Vec<Route>,
        policies: Arc<Policies>,
        issued: Arc<LiveAgents>,
        approvals: Arc<Approvals>,
        audit: Option<Arc<AuditLog>>,
    ) -> Self {
        let agents = config
            .agents
            .iter()
            .flat_map(|a| a.access_key_ids.iter().map(move |k| (k.clone(), a.clone())))
            .collect();
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            routes,
            agents,
            issued,
            approvals,
            audit,
            metrics: Metrics::for_replica(config.cluster.as_ref().map(|c| c.replica.clone())),
            policies,
            request_ids: AtomicU64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            body_timeout: config.connections.body_timeout,
            body_budget: body::Budget::new(config.connections.max_buffered_bytes),
            in_flight: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
        }
    }

    /// How many requests are being handled now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Stop taking requests: from now on each is refused (503, `Connection: close`), and
    /// any still running when the process ends is recorded as cut off by the shutdown.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// What the metrics read from elsewhere.
    pub fn totals(&self) -> Totals {
        let (reloads_applied, reloads_rejected) = self.policies.reload_counts();
        Totals {
            pending_approvals: self.approvals.len(),
            sts_assume_role: self
                .routes
                .iter()
                .map(|r| r.credentials.assume_count())
                .sum(),
            sts_cache_hits: self.routes.iter().map(|r| r.credentials.hit_count()).sum(),
            reloads_applied,
            reloads_rejected,
        }
    }

    /// The route whose host patterns match `host`, if any.
    pub fn route_for(&self, host: &str) -> Option<usize> {
        self.routes.iter().position(|r| {
            r.endpoint
                .hosts
                .iter()
                .any(|pattern| host_matches(pattern, host))
        })
    }

    /// Who signed the request: an agent from the config file (by key id), or one sigward
    /// issued a key to (`ASIA…` with its session token).
    fn identify(
        &self,
        signed: &AwsRequest<'_>,
        scope: &Scope<'_>,
        now: SystemTime,
    ) -> Result<Caller, Refusal> {
        let key_id = scope.access_key_id;
        if let Some(agent) = self.agents.get(key_id) {
            return Ok(Caller {
                name: agent.name.clone(),
                secret: agent.secret_access_key.clone(),
            });
        }
        let invalid = |why: String| {
            refuse(
                403,
                "InvalidClientTokenId",
                format!(
                    "The security token included in the request is invalid: access key id {key_id} {why} (sigward)"
                ),
            )
        };
        if !key_id.starts_with("ASIA") {
            return Err(invalid("is not an agent's".into()));
        }
        let agents = self.issued.current().map_err(|e| match e {
            crate::agents::AgentError::Database(why) => refuse(
                503,
                "ServiceUnavailable",
                format!("sigward: issued keys cannot be checked now: {why}"),
            ),
            e => refuse(
                500,
                "InternalFailure",
                format!("sigward: cannot read the agents sigward issued keys to: {e}"),
            ),
        })?;
        let token = if scope.presigned {
            signed.query_param("X-Amz-Security-Token")
        } else {
            signed.header("x-amz-security-token")
        };
        let owner = agents
            .authenticate(key_id, token, now)
            .map_err(|e| invalid(format!("was refused: {e}")))?;
        Ok(Caller {
            name: owner.agent,
            secret: owner.secret_access_key,
        })
    }

    /// Hold a request for a human (telling the endpoint's webhook) until it is decided or
    /// the endpoint's approval timeout passes.
    async fn hold(
        &self,
        route: &Route,
        facet: &Facet,
        approvers: &[String],
        prompt: &str,
    ) -> Outcome {
        let webhook = route.webhook.clone();
        self.approvals
            .wait(
                facet.clone(),
                prompt.to_string(),
                approvers.to_vec(),
                route.endpoint.approval_timeout,
                |pending| {
                    if let Some((client, url)) = webhook {
                        approval::notify_webhook(client, url, pending);
                    }
                },
            )
            .await
    }

    /// Handle one request; always answers. If the answer is never given — the agent went
    /// away, or sigward stopped — the request is still recorded, when it is dropped.
    pub async fn handle(&self, request: Request<Incoming>, arrival: &Arrival) -> Response<Body> {
        let mut pending = Pending::new(self, arrival.route);
        let mut protocol = Protocol::RestXml;
        if self.stopping.load(Ordering::Acquire) {
            let (parts, _) = request.into_parts();
            protocol = early_protocol(&parts, arrival);
            let refusal = refuse(
                503,
                "ServiceUnavailable",
                "sigward is shutting down; retry against another instance or after it restarts",
            );
            let mut response = error_response(protocol, &refusal, &pending.id);
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            pending.finish(&Err(refusal));
            return response;
        }
        let (parts, body) = request.into_parts();
        let expects_continue = parts
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        // The body stays here until a stage reads or streams it: a refusal before that
        // drains it first, so that a client that sends its body without waiting for
        // `100 Continue` reads the refusal rather than a broken pipe.
        let mut unread = Some(body);
        let result = self
            .run(
                parts,
                &mut unread,
                arrival,
                &mut pending.record,
                &mut protocol,
            )
            .await;
        // Recorded before any draining: an agent that goes away meanwhile does not turn
        // its refusal into an abandoned request.
        pending.finish(&result);
        let drained = match unread.take() {
            Some(body) if result.is_err() && !expects_continue => body::drain(body).await,
            // Never read, and the client waits to be told: nothing to drain.
            _ => true,
        };
        match result {
            Ok(response) => response,
            Err(refusal) => {
                let mut response = error_response(protocol, &refusal, &pending.id);
                if !drained {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        }
    }

    /// The record line, the metrics and the audit record of one request.
    fn record(
        &self,
        id: &str,
        route: usize,
        record: Record,
        result: &Result<Response<Body>, Refusal>,
        outcome: &'static str,
        latency_us: u64,
    ) {
        let route = &self.routes[route];
        // The record line: upstream status for a forwarded request, status, code and
        // reason for a refusal (absent fields are left out).
        let refusal = result.as_ref().err();
        let verdict = if record.verdict.is_empty() {
            "refused"
        } else {
            record.verdict
        };
        tracing::info!(
            target: "sigward::request",
            request_id = %id,
            endpoint = %route.endpoint.name,
            agent = %record.agent,
            call = %record.summary,
            verdict = %verdict,
            outcome,
            policies = %record.policies,
            upstream_status = result.as_ref().ok().map(|r| r.status().as_u16()),
            status = refusal.map(|r| r.status),
            code = refusal.map(|r| tracing::field::display(r.code)),
            reason = refusal.map(|r| tracing::field::display(&r.message)),
            latency_us,
        );
        self.metrics.request(
            &route.endpoint.name,
            if record.service.is_empty() {
                "-"
            } else {
                &record.service
            },
            if outcome == "answered" {
                verdict
            } else {
                outcome
            },
        );
        if let Some(audit) = &self.audit {
            let mut line = audit_record(id, route, record, result, latency_us);
            line.insert("outcome".into(), serde_json::Value::from(outcome));
            audit.append(line);
        }
    }

    async fn run(
        &self,
        parts: http::request::Parts,
        unread: &mut Option<Incoming>,
        arrival: &Arrival,
        record: &mut Record,
        protocol: &mut Protocol,
    ) -> Result<Response<Body>, Refusal> {
        let route = &self.routes[arrival.route];
        let endpoint = &route.endpoint;

        // The host the agent addressed must be the tunnel's.
        let host_header = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if let Some(tunnel) = &arrival.tunnel_host
            && !strip_port(&host_header).eq_ignore_ascii_case(strip_port(tunnel))
        {
            *protocol = early_protocol(&parts, arrival);
            return Err(refuse(
                400,
                "InvalidRequest",
                format!("sigward: Host {host_header:?} is not the host of the tunnel ({tunnel})"),
            ));
        }

        record.request_bytes = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());

        // The request as the agent signed it, body aside.
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let head_headers = || -> Vec<(&str, &[u8])> {
            parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes()))
                .collect()
        };

        // 1. authenticate: who signed, from the headers, before any body is read.
        let now = SystemTime::now();
        let (agent, carries_call, presigned, signature_covers_body) = {
            let head = AwsRequest::from_parts(parts.method.as_str(), &target, head_headers(), &[]);
            // Refused before the scope names the service: the error's format comes from
            // the request's own shape (target, media type, path, host).
            let scope = Scope::of(&head)
                .map_err(|e| refuse(403, "IncompleteSignature", format!("sigward: {e}")))
                .and_then(|scope| {
                    scope.ok_or_else(|| {
                        refuse(
                            403,
                            "MissingAuthenticationToken",
                            "sigward: the request is not signed; sigward forwards only requests signed with an agent's key",
                        )
                    })
                })
                .inspect_err(|_| *protocol = early_protocol(&parts, arrival))?;
            *protocol = aws::protocol_hint(&head, Some(scope.service));
            let agent = self.identify(&head, &scope, now)?;
            // A signature that does not cover the body's bytes (a declared payload hash,
            // checked against the body as it is read; a presigned URL) is verified now,
            // before any of the body is read.
            let covers_body = !scope.presigned && head.header("x-amz-content-sha256").is_none();
            if endpoint.verify_signatures && !covers_body {
                verify_agent(&head, &scope, &agent, now)?;
            }
            (
                agent,
                aws::body_carries_call(&head, scope.service),
                scope.presigned,
                covers_body,
            )
        };
        record.agent.clone_from(&agent.name);

        // How the body travels decides whether it is read now: whole when it carries the
        // call (JSON, query, EC2, CBOR services), whatever its declared payload hash.
        let declared = parts
            .headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mode = BodyMode::of(declared.as_deref(), &parts.headers, carries_call, presigned)?;
        // A body read whole holds its share of the memory budget until the call is done.
        let _budget;
        let (buffered, incoming): (Bytes, Option<Incoming>) = if mode == BodyMode::Buffer {
            let limit = if declared.is_none() || carries_call {
                MAX_BUFFERED
            } else {
                MAX_BODY
            };
            let Some(incoming) = unread.as_mut() else {
                return Err(refuse(
                    500,
                    "InternalFailure",
                    "sigward: the body was taken twice",
                ));
            };
            match body::read_whole(incoming, limit, self.body_timeout, &self.body_budget).await {
                Ok(whole) => {
                    *unread = None;
                    _budget = whole.budget;
                    (whole.bytes, None)
                }
                Err(body::ReadWhole::Busy(bytes)) => {
                    return Err(refuse(
                        503,
                        "SlowDown",
                        format!(
                            "sigward: the memory for request bodies read whole ({} MiB, proxy.max_buffered_mib) is in use; retry shortly",
                            bytes >> 20
                        ),
                    ));
                }
                Err(body::ReadWhole::TooLarge(limit)) => {
                    return Err(refuse(
                        413,
                        "RequestEntityTooLarge",
                        format!(
                            "sigward: the request body is larger than {limit} bytes, the most sigward reads whole"
                        ),
                    ));
                }
                Err(body::ReadWhole::Failed(e)) => {
                    let (status, code) = e.code();
                    return Err(refuse(status, code, format!("sigward: {e}")));
                }
            }
        } else {
            _budget = None;
            (Bytes::new(), unread.take())
        };

        // A body read whole is checked against its declared hash here; a streamed one
        // as it passes (proxy/body.rs).
        if let Some(hash) = declared.as_deref().filter(|h| is_sha256(h))
            && mode == BodyMode::Buffer
        {
            let computed = hex::encode(sha2::Sha256::digest(&buffered));
            if !computed.eq_ignore_ascii_case(hash) {
                let mismatch = body::BodyError::HashMismatch {
                    declared: hash.to_string(),
                    computed,
                };
                let (status, code) = mismatch.code();
                return Err(refuse(status, code, format!("sigward: {mismatch}")));
            }
        }

        // The request as the agent signed it, body included; its signature verified.
        let signed =
            AwsRequest::from_parts(parts.method.as_str(), &target, head_headers(), &buffered);
        let scope = Scope::of(&signed)
            .ok()
            .flatten()
            .ok_or_else(|| refuse(500, "InternalFailure", "sigward: the scope changed"))?;
        if endpoint.verify_signatures && signature_covers_body {
            verify_agent(&signed, &scope, &agent, now)?;
        }

        // Where the call really goes: the tunnel's host, or the scope's regional host.
        let host = match &arrival.tunnel_host {
            Some(tunnel) => tunnel.clone(),
            None => aws::regional_host(scope.service, scope.region).ok_or_else(|| {
                refuse(
                    400,
                    "InvalidRequest",
                    format!("sigward: no AWS host for service {}", scope.service),
                )
            })?,
        };

        if arrival.tunnel_host.is_none() && !endpoint.hosts.iter().any(|p| host_matches(p, &host)) {
            return Err(refuse(
                403,
                "AccessDenied",
                format!(
                    "sigward: {host} is not a host endpoint {} intercepts",
                    endpoint.name
                ),
            ));
        }

        // 2. understand (as the host sees it; the body decoded)
        let mut view = signed.clone();
        for (name, value) in &mut view.headers {
            if name.eq_ignore_ascii_case("host") {
                *value = host.as_bytes();
            }
        }
        let view = if incoming.is_some() {
            view.with_unread_body("it is streamed to the upstream")
        } else {
            view.with_decoded_body()
        };
        let (mut facet, understood_protocol) = aws::understand_call(&view, &endpoint.accounts)
            .map_err(|e| refuse(400, "InvalidRequest", format!("sigward: {e}")))?;
        *protocol = understood_protocol;
        facet.principal.clone_from(&agent.name);
        facet.endpoint.clone_from(&endpoint.name);
        record.summary = format!(
            "{} {} {} {}",
            facet.iam_action,
            facet.account_name.as_deref().unwrap_or(&facet.account),
            facet.region,
            facet.resources.first().map_or("", String::as_str)
        )
        .trim_end()
        .to_string();

        // 3. judge
        let snapshot = self.policies.current();
        let set = snapshot.endpoint(&endpoint.name).ok_or_else(|| {
            refuse(
                403,
                "AccessDenied",
                format!("sigward: endpoint {} has no policy set", endpoint.name),
            )
        })?;
        let judging = Instant::now();
        let judgement = set.judge(&facet);
        self.metrics.policy_evaluation(
            judging.elapsed(),
            judgement.evaluations.iter().filter_map(|e| e.failure),
        );
        record.service.clone_from(&facet.service);
        record.policies = judgement
            .evaluations
            .iter()
            .map(|e| format!("{}@{}", e.policy, e.digest.short()))
            .collect::<Vec<_>>()
            .join(",");
        record.verdict = judgement.verdict.kind();
        let verdict = judgement.verdict.clone();
        if self.audit.is_some() {
            record.facet = Some(facet.clone());
            record.settings = set
                .entries
                .iter()
                .take(judgement.evaluations.len())
                .map(|e| Arc::clone(&e.settings))
                .collect();
            record.limits = Some(set.limits.clone());
            record.judgement = Some(judgement);
        }
        match verdict {
            Verdict::Allow => {}
            // Record mode: the verdict is logged, not enforced.
            _ if endpoint.mode == Mode::Record => {}
            Verdict::Deny { reason } => return Err(refuse(403, "AccessDenied", reason)),
            Verdict::Approve { approvers, prompt } => {
                let outcome = self.hold(route, &facet, &approvers, &prompt).await;
                record.approval = Some(outcome.clone());
                if let Some(refusal) = approval_refusal(&outcome, &approvers, &prompt) {
                    return Err(refusal);
                }
            }
        }

        // Nothing goes out that the audit log could not record.
        if let Some(audit) = &self.audit
            && !audit.fail_open
            && let Err(why) = audit.check()
        {
            return Err(refuse(
                503,
                "ServiceUnavailable",
                format!(
                    "sigward: {why}; requests are refused until it can be written (audit.on_failure = \"allow\" would serve on)"
                ),
            ));
        }

        // 4. credentials
        let credentials = route
            .credentials
            .get(&facet.account, &agent.name)
            .await
            .map_err(|e| {
                let account = match &facet.account_name {
                    Some(name) => format!("{name} ({})", facet.account),
                    None => facet.account.clone(),
                };
                refuse(
                    503,
                    "ServiceUnavailable",
                    format!("sigward: account {account}: {e}"),
                )
            })?;

        // 5. re-sign
        let failure = Failure::default();
        let (outgoing, body) = resign(
            &signed,
            &scope,
            &host,
            &credentials,
            now,
            ResignBody {
                mode,
                idle: self.body_timeout,
                declared: declared.as_deref(),
                buffered: &buffered,
                incoming,
                failure: failure.clone(),
                agent_secret: &agent.secret,
            },
        )?;
        let request_streams = !matches!(mode, BodyMode::Buffer);
        let mut request = Request::builder()
            .method(parts.method.clone())
            .uri(
                route
                    .upstream
                    .uri(&host, &outgoing.path_and_query)
                    .map_err(|e| refuse(500, "InternalFailure", format!("sigward: {e}")))?,
            )
            .body(body)
            .map_err(|e| refuse(500, "InternalFailure", format!("sigward: {e}")))?;
        *request.headers_mut() = outgoing.headers;

        // 6. forward
        let sent = Instant::now();
        // The upstream's time to answer counts from the end of the request body: a large
        // upload streams for as long as it takes.
        let streamed = request_streams;
        let answer_deadline = async {
            let wait = endpoint.response_timeout;
            // While the body streams, a whole `wait` in which no part of it moves (the
            // upstream takes none) ends the wait too.
            if streamed {
                loop {
                    let frames = failure.frames();
                    tokio::select! {
                        () = failure.ended() => break,
                        () = tokio::time::sleep(wait) => {
                            if failure.frames() == frames {
                                return;
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(wait).await;
        };
        let response = tokio::select! {
            response = route.upstream.send(request) => Ok(response),
            () = answer_deadline => Err(()),
        };
        let response = response
            .map_err(|()| {
                refuse(
                    504,
                    "GatewayTimeout",
                    format!(
                        "sigward: upstream {host} did not answer within {} ms (endpoint {}: response_timeout); the call may or may not have run",
                        endpoint.response_timeout.as_millis(),
                        endpoint.name
                    ),
                )
            })?
            .map_err(|e| {
            if let Some(body_error) = failure.take() {
                let (status, code) = body_error.code();
                return refuse(status, code, format!("sigward: {body_error}"));
            }
            refuse(
                502,
                "ServiceUnavailable",
                format!("sigward: upstream {host}: {e}"),
            )
        })?;
        self.metrics
            .upstream(sent.elapsed(), response.status().as_u16());
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            body.map_err(|e| -> BoxError { Box::new(e) }).boxed(),
        ))
    }
}

/// The protocol of a request refused before its credential scope is read, from what it
/// shows: the tunnel's host (or its `Host`), target header, media type and path.
fn early_protocol(parts: &http::request::Parts, arrival: &Arrival) -> Protocol {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers: Vec<(&str, &[u8])> = parts
        .headers
        .iter()
        .filter(|(n, _)| *n != http::header::HOST)
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let host = arrival
        .tunnel_host
        .as_deref()
        .or_else(|| parts.headers.get(http::header::HOST)?.to_str().ok())
        .unwrap_or_default();
    headers.push(("host", host.as_bytes()));
    aws::protocol_hint(
        &AwsRequest::from_parts(parts.method.as_str(), target, headers, &[]),
        None,
    )
}

/// Verify the agent's signature over `request`.
fn verify_agent(
    request: &AwsRequest<'_>,
    scope: &Scope<'_>,
    agent: &Caller,
    now: SystemTime,
) -> Result<(), Refusal> {
    sigv4::verify(request, scope, &agent.secret, now).map_err(|e| {
        let status = if matches!(e, sigv4::VerifyError::Malformed(_)) {
            400
        } else {
            403
        };
        refuse(status, e.code(), format!("sigward: {e}"))
    })
}

/// The refusal an approval's outcome means, if it means one.
fn approval_refusal(outcome: &Outcome, approvers: &[String], prompt: &str) -> Option<Refusal> {
    match outcome {
        Outcome::Decided(decision) if decision.approved => None,
        Outcome::Decided(decision) => Some(refuse(
            403,
            "AccessDenied",
            format!(
                "denied by {}{} ({prompt})",
                decision.by,
                decision
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        )),
        Outcome::TimedOut(after) => Some(refuse(
            403,
            "AccessDenied",
            format!(
                "approval timed out after {}s: nobody of {} decided ({prompt})",
                after.as_secs(),
                approvers.join(", ")
            ),
        )),
        Outcome::Unavailable(why) => Some(refuse(
            503,
            "ServiceUnavailable",
            format!(
                "sigward: this call needs an approval, and approvals cannot be shared now ({why})"
            ),
        )),
    }
}

/// How a request body travels, from its `x-amz-content-sha256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyMode {
    /// Read whole: no declared hash (its signature covers the bytes), or small.
    Buffer,
    /// Streamed and checked against the declared hash.
    Hashed,
    /// Streamed as is (`UNSIGNED-PAYLOAD`, `STREAMING-UNSIGNED-PAYLOAD-TRAILER`).
    Pass,
    /// aws-chunked, signed chunk by chunk: verified and re-signed as it streams.
    Chunked { trailer: bool },
}

impl BodyMode {
    /// `carries_call`: the body names the operation and its resources, so it is read.
    /// `presigned`: a presigned URL's signature never covers the body (`UNSIGNED-PAYLOAD`
    /// is implied), so an upload to one streams like any other S3 upload.
    fn of(
        declared: Option<&str>,
        headers: &HeaderMap,
        carries_call: bool,
        presigned: bool,
    ) -> Result<Self, Refusal> {
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let small = length.is_some_and(|l| l <= MAX_BODY);
        let aws_chunked = headers
            .get_all(http::header::CONTENT_ENCODING)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("aws-chunked")));
        Ok(match declared {
            None if presigned && !carries_call => BodyMode::Pass,
            None => BodyMode::Buffer,
            Some(hash) if carries_call && (is_sha256(hash) || hash == "UNSIGNED-PAYLOAD") => {
                BodyMode::Buffer
            }
            Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD") => BodyMode::Chunked { trailer: false },
            Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER") => {
                BodyMode::Chunked { trailer: true }
            }
            // Small bodies are read so that understanding sees them.
            Some(hash) if is_sha256(hash) && small && !aws_chunked => BodyMode::Buffer,
            Some(hash) if is_sha256(hash) => BodyMode::Hashed,
            Some("UNSIGNED-PAYLOAD" | "STREAMING-UNSIGNED-PAYLOAD-TRAILER") => BodyMode::Pass,
            Some(other) => {
                return Err(refuse(
                    400,
                    "InvalidRequest",
                    format!(
                        "sigward: x-amz-content-sha256 {other:?} is not supported (SigV4a is not)"
                    ),
                ));
            }
        })
    }
}

/// One audit log line (the writer adds `seq` and `prev`); the schema is in the README.
fn audit_record(
    id: &str,
    route: &Route,
    record: Record,
    result: &Result<Response<Body>, Refusal>,
    latency_us: u64,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::{Value, json};
    let mut line = serde_json::Map::new();
    let mut put = |key: &str, value: Value| {
        line.insert(key.into(), value);
    };
    put("time", json!(crate::agents::timestamp(SystemTime::now())));
    put("request_id", json!(id));
    put("endpoint", json!(route.endpoint.name));
    put(
        "mode",
        json!(match route.endpoint.mode {
            Mode::Enforce => "enforce",
            Mode::Record => "record",
        }),
    );
    put("agent", json!(record.agent));
    put(
        "facet",
        serde_json::to_value(&record.facet).unwrap_or(Value::Null),
    );
    match &record.judgement {
        Some(judgement) => {
            put(
                "verdict",
                serde_json::to_value(&judgement.verdict).unwrap_or(Value::Null),
            );
            let evaluations: Vec<Value> = judgement
                .evaluations
                .iter()
                .zip(&record.settings)
                .map(|(evaluation, settings)| {
                    let mut value = serde_json::to_value(evaluation).unwrap_or(Value::Null);
                    if let Some(object) = value.as_object_mut() {
                        object.insert("settings".into(), json!(settings.as_ref()));
                    }
                    value
                })
                .collect();
            put("evaluations", Value::Array(evaluations));
            put(
                "limits",
                serde_json::to_value(&record.limits).unwrap_or(Value::Null),
            );
        }
        None => put("verdict", Value::Null),
    }
    put(
        "approval",
        match &record.approval {
            None => Value::Null,
            Some(Outcome::Decided(decision)) => json!({
                "decision": if decision.approved { "approved" } else { "denied" },
                "by": decision.by,
                "reason": decision.reason,
            }),
            Some(Outcome::TimedOut(after)) => json!({
                "decision": "timed_out",
                "after_seconds": after.as_secs(),
            }),
            Some(Outcome::Unavailable(why)) => json!({
                "decision": "unavailable",
                "reason": why,
            }),
        },
    );
    match result {
        Ok(response) => {
            put("status", json!(response.status().as_u16()));
            put("upstream_status", json!(response.status().as_u16()));
            put(
                "response_bytes",
                json!(
                    response
                        .headers()
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                ),
            );
        }
        Err(refusal) => {
            put("status", json!(refusal.status));
            put("code", json!(refusal.code));
            put("reason", json!(refusal.message));
        }
    }
    put("request_bytes", json!(record.request_bytes));
    put("latency_us", json!(latency_us));
    line
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

struct ResignBody<'a> {
    mode: BodyMode,
    /// How long the agent may keep a streamed body waiting.
    idle: Duration,
    declared: Option<&'a str>,
    buffered: &'a Bytes,
    incoming: Option<Incoming>,
    failure: Failure,
    agent_secret: &'a str,
}

struct Resigned {
    path_and_query: String,
    headers: HeaderMap,
}

/// Strip the agent's signature, sign with the assumed role's credentials, and set up
/// the body's stage.
fn resign(
    signed: &AwsRequest<'_>,
    scope: &Scope<'_>,
    host: &str,
    credentials: &SigningCredentials,
    now: SystemTime,
    body: ResignBody<'_>,
) -> Result<(Resigned, Body), Refusal> {
    let internal = |e: String| {
        refuse(
            500,
            "InternalFailure",
            format!("sigward: re-signing failed: {e}"),
        )
    };

    // Headers to send: the agent's, minus hop-by-hop and its signature, Host set.
    let mut send: Vec<(&str, &str)> = Vec::with_capacity(signed.headers.len());
    for (name, value) in &signed.headers {
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str())
            || AGENT_SIGNATURE_HEADERS.contains(&lower.as_str())
            || lower == "host"
        {
            continue;
        }
        // A value that is not text cannot be signed; it is not sent either.
        if let Ok(value) = std::str::from_utf8(value) {
            send.push((name, value));
        }
    }
    send.push(("host", host));

    let uri = sigv4::signed_uri(signed, scope.presigned);
    let presign = if scope.presigned {
        let expires = signed
            .query_param("X-Amz-Expires")
            .and_then(|e| e.parse::<u64>().ok())
            .unwrap_or(900);
        Some(Duration::from_secs(expires))
    } else {
        None
    };
    let outgoing = Outgoing {
        method: signed.method,
        uri: &uri,
        headers: &send,
        payload_hash: if presign.is_some() {
            None
        } else {
            body.declared
        },
        body: body.buffered,
        presign,
    };
    let added = sigv4::resign(&outgoing, scope.service, scope.region, credentials, now)
        .map_err(|e| internal(e.to_string()))?;

    let mut path_and_query = uri;
    if !added.params.is_empty() {
        let params = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&added.params)
            .finish()
            .replace('+', "%20");
        path_and_query.push(if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        });
        path_and_query.push_str(&params);
    }
    let mut headers = HeaderMap::with_capacity(send.len() + added.headers.len());
    for (name, value) in send
        .iter()
        .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
        .chain(added.headers)
    {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| internal(e.to_string()))?;
        let value = HeaderValue::from_str(&value).map_err(|e| internal(e.to_string()))?;
        headers.append(name, value);
    }

    let stream = body.incoming;
    let body = match (body.mode, stream) {
        (BodyMode::Buffer, _) | (_, None) => Full::new(body.buffered.clone())
            .map_err(|never| match never {})
            .boxed(),
        (BodyMode::Pass, Some(incoming)) => {
            body::Outgoing::pass(incoming, body.failure, body.idle).boxed()
        }
        (BodyMode::Hashed, Some(incoming)) => body::Outgoing::hashed(
            incoming,
            body.declared.unwrap_or_default(),
            body.failure,
            body.idle,
        )
        .boxed(),
        (BodyMode::Chunked { trailer }, Some(incoming)) => {
            let seed = signed
                .header("authorization")
                .and_then(|a| a.rsplit_once("Signature="))
                .map(|(_, s)| s.trim().to_string())
                .ok_or_else(|| internal("the agent's seed signature is missing".into()))?;
            let signed_at = signed
                .header("x-amz-date")
                .ok_or_else(|| internal("X-Amz-Date is missing".into()))
                .and_then(|d| sigv4::parse_amz_date(d).map_err(|e| internal(e.to_string())))?;
            let agent = Chain::new(
                scope.access_key_id,
                body.agent_secret,
                signed_at,
                scope.region,
                scope.service,
                &seed,
            );
            let ours = Chain::new(
                &credentials.access_key_id,
                &credentials.secret_access_key,
                now,
                scope.region,
                scope.service,
                &added.signature,
            );
            body::Outgoing::resigned(
                incoming,
                Resigner::new(agent, ours, trailer),
                body.failure,
                body.idle,
            )
            .boxed()
        }
    };
    Ok((
        Resigned {
            path_and_query,
            headers,
        },
        body,
    ))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few headers a response has, rather than a lookup (and a name
    // parse) for each hop-by-hop name; a response rarely has any.
    let present: Vec<_> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(&name.as_str()))
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
}

/// `*.amazonaws.com` matches any name ending in `.amazonaws.com`; other patterns match
/// exactly (case-insensitively).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = strip_port(host);
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => host.eq_ignore_ascii_case(pattern),
    }
}

fn error_response(protocol: Protocol, refusal: &Refusal, request_id: &str) -> Response<Body> {
    aws_error(
        protocol,
        refusal.status,
        refusal.code,
        &refusal.message,
        request_id,
    )
    .into_response()
}

/// The listeners hand their requests to the pipeline.
impl Handler for Pipeline {
    fn route_for(&self, host: &str) -> Result<usize, Vec<String>> {
        Pipeline::route_for(self, host).ok_or_else(|| {
            self.routes
                .iter()
                .flat_map(|r| r.endpoint.hosts.iter().cloned())
                .collect()
        })
    }

    fn handle(
        &self,
        request: Request<Incoming>,
        arrival: &Arrival,
    ) -> impl Future<Output = Response<Body>> + Send {
        Pipeline::handle(self, request, arrival)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_lose_their_hop_by_hop_headers_and_keep_the_rest() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-trace"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-amz-request-id", "r1"),
            ("x-amz-meta-connection", "kept"),
            ("content-type", "text/xml"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers.append("proxy-connection", HeaderValue::from_static("close"));
        headers.append("proxy-connection", HeaderValue::from_static("again"));
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            ["content-type", "x-amz-meta-connection", "x-amz-request-id"]
        );
    }

    #[test]
    fn host_patterns() {
        assert!(host_matches("*.amazonaws.com", "s3.amazonaws.com"));
        assert!(host_matches(
            "*.amazonaws.com",
            "b.s3.us-east-1.AMAZONAWS.com:443"
        ));
        assert!(!host_matches("*.amazonaws.com", "amazonaws.com"));
        assert!(!host_matches("*.amazonaws.com", "evilamazonaws.com"));
        assert!(!host_matches(
            "*.amazonaws.com",
            "s3.amazonaws.com.evil.net"
        ));
        assert!(host_matches("sts.amazonaws.com", "STS.amazonaws.com"));
        assert!(!host_matches("sts.amazonaws.com", "x.sts.amazonaws.com"));
    }
}

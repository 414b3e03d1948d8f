//! The admin listener (`[admin] listen`): where humans decide approvals and Prometheus
//! scrapes. Every API call needs `Authorization: Bearer <token>` (constant-time
//! comparison):
//!
//! - `GET /approvals` — pending approvals, JSON;
//! - `POST /approvals/<id>/approve`, `POST /approvals/<id>/deny` — optional JSON body
//!   `{"by": "alice", "reason": "…"}`; 404 for an unknown or already decided id;
//! - `GET /metrics` — Prometheus text format.
//!
//! `GET /` is the approvals page: static HTML holding no data, which asks for the token
//! (or takes it from the URL's `#token=` fragment, which browsers never send) and then
//! calls the API above, refreshing itself every second.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

use crate::approval::Decision;
use crate::pipeline::Pipeline;
use crate::proxy::listener::serve_plain;
use crate::upstream::{Body, response};

/// What the admin listener serves.
pub struct Admin {
    pub token: String,
    pub pipeline: Arc<Pipeline>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    by: Option<String>,
    reason: Option<String>,
}

pub async fn serve_admin(listener: TcpListener, admin: Arc<Admin>) {
    serve_plain(listener, "admin", move |request, _| {
        let admin = Arc::clone(&admin);
        async move { answer(request, &admin).await }
    })
    .await;
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = response(status, content_type, body);
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    respond(status, "application/json", value.to_string())
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, serde_json::json!({ "error": message }))
}

fn authorized(request: &Request<Incoming>, token: &str) -> bool {
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    bool::from(presented.as_bytes().ct_eq(token.as_bytes()))
}

async fn answer(request: Request<Incoming>, admin: &Admin) -> Response<Body> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    if method == Method::GET && (path == "/" || path == "/index.html") {
        return respond(StatusCode::OK, "text/html; charset=utf-8", PAGE);
    }
    if !authorized(&request, &admin.token) {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "sigward admin: Authorization: Bearer <token> is missing or wrong",
        );
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["approvals"]) => match admin.pipeline.approvals.list().await {
            Ok(pending) => json(StatusCode::OK, serde_json::json!(pending)),
            Err(why) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the approvals cannot be read: {why}"),
            ),
        },
        (Method::GET, ["metrics"]) => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            admin.pipeline.metrics.render(&admin.pipeline.totals()),
        ),
        (Method::POST, ["approvals", id, action @ ("approve" | "deny")]) => {
            let approved = *action == "approve";
            let id = (*id).to_string();
            let body = match Limited::new(request.into_body(), 64 << 10).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body: {e}")),
            };
            let body: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
                DecisionBody::default()
            } else {
                match serde_json::from_slice(&body) {
                    Ok(body) => body,
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            &format!("the body must be {{\"by\": …, \"reason\": …}}: {e}"),
                        );
                    }
                }
            };
            let decision = Decision {
                approved,
                by: body
                    .by
                    .filter(|b| !b.trim().is_empty())
                    .unwrap_or_else(|| "admin".into()),
                reason: body.reason.filter(|r| !r.trim().is_empty()),
            };
            match admin.pipeline.approvals.decide(&id, decision.clone()).await {
                Err(why) => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("approval {id} cannot be decided now: {why}"),
                ),
                Ok(Some(pending)) => json(
                    StatusCode::OK,
                    serde_json::json!({
                        "id": id,
                        "decision": if approved { "approved" } else { "denied" },
                        "by": decision.by,
                        "prompt": pending.prompt,
                    }),
                ),
                Ok(None) => error(
                    StatusCode::NOT_FOUND,
                    &format!("no pending approval {id} (unknown, already decided, or timed out)"),
                ),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The approvals page. Plain HTML and a little JavaScript: no build step, no assets.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>sigward approvals</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem; max-width: 60rem; }
  .approval { border: 1px solid #ccc; border-radius: 6px; padding: .8rem 1rem; margin: .8rem 0; }
  .prompt { font-weight: 600; }
  .meta { color: #555; font-size: 13px; margin: .3rem 0 .6rem; }
  button { font: inherit; padding: .3rem 1rem; margin-right: .5rem; cursor: pointer; }
  #status { color: #555; }
  #login[hidden], #main[hidden] { display: none; }
</style>
</head>
<body>
<h1>sigward: pending approvals</h1>
<form id="login" hidden>
  <label>Admin token <input id="token" type="password" autocomplete="off"></label>
  <button type="submit">Show approvals</button>
</form>
<div id="main" hidden>
  <label>Deciding as <input id="by" value="" placeholder="your name"></label>
  <p id="status">Loading…</p>
  <div id="approvals"></div>
</div>
<script>
"use strict";
const fragment = new URLSearchParams(location.hash.slice(1));
let token = fragment.get("token") || sessionStorage.getItem("sigward-token") || "";
if (fragment.get("token")) history.replaceState(null, "", location.pathname);
const $ = (id) => document.getElementById(id);
$("by").value = localStorage.getItem("sigward-by") || "";
$("by").addEventListener("change", () => localStorage.setItem("sigward-by", $("by").value));

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) { sessionStorage.removeItem("sigward-token"); token = ""; show(); throw new Error("wrong token"); }
  return response;
}

async function decide(id, action, button) {
  button.disabled = true;
  const response = await api("POST", "/approvals/" + id + "/" + action, { by: $("by").value || undefined });
  $("status").textContent = response.ok ? (action === "approve" ? "Approved " : "Denied ") + id : "Could not decide " + id + ": " + (await response.text());
  refresh();
}

function render(list) {
  const container = $("approvals");
  container.replaceChildren(...list.map((a) => {
    const div = document.createElement("div");
    div.className = "approval";
    div.dataset.id = a.id;
    const prompt = document.createElement("div");
    prompt.className = "prompt";
    prompt.textContent = a.prompt;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = "approvers: " + a.approvers.join(", ") + " · agent " + a.agent + " · endpoint " + a.endpoint + " · expires " + a.expires_at;
    const approve = document.createElement("button");
    approve.textContent = "Approve";
    approve.onclick = () => decide(a.id, "approve", approve);
    const deny = document.createElement("button");
    deny.textContent = "Deny";
    deny.onclick = () => decide(a.id, "deny", deny);
    div.append(prompt, meta, approve, deny);
    return div;
  }));
  if (!$("status").textContent.startsWith("Approved") && !$("status").textContent.startsWith("Denied")) {
    $("status").textContent = list.length ? list.length + " pending" : "Nothing is waiting.";
  }
}

async function refresh() {
  if (!token) return;
  try {
    const response = await api("GET", "/approvals");
    if (response.ok) render(await response.json());
  } catch (e) { $("status").textContent = "sigward is not answering: " + e.message; }
}

function show() {
  $("login").hidden = !!token;
  $("main").hidden = !token;
  if (token) { sessionStorage.setItem("sigward-token", token); refresh(); }
}

$("login").addEventListener("submit", (e) => { e.preventDefault(); token = $("token").value; show(); });
setInterval(refresh, 1000);
show();
</script>
</body>
</html>
"#;

//! The container-credentials listener (`[proxy] credentials_listen`): AWS SDKs given
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:PORT/agents/NAME/ACCOUNT` and
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN` fetch a fresh issued key from here, in the ECS
//! format, and again before it expires. The token is the agent's own
//! ([`Agents::container_token`]), compared in constant time; anything else is a 403.

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

use crate::agents::{Agents, LiveAgents, timestamp};
use crate::aws::account::AccountId;
use crate::proxy::listener::serve_plain;
use crate::upstream::{Body, response};

/// Accept credential requests until the process ends.
pub async fn serve_credentials(listener: TcpListener, agents: Arc<LiveAgents>) {
    serve_plain(listener, "credentials", move |request, peer| {
        let agents = Arc::clone(&agents);
        async move {
            let (status, body) = answer(&request, &agents);
            tracing::info!(
                target: "sigward::credentials",
                %peer,
                path = %request.uri().path(),
                status = status.as_u16(),
                "container credentials"
            );
            json_response(status, body)
        }
    })
    .await;
}

fn answer(request: &Request<Incoming>, live: &LiveAgents) -> (StatusCode, serde_json::Value) {
    let refuse = |status: StatusCode, code: &str, message: String| {
        (
            status,
            serde_json::json!({ "code": code, "message": format!("sigward: {message}") }),
        )
    };
    if request.method() != Method::GET {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "only GET".into(),
        );
    }
    let segments: Vec<&str> = request.uri().path().trim_matches('/').split('/').collect();
    let ["agents", name, account] = segments.as_slice() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "NotFound",
            "credentials are served at /agents/NAME/ACCOUNT".into(),
        );
    };
    let Some(account) = AccountId::parse(account) else {
        return refuse(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{account:?} is not a 12-digit account id"),
        );
    };
    let agents = match live.current() {
        Ok(agents) => agents,
        Err(crate::agents::AgentError::Database(why)) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("issued keys cannot be handed out now: {why}"),
            );
        }
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                format!("cannot read the agents: {e}"),
            );
        }
    };
    // The same answer for an unknown agent as for a wrong token: the listener does not
    // tell who exists.
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if !token_matches(&agents, name, presented) {
        return refuse(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!("the Authorization header is not agent {name}'s container token"),
        );
    }
    match agents.issue(name, &account, SystemTime::now()) {
        Ok(key) => (
            StatusCode::OK,
            serde_json::json!({
                "AccessKeyId": key.access_key_id,
                "SecretAccessKey": key.secret_access_key,
                "Token": key.session_token,
                "Expiration": timestamp(key.expiration),
            }),
        ),
        Err(e) => refuse(StatusCode::FORBIDDEN, "AccessDenied", e.to_string()),
    }
}

fn token_matches(agents: &Agents, name: &str, presented: &[u8]) -> bool {
    agents
        .container_token(name)
        .is_ok_and(|expected| bool::from(expected.as_bytes().ct_eq(presented)))
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    response(status, "application/json", body.to_string())
}

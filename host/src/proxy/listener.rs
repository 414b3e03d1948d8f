//! The two ways in:
//!
//! - the forward proxy (`HTTPS_PROXY=http://…`): `CONNECT host:443` to a host an
//!   endpoint intercepts is answered, then TLS is terminated with a leaf certificate for
//!   that host minted by sigward's CA; any other host is refused — no blind tunnels;
//! - the direct listener (`AWS_ENDPOINT_URL=https://127.0.0.1:PORT`): TLS with a
//!   certificate for the name the client asks for (localhost, 127.0.0.1).
//!
//! Both speak HTTP/1.1 with keep-alive to the agent and hand every request to a
//! [`Handler`] (in `sigward serve`, the pipeline, which sits above this module). Every wait on an agent is bounded ([`Connections`]): a request head
//! within 30 s, a TLS handshake within `handshake_timeout`; at `max_connections` the
//! listeners stop accepting until a connection ends; a failed accept (the open-file limit)
//! backs off instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::errors::plain_response;
use crate::config::Connections;
use crate::tls::LeafResolver;
use crate::upstream::Body;

/// How the connection a request came on was opened.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Index into the handler's routes ([`Handler::route_for`]).
    pub route: usize,
    /// The host of the CONNECT tunnel; `None` on the direct (`AWS_ENDPOINT_URL`) listener,
    /// where the host comes from the credential scope.
    pub tunnel_host: Option<String>,
}

/// What the listeners hand each request to.
pub trait Handler: Send + Sync + 'static {
    /// The route for a CONNECT to `host`, or else the host patterns that are intercepted
    /// (for the refusal's message).
    fn route_for(&self, host: &str) -> Result<usize, Vec<String>>;

    /// Answer one request that arrived as `arrival` says.
    fn handle(
        &self,
        request: Request<Incoming>,
        arrival: &Arrival,
    ) -> impl Future<Output = http::Response<Body>> + Send;
}

/// The TLS side of both listeners.
#[derive(Debug, Clone)]
pub struct Tls {
    leaves: Arc<LeafResolver>,
    base: Arc<ServerConfig>,
}

impl Tls {
    pub fn new(leaves: Arc<LeafResolver>) -> Result<Self, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut base = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(leaves.clone() as Arc<dyn ResolvesServerCert>);
        base.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            leaves,
            base: Arc::new(base),
        })
    }

    /// A config presenting the leaf for `host` whatever name the client asks for: the
    /// tunnel's host is what the agent's CONNECT named and what sigward checked.
    fn for_tunnel(&self, host: &str) -> Arc<ServerConfig> {
        let mut config = (*self.base).clone();
        config.cert_resolver = Arc::new(TunnelLeaf {
            leaves: Arc::clone(&self.leaves),
            host: host.to_string(),
        });
        Arc::new(config)
    }
}

#[derive(Debug)]
struct TunnelLeaf {
    leaves: Arc<LeafResolver>,
    host: String,
}

impl ResolvesServerCert for TunnelLeaf {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.leaves.leaf(&self.host)
    }
}

/// An agent has this long to send a request's head; a connection idle (or trickling)
/// longer is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP/1.1 towards agents: keep-alive, and a bound on how long a request head may take.
fn agent_http() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder
}

/// What both agent listeners share: the bounds, and the permits of `max_connections`.
#[derive(Debug, Clone)]
pub struct Gate {
    bounds: Connections,
    permits: Arc<Semaphore>,
}

impl Gate {
    pub fn new(bounds: Connections) -> Self {
        Self {
            bounds,
            permits: Arc::new(Semaphore::new(bounds.max_connections)),
        }
    }

    /// The next connection, once there is room for it. A failed accept — most often the
    /// open-file limit — is logged and retried after a pause, never in a busy loop.
    async fn accept(
        &self,
        listener: &TcpListener,
    ) -> (TcpStream, SocketAddr, Arc<OwnedSemaphorePermit>) {
        // INVARIANT: the semaphore is never closed.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let mut pause = Duration::from_millis(10);
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => return (stream, peer, Arc::new(permit)),
                Err(error) => {
                    tracing::warn!(%error, pause_ms = pause.as_millis() as u64, "accept failed; pausing before the next");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Accept forward-proxy connections until the process ends.
pub async fn serve_proxy<H: Handler>(
    listener: TcpListener,
    pipeline: Arc<H>,
    tls: Tls,
    gate: Gate,
) {
    loop {
        let (stream, peer, permit) = gate.accept(&listener).await;
        let pipeline = Arc::clone(&pipeline);
        let tls = tls.clone();
        let handshake = gate.bounds.handshake_timeout;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let service = service_fn(move |request: Request<Incoming>| {
                let pipeline = Arc::clone(&pipeline);
                let tls = tls.clone();
                // The tunnel keeps the connection's permit after the CONNECT is answered.
                let permit = Arc::clone(&permit);
                async move {
                    Ok::<_, std::convert::Infallible>(connect(
                        request, pipeline, tls, peer, handshake, permit,
                    ))
                }
            });
            if let Err(error) = agent_http()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%error, %peer, "proxy connection ended");
            }
        });
    }
}

/// Answer one request on the proxy port: a CONNECT to an intercepted host opens a
/// terminated tunnel; anything else is refused with a reason.
fn connect<H: Handler>(
    request: Request<Incoming>,
    pipeline: Arc<H>,
    tls: Tls,
    peer: SocketAddr,
    handshake: Duration,
    permit: Arc<OwnedSemaphorePermit>,
) -> http::Response<Body> {
    if request.method() != Method::CONNECT {
        return plain_response(
            StatusCode::BAD_REQUEST,
            "sigward intercepts HTTPS only: use https:// AWS endpoints with HTTPS_PROXY pointing here",
        );
    }
    let Some(authority) = request.uri().authority().cloned() else {
        return plain_response(
            StatusCode::BAD_REQUEST,
            "sigward: CONNECT without host:port",
        );
    };
    let host = authority.host().to_ascii_lowercase();
    let route = match pipeline.route_for(&host) {
        Ok(route) => route,
        Err(patterns) => {
            tracing::info!(target: "sigward::request", %peer, host = %authority, "refused: host not intercepted");
            return plain_response(
                StatusCode::FORBIDDEN,
                &format!(
                    "sigward: {authority} is not a host any endpoint intercepts ({}); sigward opens no blind tunnels",
                    patterns.join(", ")
                ),
            );
        }
    };
    let tunnel_host = if authority.port_u16().is_none_or(|p| p == 443) {
        host.clone()
    } else {
        authority.to_string()
    };
    let config = tls.for_tunnel(&host);
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "CONNECT upgrade failed");
                return;
            }
        };
        let arrival = Arrival {
            route,
            tunnel_host: Some(tunnel_host),
        };
        terminate(
            TokioIo::new(upgraded),
            TlsAcceptor::from(config),
            handshake,
            pipeline,
            arrival,
        )
        .await;
        drop(permit);
    });
    http::Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    )
}

/// Accept direct (`AWS_ENDPOINT_URL`) connections until the process ends; requests go
/// to the first endpoint.
pub async fn serve_direct<H: Handler>(
    listener: TcpListener,
    pipeline: Arc<H>,
    tls: Tls,
    gate: Gate,
) {
    let acceptor = TlsAcceptor::from(Arc::clone(&tls.base));
    loop {
        let (stream, _, permit) = gate.accept(&listener).await;
        let _ = stream.set_nodelay(true);
        let pipeline = Arc::clone(&pipeline);
        let acceptor = acceptor.clone();
        let handshake = gate.bounds.handshake_timeout;
        tokio::spawn(async move {
            let arrival = Arrival {
                route: 0,
                tunnel_host: None,
            };
            terminate::<TcpStream, H>(stream, acceptor, handshake, pipeline, arrival).await;
            drop(permit);
        });
    }
}

/// TLS-terminate `io` (the handshake bounded by `handshake`) and serve HTTP/1.1 on it.
async fn terminate<IO, H: Handler>(
    io: IO,
    acceptor: TlsAcceptor,
    handshake: Duration,
    pipeline: Arc<H>,
    arrival: Arrival,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let tls = match tokio::time::timeout(handshake, acceptor.accept(io)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::info!(%error, "TLS handshake with the agent failed (does it trust sigward's ca.pem?)");
            return;
        }
        Err(_) => {
            tracing::info!(
                timeout_ms = handshake.as_millis() as u64,
                "TLS handshake with the agent did not finish in time; connection closed"
            );
            return;
        }
    };
    let arrival = Arc::new(arrival);
    let service = service_fn(move |request: Request<Incoming>| {
        let pipeline = Arc::clone(&pipeline);
        let arrival = Arc::clone(&arrival);
        async move { Ok::<_, std::convert::Infallible>(pipeline.handle(request, &arrival).await) }
    });
    if let Err(error) = agent_http()
        .serve_connection(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(%error, "agent connection ended");
    }
}

/// Serve plain HTTP/1.1 (keep-alive, the same head timeout) on `listener` until the
/// process ends, answering each request with `handle` — the small local listeners: the
/// credentials endpoint, the authorizer.
pub async fn serve_plain<F, Fut>(listener: TcpListener, what: &'static str, handle: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::Response<crate::upstream::Body>> + Send,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, what, "accept failed; pausing before the next");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let answer = handle(request, peer);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            if let Err(error) = agent_http()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, %peer, what, "connection ended");
            }
        });
    }
}

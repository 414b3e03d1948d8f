//! The upstream side, below both the proxy and [`crate::aws`] (STS uses it too): one
//! keep-alive HTTP/1.1 client per endpoint (hyper + rustls with the
//! webpki roots) that sends re-signed requests to the real host — or, when the endpoint
//! sets `upstream`, to that URL for every host, keeping the original `Host` — optionally
//! through an egress proxy (`dial_via`, HTTP CONNECT): the brokered dial. STS calls take
//! the same road ([`StsConnector`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Errors carried by bodies on their way through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body sigward sends, either way.
pub type Body = BoxBody<Bytes, BoxError>;

/// A response with a whole body: sigward's own answers (refusals, the local listeners).
pub fn response(
    status: http::StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> http::Response<Body> {
    let mut response = http::Response::new(
        http_body_util::Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where an endpoint's requests go and how they get there.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<Dialer>, Body>,
    /// `scheme://authority` that replaces every request's, if set.
    base: Option<(http::uri::Scheme, http::uri::Authority)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{0} is not a URL sigward can forward to")]
    Url(String),
    #[error("{0}")]
    Send(String),
}

impl Upstream {
    /// `upstream`: an `http(s)://host:port` URL every request goes to; `dial_via`: an
    /// `http://host:port` CONNECT proxy every connection goes through.
    pub fn new(upstream: Option<&str>, dial_via: Option<&str>) -> Result<Self, ForwardError> {
        let base = upstream
            .map(|u| {
                let uri: Uri = u.parse().map_err(|_| ForwardError::Url(u.to_string()))?;
                match (uri.scheme().cloned(), uri.authority().cloned()) {
                    (Some(s), Some(a)) => Ok((s, a)),
                    _ => Err(ForwardError::Url(u.to_string())),
                }
            })
            .transpose()?;
        let via = dial_via
            .map(|v| {
                let uri: Uri = v.parse().map_err(|_| ForwardError::Url(v.to_string()))?;
                let authority = uri
                    .authority()
                    .ok_or_else(|| ForwardError::Url(v.to_string()))?;
                Ok::<_, ForwardError>(authority.to_string())
            })
            .transpose()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ForwardError::Send(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(Dialer {
                via: via.map(Arc::from),
            });
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self { client, base })
    }

    /// The URI a request for `host` (an authority, `host[:port]`) and `path_and_query` goes
    /// to, built from its parts: a host is one authority, never more of a URL.
    pub fn uri(&self, host: &str, path_and_query: &str) -> Result<Uri, ForwardError> {
        let bad = || ForwardError::Url(format!("{host} {path_and_query}"));
        let (scheme, authority) = match &self.base {
            Some((scheme, authority)) => (scheme.clone(), authority.clone()),
            None => {
                let authority: http::uri::Authority = host.parse().map_err(|_| bad())?;
                if authority.as_str().contains('@') {
                    return Err(bad());
                }
                (http::uri::Scheme::HTTPS, authority)
            }
        };
        Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| bad())
    }

    /// Send one request; the response body streams.
    pub async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, ForwardError> {
        self.client
            .request(request)
            .await
            .map_err(|e| ForwardError::Send(error_chain(&e)))
    }
}

/// An error and its causes on one line (a cause its parent already quotes is left out).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// Opens TCP connections: straight to the host, or through a CONNECT proxy.
#[derive(Debug, Clone)]
pub struct Dialer {
    via: Option<Arc<str>>,
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let via = self.via.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("the URI has no host")?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("http") => 80,
                _ => 443,
            });
            let stream = match via {
                None => connect(host, port).await?,
                Some(via) => tunnel(&via, host, port).await?,
            };
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

async fn connect(host: &str, port: u16) -> Result<TcpStream, BoxError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("cannot connect to {host}:{port}: {e}").into()),
        Err(_) => Err(format!("connecting to {host}:{port} timed out").into()),
    }
}

/// `CONNECT host:port` through the egress proxy at `via`.
async fn tunnel(via: &str, host: &str, port: u16) -> Result<TcpStream, BoxError> {
    let (via_host, via_port) = via
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .unwrap_or((via, 80));
    let mut stream = connect(via_host, via_port).await?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    // Read the proxy's answer up to the end of its head, byte by byte: anything after it
    // belongs to the tunnel.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err(format!("egress proxy {via}: answer to CONNECT too long").into());
        }
        let byte = stream
            .read_u8()
            .await
            .map_err(|e| format!("egress proxy {via} closed the CONNECT to {authority}: {e}"))?;
        head.push(byte);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    let ok = status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    if ok {
        Ok(stream)
    } else {
        Err(format!("egress proxy {via} refused CONNECT {authority}: {status_line}").into())
    }
}

/// aws-sdk-sts's HTTP client: STS calls go through the endpoint's [`Upstream`], so the
/// `upstream` override and the egress proxy apply to them too.
#[derive(Debug, Clone)]
pub struct StsConnector(pub Upstream);

impl aws_smithy_runtime_api::client::http::HttpConnector for StsConnector {
    fn call(
        &self,
        request: aws_smithy_runtime_api::client::orchestrator::HttpRequest,
    ) -> aws_smithy_runtime_api::client::http::HttpConnectorFuture {
        use aws_smithy_runtime_api::client::http::HttpConnectorFuture;
        use aws_smithy_runtime_api::client::result::ConnectorError;
        let upstream = self.0.clone();
        HttpConnectorFuture::new(async move {
            let fail = |e: String| ConnectorError::io(e.into());
            let request = request.try_into_http1x().map_err(|e| fail(e.to_string()))?;
            let (mut parts, body) = request.into_parts();
            let bytes = Bytes::copy_from_slice(body.bytes().unwrap_or_default());
            let authority = parts
                .uri
                .authority()
                .map(ToString::to_string)
                .unwrap_or_default();
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            parts.uri = upstream
                .uri(&authority, &path)
                .map_err(|e| fail(e.to_string()))?;
            if let Ok(host) = http::HeaderValue::from_str(&authority) {
                parts.headers.insert(http::header::HOST, host);
            }
            let body = http_body_util::Full::new(bytes)
                .map_err(|never| match never {})
                .boxed();
            let response = upstream
                .send(http::Request::from_parts(parts, body))
                .await
                .map_err(|e| fail(e.to_string()))?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?
                .to_bytes();
            let response =
                http::Response::from_parts(parts, aws_smithy_types::body::SdkBody::from(bytes));
            aws_smithy_runtime_api::http::Response::try_from(response)
                .map_err(|e| fail(e.to_string()))
        })
    }
}

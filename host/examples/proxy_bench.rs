//! The proxy benchmark (run by `scripts/bench`): requests/s and p50/p99 latency of one
//! signed STS GetCallerIdentity call, in one run, four ways:
//!
//! - **direct**: the load generator to a fast local keep-alive upstream (plain HTTP);
//! - **bare pass-through**: TLS terminated and forwarded with the same stack sigward uses
//!   (hyper + rustls), nothing else — the floor any intercepting proxy pays;
//! - **sigward**: `sigward serve` (authentication, facet, one allow policy in a fresh
//!   sandbox, cached credentials, re-signing, forwarding);
//! - **mitmproxy**: `mitmdump` in reverse mode, TLS terminated the same way.
//!
//! The load generator is Rust (hyper, keep-alive connections, one request in flight on
//! each); every row gets the same pre-signed request bytes. Beside requests/s and
//! latency, each proxy's row shows the CPU time its process spent per request (user +
//! system, from `/proc`), which varies far less between runs than throughput does on a
//! small shared machine; and before the table, how long a wakeup takes between two
//! threads on one CPU and across two, the cost that decides how much of that CPU time
//! turns into throughput (see the README).
//!
//! `proxy_bench SIGWARD_BIN [MITMDUMP_BIN] [--seconds N] [--connections N]`

/// The same allocator as the sigward binary, so the floors are built like it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const AGENT_KEY: &str = "AKIA111111111111XXXX";
const AGENT_SECRET: &str = "bench-agent-secret";
const BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    if std::env::args().nth(1).as_deref() == Some(BARE_CHILD) {
        return bare_child(args.nth(1), args.next());
    }
    let sigward_bin = PathBuf::from(args.next().ok_or_else(|| {
        anyhow::anyhow!(
            "usage: proxy_bench SIGWARD_BIN [MITMDUMP_BIN] [--seconds N] [--connections N] (SIGWARD_BENCH_CONFIG: more TOML for sigward)"
        )
    })?);
    let mut mitmdump = None;
    let (mut seconds, mut connections) = (5u64, 16usize);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().unwrap_or_default().parse()?,
            "--connections" => connections = args.next().unwrap_or_default().parse()?,
            other => mitmdump = Some(PathBuf::from(other)),
        }
    }
    let dir = tempfile::tempdir()?;

    // The upstream and the bare pass-through get a runtime each (as separate processes
    // would); the load generator has its own.
    let upstream = spawn_runtime(1, serve_upstream)?;
    let upstream_url = format!("http://{upstream}");
    let (bare_child, bare, bare_ca) = start_bare(dir.path(), &upstream_url)?;
    let bare_pid = bare_child.0.id();

    let sigward = start_sigward(&sigward_bin, dir.path(), &upstream_url)?;
    let mitm = match &mitmdump {
        Some(bin) => Some(start_mitmproxy(bin, dir.path(), upstream)?),
        None => None,
    };

    let load = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let duration = Duration::from_secs(seconds);
    let mut rows: Vec<(&str, Stats)> = Vec::new();
    load.block_on(async {
        let plain = Target {
            address: upstream,
            tls: None,
        };
        rows.push(("direct", run(&plain, None, connections, duration).await?));
        let bare = Target {
            address: bare,
            tls: Some(client_tls(&bare_ca)?),
        };
        rows.push((
            "bare pass-through",
            run(&bare, Some(bare_pid), connections, duration).await?,
        ));
        let sw = Target {
            address: sigward.1,
            tls: Some(client_tls(&sigward.2)?),
        };
        rows.push((
            "sigward",
            run(&sw, Some(sigward.0.0.id()), connections, duration).await?,
        ));
        if let Some((child, address, ca)) = &mitm {
            let m = Target {
                address: *address,
                tls: Some(client_tls(ca)?),
            };
            rows.push((
                "mitmproxy",
                run(&m, Some(child.0.id()), connections, duration).await?,
            ));
        }
        Ok::<_, anyhow::Error>(())
    })?;

    println!(
        "{connections} keep-alive connections, {seconds} s each, one signed sts:GetCallerIdentity per request"
    );
    if let Some((one, across)) = wakeups() {
        println!(
            "a wakeup round trip between two threads: {:.1} µs on one CPU, {:.1} µs across two",
            micros(one),
            micros(across)
        );
    }
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>8} {:>14}",
        "path", "req/s", "p50 µs", "p99 µs", "errors", "proxy CPU µs"
    );
    for (name, s) in &rows {
        let cpu = s
            .cpu
            .map_or("-".to_string(), |c| format!("{:.1}", micros(c)));
        println!(
            "{name:<18} {:>10.0} {:>10} {:>10} {:>8} {:>14}",
            s.rps, s.p50, s.p99, s.errors, cpu
        );
    }
    let find = |n: &str| rows.iter().find(|(name, _)| *name == n).map(|(_, s)| s);
    if let (Some(bare), Some(sw)) = (find("bare pass-through"), find("sigward")) {
        println!(
            "sigward / bare pass-through: {:.0}% of its throughput (target ≥ 70%), +{} µs p50 (target ≤ 150)",
            100.0 * sw.rps / bare.rps,
            sw.p50.saturating_sub(bare.p50)
        );
        if let Some(m) = find("mitmproxy") {
            println!(
                "sigward / mitmproxy: {:.1}× its throughput (target ≥ 10×)",
                sw.rps / m.rps
            );
        }
    }
    drop(sigward);
    drop(mitm);
    Ok(())
}

/// Bind 127.0.0.1:0 and run `serve` on a runtime of `threads` workers, on its own thread.
fn spawn_runtime<F, Fut>(threads: usize, serve: F) -> anyhow::Result<SocketAddr>
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let address = std_listener.local_addr()?;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = TcpListener::from_std(std_listener).expect("listener");
            serve(listener).await;
        });
    });
    Ok(address)
}

/// A fast upstream: answers AssumeRole (for sigward's STS) and everything else at once.
async fn serve_upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|request: hyper::Request<Incoming>| async move {
                let body = request
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let text = if body.starts_with(b"Action=AssumeRole") {
                    "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIABENCHROLEKEY0000</AccessKeyId>\
                     <SecretAccessKey>bench-role-secret</SecretAccessKey><SessionToken>bench-token</SessionToken>\
                     <Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>"
                } else {
                    "<GetCallerIdentityResponse><GetCallerIdentityResult><Account>111111111111</Account></GetCallerIdentityResult></GetCallerIdentityResponse>"
                };
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                    text.as_bytes(),
                ))))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The argument that makes this binary the bare pass-through's process.
const BARE_CHILD: &str = "--bare-pass-through";

/// The bare pass-through runs as a process of its own, like sigward and mitmproxy: every
/// intercepting proxy is one, and pays for the switches between processes that a proxy
/// inside the load generator's process would not.
fn start_bare(dir: &Path, upstream: &str) -> anyhow::Result<(Killed, SocketAddr, PathBuf)> {
    let ca_dir = dir.join("bare-ca");
    let mut child = Command::new(std::env::current_exe()?)
        .arg(BARE_CHILD)
        .arg(&ca_dir)
        .arg(upstream)
        .stdout(Stdio::piped())
        .spawn()?;
    let lines = wait_for_line(&mut child, "listening ")?;
    let address = lines
        .last()
        .and_then(|l| l.strip_prefix("listening "))
        .ok_or_else(|| anyhow::anyhow!("the bare pass-through printed no address"))?
        .parse()?;
    Ok((Killed(child), address, ca_dir.join("ca.pem")))
}

/// The bare pass-through's process: a runtime with tokio's default worker count (as
/// `sigward serve` has), serving until killed.
fn bare_child(ca_dir: Option<String>, upstream: Option<String>) -> anyhow::Result<()> {
    let (Some(ca_dir), Some(upstream)) = (ca_dir, upstream) else {
        anyhow::bail!("usage: proxy_bench {BARE_CHILD} CA_DIR UPSTREAM_URL");
    };
    let ca = sigward::tls::CertificateAuthority::load_or_create(Path::new(&ca_dir))?;
    let leaves = Arc::new(sigward::tls::LeafResolver::new(
        Arc::new(ca),
        Some("127.0.0.1".into()),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        serve_bare(listener, leaves, upstream).await;
        Ok(())
    })
}

/// The bare pass-through: TLS termination and forwarding with hyper + rustls.
async fn serve_bare(
    listener: TcpListener,
    leaves: Arc<sigward::tls::LeafResolver>,
    upstream: String,
) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(leaves);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let client = sigward::upstream::Upstream::new(Some(&upstream), None).expect("client");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, client) = (acceptor.clone(), client.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                let client = client.clone();
                async move {
                    let (mut parts, body) = request.into_parts();
                    let path = parts
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string();
                    parts.uri = client
                        .uri("sts.us-east-1.amazonaws.com", &path)
                        .expect("uri");
                    let request = hyper::Request::from_parts(
                        parts,
                        body.map_err(sigward::upstream::BoxError::from).boxed(),
                    );
                    let response = match client.send(request).await {
                        Ok(r) => r.map(|b| b.map_err(sigward::upstream::BoxError::from).boxed()),
                        Err(_) => hyper::Response::builder()
                            .status(502)
                            .body(
                                Full::new(Bytes::new())
                                    .map_err(|never| match never {})
                                    .boxed(),
                            )
                            .expect("response"),
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn wait_for_line(child: &mut Child, prefix: &str) -> anyhow::Result<Vec<String>> {
    use std::io::BufRead as _;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let done = line.starts_with(prefix);
        lines.push(line);
        if done {
            return Ok(lines);
        }
    }
    anyhow::bail!("the process ended before printing {prefix}")
}

fn start_sigward(
    bin: &Path,
    dir: &Path,
    upstream: &str,
) -> anyhow::Result<(Killed, SocketAddr, PathBuf)> {
    let config = dir.join("sigward.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[proxy]
listen = "127.0.0.1:0"
endpoint_listen = "127.0.0.1:0"
[state]
dir = "{}"
[credential.base]
access_key_id = "AKIABENCHBASEKEY0000"
secret_access_key = "bench-base-secret"
[[endpoint]]
name = "bench"
hosts = ["*.amazonaws.com"]
role = "bench"
region = "us-east-1"
credential = "base"
upstream = "{upstream}"
policies = [{{ module = "builtin:no-secrets" }}]
[[agent]]
name = "bench"
access_key_ids = ["{AGENT_KEY}"]
secret_access_key = "{AGENT_SECRET}"
{extra}
"#,
            dir.join("state").display(),
            // More configuration to measure with (`[audit]`, `[cluster]`): its cost shows
            // in sigward's row.
            extra = std::env::var("SIGWARD_BENCH_CONFIG").unwrap_or_default(),
        ),
    )?;
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("SIGWARD_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let lines = wait_for_line(&mut child, "AWS_ENDPOINT_URL=")?;
    let find = |p: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(p).map(str::to_string))
    };
    let address = find("AWS_ENDPOINT_URL=https://")
        .ok_or_else(|| anyhow::anyhow!("no endpoint"))?
        .parse()?;
    let ca = PathBuf::from(find("AWS_CA_BUNDLE=").ok_or_else(|| anyhow::anyhow!("no CA"))?);
    Ok((Killed(child), address, ca))
}

fn start_mitmproxy(
    bin: &Path,
    dir: &Path,
    upstream: SocketAddr,
) -> anyhow::Result<(Killed, SocketAddr, PathBuf)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let confdir = dir.join("mitmproxy");
    let child = Command::new(bin)
        .args([
            "--quiet",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            &port.to_string(),
        ])
        .args(["--mode", &format!("reverse:http://{upstream}")])
        .args(["--set", &format!("confdir={}", confdir.display())])
        .args(["--set", "keep_host_header=true", "--set", "flow_detail=0"])
        .stdout(Stdio::null())
        .spawn()?;
    let address: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let ca = confdir.join("mitmproxy-ca-cert.pem");
    let start = Instant::now();
    while !(ca.exists() && std::net::TcpStream::connect(address).is_ok()) {
        if start.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("mitmdump did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok((Killed(child), address, ca))
}

fn client_tls(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

struct Target {
    address: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

struct Stats {
    rps: f64,
    p50: u64,
    p99: u64,
    errors: usize,
    /// CPU time the proxy's process spent per request (user + system).
    cpu: Option<Duration>,
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The CPU time (user + system, all threads) process `pid` has used so far.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it start at field 3, so utime
    // and stime (fields 14 and 15) are the 12th and 13th.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let (user, system): (u64, u64) = (fields.next()?.parse().ok()?, fields.next()?.parse().ok()?);
    let per_second = rustix::param::clock_ticks_per_second();
    Some(Duration::from_secs_f64(
        (user + system) as f64 / per_second as f64,
    ))
}

/// The mean round trip of a one-byte ping-pong between two threads pinned to one CPU,
/// and to two: a wakeup that crosses CPUs costs an inter-processor interrupt, which a
/// virtual machine can make many times dearer than the work a proxy does per request.
/// `None` on a one-CPU machine or where threads cannot be pinned.
fn wakeups() -> Option<(Duration, Duration)> {
    let cpus = std::thread::available_parallelism().ok()?.get();
    if cpus < 2 {
        return None;
    }
    Some((ping_pong(0, 0)?, ping_pong(0, 1)?))
}

fn ping_pong(a: usize, b: usize) -> Option<Duration> {
    use std::io::{Read as _, Write as _};
    const ROUND_TRIPS: u32 = 2_000;
    let pin = |cpu: usize| {
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set).is_ok()
    };
    let (mut here, mut there) = std::os::unix::net::UnixStream::pair().ok()?;
    std::thread::scope(|scope| {
        let echo = scope.spawn(move || {
            let mut byte = [0u8; 1];
            if !pin(b) {
                return;
            }
            while there.read_exact(&mut byte).is_ok() && there.write_all(&byte).is_ok() {}
        });
        let timed = scope
            .spawn(move || {
                if !pin(a) {
                    return None;
                }
                let mut byte = [0u8; 1];
                let start = Instant::now();
                for _ in 0..ROUND_TRIPS {
                    here.write_all(&byte).ok()?;
                    here.read_exact(&mut byte).ok()?;
                }
                Some(start.elapsed() / ROUND_TRIPS)
            })
            .join()
            .ok()
            .flatten();
        let _ = echo.join();
        timed
    })
}

/// The request every row sends: signed once by the agent (valid for 15 minutes).
fn signed_request(host: &str) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    use sigward::aws::sigv4::{Outgoing, SigningCredentials, resign};
    let headers = [
        ("host", host),
        (
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
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
            body: BODY.as_bytes(),
            presign: None,
        },
        "sts",
        "us-east-1",
        &agent,
        SystemTime::now(),
    )?;
    let mut builder = hyper::Request::post("/");
    for (n, v) in headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .chain(signed.headers)
    {
        builder = builder.header(n, v);
    }
    Ok(builder.body(Full::new(Bytes::from_static(BODY.as_bytes())))?)
}

/// Load `target` for `duration`; `proxy` is the process whose CPU time is measured.
async fn run(
    target: &Target,
    proxy: Option<u32>,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Stats> {
    // Warm up: connections, certificates, the STS cache.
    let _ = one_connection(target, Duration::from_millis(300)).await;
    let cpu_before = proxy.and_then(cpu_time);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let target = Target {
            address: target.address,
            tls: target.tls.clone(),
        };
        tasks.push(tokio::spawn(async move {
            one_connection(&target, duration).await
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await??;
        latencies.extend(l);
        errors += e;
    }
    let cpu_used = match (cpu_before, proxy.and_then(cpu_time)) {
        (Some(before), Some(after)) => after.checked_sub(before),
        _ => None,
    };
    let requests = u32::try_from(latencies.len() + errors)
        .unwrap_or(u32::MAX)
        .max(1);
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Ok(Stats {
        rps: latencies.len() as f64 / duration.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        errors,
        cpu: cpu_used.map(|c| c / requests),
    })
}

/// One keep-alive connection sending requests back to back for `duration`.
async fn one_connection(target: &Target, duration: Duration) -> anyhow::Result<(Vec<u64>, usize)> {
    let tcp = TcpStream::connect(target.address).await?;
    tcp.set_nodelay(true)?;
    let host = "127.0.0.1".to_string();
    let mut sender = match &target.tls {
        Some(config) => {
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
            let tls = connector.connect("127.0.0.1".try_into()?, tcp).await?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(connection);
            sender
        }
        None => {
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(connection);
            sender
        }
    };
    let host_header = format!("{host}:{}", target.address.port());
    let request = signed_request(&host_header)?;
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    let start = Instant::now();
    while start.elapsed() < duration {
        let request = hyper::Request::from_parts(parts.clone(), Full::new(body.clone()));
        let sent = Instant::now();
        match sender.send_request(request).await {
            Ok(response) => {
                let ok = response.status().is_success();
                let _ = response.into_body().collect().await;
                if ok {
                    latencies.push(sent.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            Err(_) => {
                errors += 1;
                break;
            }
        }
    }
    Ok((latencies, errors))
}

//! sigward's CA and minted leaves, proven with real rustls handshakes (in memory: a
//! client that trusts only `ca.pem` talks to a server using the leaf resolver).

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use sigward::tls::{CertificateAuthority, LeafResolver};

fn handshake(
    ca: &Arc<CertificateAuthority>,
    trusted: &CertificateAuthority,
    name: &str,
) -> Result<Vec<u8>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(LeafResolver::new(
            Arc::clone(ca),
            Some(name.to_string()),
        )));
    let mut roots = RootCertStore::empty();
    roots
        .add(trusted.certificate().clone())
        .map_err(|e| e.to_string())?;
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let mut client =
        ClientConnection::new(Arc::new(client_config), server_name).map_err(|e| e.to_string())?;
    let mut server = ServerConnection::new(Arc::new(server_config)).map_err(|e| e.to_string())?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        client.write_tls(&mut buf).map_err(|e| e.to_string())?;
        server
            .read_tls(&mut buf.as_slice())
            .map_err(|e| e.to_string())?;
        server
            .process_new_packets()
            .map_err(|e| format!("server: {e}"))?;
        let mut buf = Vec::new();
        server.write_tls(&mut buf).map_err(|e| e.to_string())?;
        client
            .read_tls(&mut buf.as_slice())
            .map_err(|e| e.to_string())?;
        client
            .process_new_packets()
            .map_err(|e| format!("client: {e}"))?;
        if !client.is_handshaking() && !server.is_handshaking() {
            let leaf = client
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or("no certificate")?;
            return Ok(leaf.to_vec());
        }
    }
    Err("handshake did not finish".into())
}

#[test]
fn the_ca_is_created_once_with_a_private_key_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let first = CertificateAuthority::load_or_create(&state).expect("create");
    let mode = |p: &str| {
        std::fs::metadata(state.join(p))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca.key"), 0o600);
    assert_eq!(
        std::fs::metadata(&state)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert_eq!(first.cert_path, state.join("ca.pem"));
    let second = CertificateAuthority::load_or_create(&state).expect("load");
    assert_eq!(
        first.certificate(),
        second.certificate(),
        "reused, not recreated"
    );

    std::fs::set_permissions(state.join("ca.key"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let error =
        CertificateAuthority::load_or_create(&state).expect_err("world-readable key refused");
    assert!(error.to_string().contains("readable by others"), "{error}");
}

#[test]
fn minted_leaves_are_trusted_by_clients_that_trust_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Arc::new(CertificateAuthority::load_or_create(dir.path()).expect("ca"));
    for host in [
        "sts.us-east-1.amazonaws.com",
        "my.bucket.s3.eu-west-1.amazonaws.com",
        "127.0.0.1",
        "localhost",
    ] {
        handshake(&ca, &ca, host).unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    // A CA loaded back from disk mints leaves the same clients trust.
    let reloaded = Arc::new(CertificateAuthority::load_or_create(dir.path()).expect("reload"));
    handshake(&reloaded, &ca, "dynamodb.us-east-1.amazonaws.com")
        .expect("leaf from the reloaded CA");
}

#[test]
fn a_client_that_does_not_trust_the_ca_refuses() {
    let one = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let ca = Arc::new(CertificateAuthority::load_or_create(one.path()).expect("ca"));
    let stranger = CertificateAuthority::load_or_create(other.path()).expect("other ca");
    let error = handshake(&ca, &stranger, "sts.amazonaws.com").expect_err("untrusted");
    assert!(
        error.contains("UnknownIssuer") || error.contains("certificate"),
        "{error}"
    );
}

#[test]
fn leaves_are_cached_per_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Arc::new(CertificateAuthority::load_or_create(dir.path()).expect("ca"));
    let resolver = LeafResolver::new(ca, None);
    let a = resolver.leaf("S3.amazonaws.com").expect("leaf");
    let b = resolver.leaf("s3.amazonaws.com").expect("leaf");
    assert!(Arc::ptr_eq(&a, &b), "one mint per host, case-insensitive");
    assert!(!Arc::ptr_eq(
        &a,
        &resolver.leaf("sts.amazonaws.com").expect("leaf")
    ));
}

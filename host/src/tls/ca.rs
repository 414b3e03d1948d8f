//! The certificate authority: `ca.pem` (what agents trust) and `ca.key` (0600) in the
//! state directory, created on first run and loaded afterwards.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("state directory {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not a usable CA: {message}", path.display())]
    BadCa { path: PathBuf, message: String },
    #[error("cannot mint a certificate for {host:?}: {message}")]
    Mint { host: String, message: String },
}

pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    /// `ca.pem`: give this to agents (`AWS_CA_BUNDLE`).
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Load `ca.pem`/`ca.key` from `dir`, or create them (the directory 0700, the key 0600).
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| TlsError::Io { path, error }
        };
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        if cert_path.exists() || key_path.exists() {
            let cert_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let mode = fs::metadata(&key_path)
                .map_err(io(&key_path))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(TlsError::BadCa {
                    path: key_path,
                    message: format!(
                        "the key is readable by others (mode {:o}); chmod 600 it",
                        mode & 0o777
                    ),
                });
            }
            let bad = |message: String| TlsError::BadCa {
                path: cert_path.clone(),
                message,
            };
            let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(format!("ca.key: {e}")))?;
            let cert = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
                .map_err(|e| bad(format!("ca.pem: {e:?}")))?;
            let issuer =
                Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| bad(e.to_string()))?;
            return Ok(Self {
                issuer,
                cert,
                cert_path,
            });
        }

        fs::create_dir_all(dir).map_err(io(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "sigward local CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "sigward");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(|e| TlsError::BadCa {
            path: key_path.clone(),
            message: e.to_string(),
        })?;
        let cert = params.self_signed(&key).map_err(|e| TlsError::BadCa {
            path: cert_path.clone(),
            message: e.to_string(),
        })?;

        // The key first, created with 0600 from the start: never briefly world-readable.
        let mut key_file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(io(&key_path))?;
        key_file
            .write_all(key.serialize_pem().as_bytes())
            .map_err(io(&key_path))?;
        fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
        let der = cert.der().clone();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert: der,
            cert_path,
        })
    }

    /// The CA certificate, for building trust stores.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// A leaf certificate for `host` (a DNS name or an IP address), chained to the CA.
    pub fn mint(&self, host: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        let fail = |message: String| TlsError::Mint {
            host: host.to_string(),
            message,
        };
        let mut params =
            CertificateParams::new(vec![host.to_string()]).map_err(|e| fail(e.to_string()))?;
        params.distinguished_name.push(DnType::CommonName, host);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(|e| fail(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| fail(e.to_string()))?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing_key = any_supported_type(&private).map_err(|e| fail(e.to_string()))?;
        Ok(Arc::new(CertifiedKey::new(
            vec![cert.der().clone(), self.cert.clone()],
            signing_key,
        )))
    }
}

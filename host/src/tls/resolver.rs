//! Choosing the certificate for a TLS connection: a leaf for the name the client asks
//! for (SNI), or for the host of the CONNECT that opened the tunnel; minted once, cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::ca::CertificateAuthority;

/// Cached leaves are kept up to this many hosts; past it the cache starts again.
const MAX_CACHED: usize = 4096;

#[derive(Debug)]
pub struct LeafResolver {
    ca: Arc<CertificateAuthority>,
    /// Used when the client sends no SNI (an IP address, or the CONNECT host).
    fallback_host: Option<String>,
    cache: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl LeafResolver {
    pub fn new(ca: Arc<CertificateAuthority>, fallback_host: Option<String>) -> Self {
        Self {
            ca,
            fallback_host,
            cache: Mutex::default(),
        }
    }

    /// The leaf for `host`, minted on first use.
    pub fn leaf(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let host = host.to_ascii_lowercase();
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = cache.get(&host) {
            return Some(Arc::clone(key));
        }
        match self.ca.mint(&host) {
            Ok(key) => {
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
                cache.insert(host, Arc::clone(&key));
                Some(key)
            }
            Err(error) => {
                tracing::warn!(%error, "no certificate for this connection");
                None
            }
        }
    }
}

impl ResolvesServerCert for LeafResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let host = hello
            .server_name()
            .map(str::to_string)
            .or_else(|| self.fallback_host.clone())?;
        self.leaf(&host)
    }
}

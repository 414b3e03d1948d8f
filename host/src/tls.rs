//! TLS termination: sigward's certificate authority (created once in the state directory
//! and reused) and the leaf certificates it mints for each intercepted host, cached.
//! Agents trust `ca.pem`; nothing else is ever trusted by accident: no blind tunnels.

pub mod ca;
pub mod resolver;

pub use ca::{CertificateAuthority, TlsError};
pub use resolver::LeafResolver;

//! The TLS policy of both listeners: TLS 1.2 and 1.3 only, AEAD suites with forward secrecy
//! only, ALPN h2 + http/1.1, and optional client certificates (mTLS). Both listeners build
//! their rustls server configuration here from `config::TlsSettings`; the files themselves are
//! read and checked by [`crate::certs`], which the config check uses too.
//!
//! rustls with the `ring` provider already refuses CBC, RC4 and static-RSA key exchange; the
//! suite filter below makes that policy explicit, so a provider change cannot widen it silently.

use std::sync::{Arc, RwLock};

use rustls::crypto::{ring, CryptoProvider};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ServerConfig};

use crate::config::TlsSettings;

pub use crate::certs::TlsError;

/// The `ring` provider restricted to AEAD suites with ephemeral key exchange.
pub fn provider() -> CryptoProvider {
    let mut provider = ring::default_provider();
    provider.cipher_suites.retain(|s| {
        matches!(
            s.suite(),
            CipherSuite::TLS13_AES_256_GCM_SHA384
                | CipherSuite::TLS13_AES_128_GCM_SHA256
                | CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    });
    provider
}

/// The server certificate, swappable while the listener runs so that a renewed certificate is
/// picked up by `wardhook reload` (SIGHUP) without dropping a connection.
#[derive(Debug)]
pub struct CertSlot(RwLock<Arc<CertifiedKey>>);

impl CertSlot {
    /// Replace the certificate for new handshakes; established connections keep theirs.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Load and check the certificate chain and key (they must match).
pub fn load_certified_key(settings: &TlsSettings) -> Result<Arc<CertifiedKey>, TlsError> {
    crate::certs::load_certified_key(&settings.cert, &settings.key, &provider())
}

/// Build the rustls server configuration from the configured files; the returned slot swaps
/// the certificate later.
pub fn server_config(settings: &TlsSettings) -> Result<(ServerConfig, Arc<CertSlot>), TlsError> {
    let slot = Arc::new(CertSlot(RwLock::new(load_certified_key(settings)?)));
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(crate::certs::client_verifier(ca, provider)?),
    };
    let mut config = builder.with_cert_resolver(slot.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, slot))
}

//! The TLS policy of both listeners: TLS 1.2 and 1.3 only, AEAD suites with forward secrecy
//! only, ALPN h2 + http/1.1, and optional client certificates (mTLS).
//!
//! rustls with the `ring` provider already refuses CBC, RC4 and static-RSA key exchange; the
//! suite filter below makes that policy explicit, so a provider change cannot widen it silently.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, RootCertStore, ServerConfig};

use crate::config::TlsSettings;

/// Why the TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable or holds no PEM certificate.
    #[error("cannot load certificate chain from {path}: {reason}")]
    Cert {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key file is missing, unreadable or holds no PEM private key.
    #[error("cannot load private key from {path}: {reason}")]
    Key {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key does not belong to the certificate, or rustls refused the pair.
    #[error("certificate and private key do not match or are unusable: {0}")]
    Mismatch(String),
    /// The client CA bundle could not be loaded.
    #[error("cannot load client CA bundle from {path}: {reason}")]
    ClientCa {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
}

impl TlsError {
    /// The config key this error is about (below `server.tls`).
    pub fn key(&self) -> &'static str {
        match self {
            Self::Cert { .. } | Self::Mismatch(_) => "cert",
            Self::Key { .. } => "key",
            Self::ClientCa { .. } => "client_ca",
        }
    }
}

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

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
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
    let shown = |p: &Path| p.display().to_string();
    let certs = read_certs(&settings.cert).map_err(|reason| TlsError::Cert {
        path: shown(&settings.cert),
        reason,
    })?;
    let key = PrivateKeyDer::from_pem_file(&settings.key).map_err(|e| TlsError::Key {
        path: shown(&settings.key),
        reason: e.to_string(),
    })?;
    let key = CertifiedKey::from_der(certs, key, &provider())
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(Arc::new(key))
}

/// Build the rustls server configuration from the configured files; the returned slot swaps
/// the certificate later.
pub fn server_config(settings: &TlsSettings) -> Result<(ServerConfig, Arc<CertSlot>), TlsError> {
    let shown = |p: &Path| p.display().to_string();
    let slot = Arc::new(CertSlot(RwLock::new(load_certified_key(settings)?)));
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let ca_err = |reason: String| TlsError::ClientCa {
                path: shown(ca),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca).map_err(ca_err)? {
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_err(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(slot.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, slot))
}

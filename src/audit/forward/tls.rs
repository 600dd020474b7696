//! The TLS client towards the collector: TLS 1.2/1.3 with the listener's AEAD-only suites
//! (`crate::tls::provider`), the collector's certificate verified against the configured CA
//! and the configured name (never the system store, never "accept any"), and an optional
//! client certificate for collectors that require mutual TLS.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::ForwardError;
use crate::config::audit_forward::AuditForwardSettings;

fn bad(key: &'static str, path: &Path, reason: impl std::fmt::Display) -> ForwardError {
    ForwardError::Setup {
        key,
        reason: format!("{}: {reason}", path.display()),
    }
}

/// The rustls client configuration and the name to verify, from the settings. Fails on an
/// unreadable or empty CA file, or a client certificate and key that do not load or match.
pub(crate) fn client_config(
    settings: &AuditForwardSettings,
) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), ForwardError> {
    let ca = &settings.ca_file;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad("ca_file", ca, e))? {
        roots
            .add(cert.map_err(|e| bad("ca_file", ca, e))?)
            .map_err(|e| bad("ca_file", ca, e))?;
    }
    if roots.is_empty() {
        return Err(bad("ca_file", ca, "no certificate in the file"));
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| bad("ca_file", ca, e))?
        .with_root_certificates(roots);
    let config = match &settings.client_auth {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| bad("client_cert", cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("client_cert", cert, e))?;
            if chain.is_empty() {
                return Err(bad("client_cert", cert, "no certificate in the file"));
            }
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| bad("client_key", key, e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| bad("client_key", key, e))?
        }
    };
    let name =
        ServerName::try_from(settings.server_name.clone()).map_err(|_| ForwardError::Setup {
            key: "server_name",
            reason: "not a DNS name or IP address".into(),
        })?;
    Ok((Arc::new(config), name))
}

//! TLS material on disk.
//!
//! Loading and checking a listener's certificate chain, key and client CA bundle (the config
//! check and the `tls` builder share these, so both report the same problem), and
//! development certificates: a throwaway CA and a `localhost` server certificate, so that the
//! first run and the tests use real TLS without anyone touching OpenSSL. Development
//! certificates are for a developer's machine only. Production certificates come from the
//! clinic's CA or ACME (see `deploy/INSTALL.md`); nothing here is ever committed (`certs/` is
//! git-ignored).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Datelike, Duration, Utc};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

/// Why dev certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// rcgen refused the parameters.
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be written.
    #[error("cannot write {path}: {reason}")]
    Write {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
    /// Files exist and `--force` was not given.
    #[error("{0} already exists; pass --force to replace the dev certificates")]
    Exists(String),
}

/// A dev CA with its key (kept in memory so tests can issue client certificates).
pub struct DevCa {
    cert: Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCa(..)")
    }
}

/// A certificate and its private key, PEM encoded.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

fn validity(params: &mut CertificateParams, days: i64) {
    let from = Utc::now() - Duration::days(1);
    let to = Utc::now() + Duration::days(days);
    let ymd = |d: chrono::DateTime<Utc>| {
        // Month and day are always in u8 range.
        rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
    };
    params.not_before = ymd(from);
    params.not_after = ymd(to);
}

impl DevCa {
    /// A new CA whose name says it is not for production.
    pub fn generate() -> Result<Self, CertsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "wardhook DEV CA - NOT FOR PRODUCTION");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, 365);
        let cert = params.self_signed(&key)?;
        Ok(Self { cert, key })
    }

    /// The CA certificate, for clients' trust stores (`curl --cacert`).
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `hosts` (DNS names or IP addresses), valid for `days`.
    pub fn issue_server(&self, hosts: &[&str], days: i64) -> Result<IssuedCert, CertsError> {
        let names: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(
            DnType::CommonName,
            hosts.first().copied().unwrap_or("localhost"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, days);
        self.issue(params)
    }

    /// A client certificate for mutual TLS.
    pub fn issue_client(&self, common_name: &str) -> Result<IssuedCert, CertsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params, 365);
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Result<IssuedCert, CertsError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Where `certs dev` wrote its files.
#[derive(Debug, Clone)]
pub struct DevCertPaths {
    /// The CA certificate to trust.
    pub ca: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// The server key (mode 0600).
    pub key: PathBuf,
}

/// Write a dev CA certificate and a `localhost`/`127.0.0.1`/`::1` server certificate and key
/// into `dir`. The CA key is not kept: a dev CA that can sign nothing more is a smaller risk.
pub fn write_dev_certs(dir: &Path, force: bool) -> Result<DevCertPaths, CertsError> {
    let paths = DevCertPaths {
        ca: dir.join("dev-ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    if !force {
        if let Some(p) = [&paths.ca, &paths.cert, &paths.key]
            .into_iter()
            .find(|p| p.exists())
        {
            return Err(CertsError::Exists(p.display().to_string()));
        }
    }
    let ca = DevCa::generate()?;
    let server = ca.issue_server(&["localhost", "127.0.0.1", "::1"], 365)?;
    crate::fsutil::create_private_dir_all(dir).map_err(|e| CertsError::Write {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    write_file(&paths.ca, ca.cert_pem().as_bytes(), 0o644)?;
    write_file(&paths.cert, server.cert_pem.as_bytes(), 0o644)?;
    write_file(&paths.key, server.key_pem.as_bytes(), 0o600)?;
    Ok(paths)
}

/// Write `bytes` to `path` with `mode`, replacing any existing file.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertsError> {
    let err = |e: std::io::Error| CertsError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    // Remove first so the new mode applies even when replacing a file with a looser one.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut f = crate::fsutil::create_new_with_mode(path, mode).map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)
}

// --- Loading TLS material (the config check and the `tls` builder share these) ---

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

/// Load a certificate chain and its key and check that they belong together.
pub fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let shown = |p: &Path| p.display().to_string();
    let certs = read_certs(cert).map_err(|reason| TlsError::Cert {
        path: shown(cert),
        reason,
    })?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: shown(key),
        reason: e.to_string(),
    })?;
    let key = CertifiedKey::from_der(certs, key, provider)
        .map_err(|e| TlsError::Mismatch(e.to_string()))?;
    Ok(Arc::new(key))
}

/// The verifier of client certificates issued by the CA bundle at `ca` (mutual TLS).
pub fn client_verifier(
    ca: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let ca_err = |reason: String| TlsError::ClientCa {
        path: ca.display().to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca).map_err(ca_err)? {
        roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| ca_err(e.to_string()))
}

/// Check that a listener's files load as the listener will load them: the chain and key match,
/// and the client CA bundle (if any) yields a verifier. Nothing is kept.
pub fn check_server_material(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<(), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    load_certified_key(cert, key, &provider)?;
    if let Some(ca) = client_ca {
        client_verifier(ca, provider)?;
    }
    Ok(())
}

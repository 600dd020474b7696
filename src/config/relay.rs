//! `[relay]` and `[relay_server]`: the two ends of the DMZ relay (docs/RELAY.md).
//!
//! - `[relay_server]` is in the config of `wardhook relay`, the process in the DMZ: the inside
//!   node's *public* key, the pull listener (mutual TLS, a client CA is required) and the size
//!   cap of the sealed buffer.
//! - `[relay]` is in the config of the inside node's `wardhook serve`: where the relay's pull
//!   listener is, the TLS material to reach it, and the inside *private* keys (secret
//!   references; several during a rotation).
//!
//! The key texts are recognised here by their prefixes so that a private key pasted into
//! `[relay_server]` is refused with its key path rather than failing later or, worse, working.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::file::TlsSection;
use crate::secret::{Secret, SecretRef, SecretRefText};

/// Prefix of a relay public key's text (`wardhook relay keygen` prints it).
pub const PUBLIC_KEY_PREFIX: &str = "whrelay-pk1:";
/// Prefix of a relay private key's text (the file `wardhook relay keygen` writes, mode 0600).
pub const PRIVATE_KEY_PREFIX: &str = "whrelay-sk1:";

/// Default size cap of the relay's sealed buffer: 1 GiB.
pub const DEFAULT_MAX_BUFFER_MB: u64 = 1024;
/// Default batch size of one pull.
pub const DEFAULT_BATCH: usize = 100;
/// Largest batch a pull may ask for (and the relay serves).
pub const MAX_BATCH: usize = 1000;

/// `[relay_server]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayServerSection {
    /// The inside node's public key text (`whrelay-pk1:…`), as `wardhook relay keygen` prints.
    pub public_key: String,
    /// Address of the pull listener the inside node connects to.
    pub pull_listen: String,
    /// The pull listener's certificate, key and the CA of the inside node's client certificate.
    pub pull_tls: TlsSection,
    /// Size cap of the sealed buffer in MiB; when full, senders get 503 with `Retry-After`.
    pub max_buffer_mb: Option<u64>,
    /// How long the relay remembers a delivery's dedup index after hand-over (default `72h`).
    pub dedup_window: Option<String>,
}

/// `[relay]` as written (the inside node).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    /// `https://relay.dmz.example:9444`: the relay's pull listener.
    pub url: String,
    /// PEM CA certificates that issued the pull listener's certificate.
    pub ca: PathBuf,
    /// This node's client certificate (PEM chain) for the pull listener.
    pub client_cert: PathBuf,
    /// Its private key (PEM).
    pub client_key: PathBuf,
    /// The inside private keys by reference, current first; older ones while a rotation
    /// drains the relay's backlog.
    pub private_keys: Vec<SecretRefText>,
    /// Records per pull (default 100, at most 1000).
    pub batch: Option<usize>,
    /// Seconds a pull waits at the relay for new records (long poll; default 25).
    pub wait_secs: Option<u64>,
}

/// `[relay_server]`, checked.
#[derive(Debug, Clone)]
pub struct RelayServerSettings {
    /// The inside node's public key (32 bytes).
    pub public_key: [u8; 32],
    /// The pull listener's address.
    pub pull_listen: SocketAddr,
    /// The pull listener's TLS material; `client_ca` is always set.
    pub pull_tls: super::TlsSettings,
    /// Buffer cap in bytes of sealed data.
    pub max_buffer_bytes: u64,
    /// How long a dedup index outlives its hand-over.
    pub dedup_window: Duration,
}

/// `[relay]`, checked.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// The pull listener's base URL (`https`).
    pub url: url::Url,
    /// CA of the relay's pull certificate.
    pub ca: PathBuf,
    /// Client certificate chain.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
    /// The private keys' texts, resolved (zeroized on drop).
    pub private_keys: Vec<Secret>,
    /// Records per pull.
    pub batch: usize,
    /// Long-poll wait.
    pub wait: Duration,
}

fn rebased(p: &Path, base: &Path) -> PathBuf {
    if p.is_relative() && base != Path::new(".") {
        base.join(p)
    } else {
        p.to_owned()
    }
}

/// The 32 key bytes of `text` if it is `prefix` + base64 of 32 bytes.
pub fn decode_key_text(text: &str, prefix: &str) -> Option<[u8; 32]> {
    use base64::Engine as _;
    let rest = text.trim().strip_prefix(prefix)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    bytes.try_into().ok()
}

/// Check `[relay_server]`, pushing (path, message) problems.
pub(super) fn check_server(
    s: &RelayServerSection,
    base: &Path,
    push: &mut dyn FnMut(&str, String),
) -> Option<RelayServerSettings> {
    let public_key = if s.public_key.trim().starts_with(PRIVATE_KEY_PREFIX) {
        push(
            "relay_server.public_key",
            "this is the inside node's PRIVATE key: the relay must never hold it; put the \
             public key (whrelay-pk1:…) here and keep the private key inside"
                .into(),
        );
        None
    } else {
        let k = decode_key_text(&s.public_key, PUBLIC_KEY_PREFIX);
        if k.is_none() {
            push(
                "relay_server.public_key",
                format!("expected {PUBLIC_KEY_PREFIX}<base64 of 32 bytes> (wardhook relay keygen prints it)"),
            );
        }
        k
    };
    let pull_listen = match s.pull_listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            push(
                "relay_server.pull_listen",
                "expected an address and port such as 0.0.0.0:9444".into(),
            );
            None
        }
    };
    let tls = super::TlsSettings {
        cert: rebased(&s.pull_tls.cert, base),
        key: rebased(&s.pull_tls.key, base),
        client_ca: s.pull_tls.client_ca.as_deref().map(|ca| rebased(ca, base)),
    };
    let pull_tls = if tls.client_ca.is_none() {
        push(
            "relay_server.pull_tls.client_ca",
            "required: only the inside node, with a client certificate from this CA, may pull"
                .into(),
        );
        None
    } else {
        match crate::certs::check_server_material(&tls.cert, &tls.key, tls.client_ca.as_deref()) {
            Ok(()) => Some(tls),
            Err(e) => {
                push(&format!("relay_server.pull_tls.{}", e.key()), e.to_string());
                None
            }
        }
    };
    let max_mb = s.max_buffer_mb.unwrap_or(DEFAULT_MAX_BUFFER_MB);
    if max_mb == 0 || max_mb > 1024 * 1024 {
        push(
            "relay_server.max_buffer_mb",
            "must be between 1 and 1048576".into(),
        );
    }
    let dedup_window = match super::parse_duration(s.dedup_window.as_deref().unwrap_or("72h")) {
        Ok(d) => Some(d),
        Err(e) => {
            push("relay_server.dedup_window", e);
            None
        }
    };
    Some(RelayServerSettings {
        public_key: public_key?,
        pull_listen: pull_listen?,
        pull_tls: pull_tls?,
        max_buffer_bytes: max_mb.min(1024 * 1024) * 1024 * 1024,
        dedup_window: dedup_window?,
    })
}

/// Check `[relay]`, pushing (path, message) problems.
pub(super) fn check_inside(
    s: &RelaySection,
    base: &Path,
    push: &mut dyn FnMut(&str, String),
) -> Option<RelaySettings> {
    let url = match url::Url::parse(&s.url) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => Some(u),
        _ => {
            push(
                "relay.url",
                "expected https://host:port of the relay's pull listener".into(),
            );
            None
        }
    };
    let mut files = Vec::new();
    for (key, p) in [
        ("relay.ca", &s.ca),
        ("relay.client_cert", &s.client_cert),
        ("relay.client_key", &s.client_key),
    ] {
        let full = rebased(p, base);
        if let Err(e) = std::fs::metadata(&full) {
            push(key, format!("cannot read {}: {e}", full.display()));
        }
        files.push(full);
    }
    if s.private_keys.is_empty() {
        push(
            "relay.private_keys",
            "at least one private key reference (file:… written by wardhook relay keygen)".into(),
        );
    }
    let mut keys = Vec::new();
    for (i, k) in s.private_keys.iter().enumerate() {
        let at = format!("relay.private_keys[{i}]");
        match SecretRef::parse(&k.0).and_then(|r| Secret::resolve(&r, base)) {
            Ok(secret) => {
                let ok = secret
                    .expose_str()
                    .and_then(|t| decode_key_text(t, PRIVATE_KEY_PREFIX))
                    .is_some();
                if ok {
                    keys.push(secret);
                } else {
                    push(
                        &at,
                        format!(
                            "not a relay private key ({PRIVATE_KEY_PREFIX}<base64 of 32 bytes>)"
                        ),
                    );
                }
            }
            Err(e) => push(&at, e.to_string()),
        }
    }
    let batch = s.batch.unwrap_or(DEFAULT_BATCH);
    if batch == 0 || batch > MAX_BATCH {
        push("relay.batch", format!("must be between 1 and {MAX_BATCH}"));
    }
    let wait = s.wait_secs.unwrap_or(25);
    if wait > 300 {
        push("relay.wait_secs", "must be at most 300".into());
    }
    let [ca, client_cert, client_key]: [PathBuf; 3] = files.try_into().ok()?;
    (keys.len() == s.private_keys.len()).then_some(())?;
    Some(RelaySettings {
        url: url?,
        ca,
        client_cert,
        client_key,
        private_keys: keys,
        batch: batch.clamp(1, MAX_BATCH),
        wait: Duration::from_secs(wait.min(300)),
    })
}

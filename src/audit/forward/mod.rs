//! Live forwarding of audit records to a syslog collector (a SIEM, an IHE ATNA audit record
//! repository) over TLS: RFC 5424 messages in RFC 5425 octet-counting framing.
//!
//! Place in the delivery path: beside it. Intake, dispatch and the console append records to
//! the chain as always; a background task (started by `app::run` with one call to [`spawn`])
//! reads this installation's (this PostgreSQL node's) chain after a durable cursor and sends
//! what is new. Nothing on the delivery path waits for it, so a slow or absent collector never
//! turns into 503s; the records simply wait in the chain, which is the outbox.
//!
//! **Durable progress, keyed by sequence.** The cursor (the last sequence number the collector
//! confirmed, per cursor name and, on PostgreSQL, per node) lives in the database next to the
//! chain, behind [`ForwardStore`], which both backends implement. It moves only after a batch is
//! confirmed, so a restart resumes after the last confirmed record.
//!
//! **Confirmation.** Syslog over TLS has no acknowledgement, so a batch is confirmed the one
//! way the protocol allows: after the last message the forwarder closes its side (TLS
//! `close_notify`, then TCP FIN) and waits for the collector to close its own. A collector
//! closes only after it has read everything before the close; one that stopped earlier resets
//! the connection or never answers, and the batch is sent again on the next connection. So
//! delivery is at least once: a record reaches the collector twice only if the collector went
//! away in the instant between reading a batch and closing. Every message carries `seq` (and
//! `node`), the record's identity, so a collector that stores records keyed by it (rsyslog's
//! `ompgsql` with `ON CONFLICT DO NOTHING`, docs/AUDIT.md) holds each exactly once. One batch
//! is at most `batch_max` records.
//!
//! What goes out: see `message.rs` (RFC 5424, fields as structured data, the mirror line as
//! body) and `atna.rs` (DICOM audit message body). Records hold no PHI by construction, and
//! nothing is added here but fixed names, the configured host name and the record's fields.
//!
//! Files: `codes.rs` (DICOM classes, shared with the FHIR export), `message.rs`, `atna.rs`,
//! `tls.rs` (the client configuration), `worker.rs` (the loop and one batch).

pub(crate) mod atna;
pub(crate) mod codes;
pub(crate) mod message;
mod tls;
mod worker;

pub use worker::{spawn, BatchOutcome, Forwarder};

use super::{AuditError, ChainReader};

/// What forwarding needs from the database that holds the chain: the chain itself (this
/// installation's, or this node's) and a durable cursor per target name.
pub trait ForwardStore: ChainReader + Send + Sync {
    /// Create the cursor's table if it is missing (idempotent; safe with several nodes).
    fn prepare_cursor(&self) -> Result<(), AuditError>;

    /// The last sequence number the collector `name` confirmed, or `None` if forwarding to it
    /// never started.
    fn cursor(&self, name: &str) -> Result<Option<u64>, AuditError>;

    /// Store `seq` as the cursor of `name` (after a confirmed batch; or a start position).
    fn set_cursor(&self, name: &str, seq: u64) -> Result<(), AuditError>;

    /// The PostgreSQL node whose chain this is (`None` for SQLite's single chain). Sequence
    /// numbers count per node, so messages name it.
    fn node(&self) -> Option<String>;
}

/// Why forwarding a batch failed. Messages name files, the collector's address and OS or TLS
/// reasons, never record contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The TLS material could not be loaded (`audit_forward.<key>`).
    #[error("audit_forward.{key}: {reason}")]
    Setup {
        /// The config key concerned.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// Reading the chain or the cursor failed.
    #[error("audit forwarding cannot read the audit log: {0}")]
    Store(#[from] AuditError),
    /// The TCP connection to the collector failed.
    #[error("cannot connect to the syslog collector {address}: {source}")]
    Connect {
        /// host:port.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS handshake failed: most often the collector's certificate does not chain to the
    /// configured CA or does not carry the configured name.
    #[error("TLS handshake with the syslog collector {address} failed: {source}")]
    Tls {
        /// host:port.
        address: String,
        /// rustls's reason (e.g. invalid peer certificate: UnknownIssuer).
        source: std::io::Error,
    },
    /// Sending failed, or the collector did not confirm the batch by closing its side.
    #[error("the syslog collector {address} did not take the batch: {source}")]
    Send {
        /// host:port.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A step took longer than its configured limit.
    #[error("audit forwarding timed out while {0}")]
    Timeout(&'static str),
    /// The record after the cursor cannot be read (only tampering produces one): forwarding
    /// stops there until `audit verify` has been looked at.
    #[error("audit record after sequence {0} is unreadable; run `wardhook audit verify`")]
    Unreadable(u64),
    /// A forwarding step panicked; the loop goes on.
    #[error("audit forwarding step panicked")]
    Panicked,
}

impl ForwardError {
    /// A fixed word for the error metric's `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Setup { .. } => "setup",
            Self::Store(_) | Self::Unreadable(_) => "store",
            Self::Connect { .. } => "connect",
            Self::Tls { .. } => "tls",
            Self::Send { .. } => "send",
            Self::Timeout(_) => "timeout",
            Self::Panicked => "panic",
        }
    }
}

/// Build the TLS client from the settings without connecting: `app::build` calls this so a bad
/// CA file or client key fails start-up and `check-config`.
pub fn check_settings(
    settings: &crate::config::audit_forward::AuditForwardSettings,
) -> Result<(), ForwardError> {
    tls::client_config(settings).map(|_| ())
}

/// Start forwarding per `settings` (nothing when `None`) over the chain `store` opens (the
/// storage backend's `audit_forward_store`): the one call `app::run` makes. Returns the stop signal (send `true`) and the task to await. A
/// forwarder that cannot be built (the TLS files changed since start-up) is logged and
/// counted, and the server runs on without it.
pub fn start(
    settings: Option<crate::config::audit_forward::AuditForwardSettings>,
    store: impl FnOnce() -> std::sync::Arc<dyn ForwardStore>,
) -> (
    tokio::sync::watch::Sender<bool>,
    Option<tokio::task::JoinHandle<()>>,
) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let Some(settings) = settings else {
        return (stop, None);
    };
    let name = settings.name.clone();
    match Forwarder::new(settings, store()) {
        Ok(f) => (stop, Some(spawn(f, stopped))),
        Err(e) => {
            crate::metrics::audit_forward_error(&name, e.reason());
            tracing::error!(error = %e, "audit forwarding cannot start");
            (stop, None)
        }
    }
}

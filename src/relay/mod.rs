//! The DMZ relay (docs/RELAY.md): senders reach the clinic without a way in.
//!
//! One of the process's faces, beside `listener` and `admin`. `wardhook relay` runs in the DMZ
//! with the senders' listener as `serve` has it (same presets, verification, caps, rate limits,
//! hostile-input handling — the listener itself, built `with_handoff`), but a verified delivery
//! is sealed to the inside node's public key ([`seal`], HPKE) and committed to the relay's own
//! buffer (`store::relay_buffer`, in SQLite or PostgreSQL) instead of intake; the relay never holds the private
//! key. The inside node connects *out* to the relay's pull listener ([`pull_api`], mutual TLS),
//! and its [`puller`] opens each record, runs the usual intake at the original receipt time and
//! acknowledges only after its own commit; the relay then deletes the record.
//!
//! - [`seal`]: key pairs and HPKE seal/open (`wardhook relay keygen`).
//! - [`record`]: what a sealed record holds.
//! - [`sealer`]: the listener's [`crate::listener::handoff::Handoff`] on the relay.
//! - [`pull_api`]: the inside node's door on the relay: long-poll batches, acknowledgements.
//! - [`puller`]: the inside node's loop.

pub mod pull_api;
pub mod puller;
pub mod record;
pub mod seal;
pub mod sealer;

/// Why the relay or the puller could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A key could not be used.
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    /// The buffer could not be opened.
    #[error("cannot open the relay buffer: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The pull listener could not be bound or started.
    #[error("relay pull listener: {0}")]
    Listen(String),
    /// The pull listener's or the puller's TLS material could not be used.
    #[error("relay TLS: {0}")]
    Tls(String),
}

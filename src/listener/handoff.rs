//! The listener's two doors to the DMZ relay (`crate::relay`, docs/RELAY.md), kept here so the
//! relay reuses the senders' path instead of copying it:
//!
//! - on the relay, an [`AppState`](super::AppState) built `with_handoff` sends each verified
//!   delivery to a [`Handoff`] (which seals and buffers it) instead of this node's intake; caps,
//!   verification, rate limits and the bounded handling of refused requests stay the same;
//! - on the inside node, [`ingest_relayed`](super::hooks::ingest_relayed) runs a delivery the
//!   relay verified through the usual normalize → route → intake, at its original receipt time.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};

use crate::normalize::{DedupKey, IntakeInput};

/// A verified delivery for the relay's buffer.
#[derive(Debug)]
pub struct Handover {
    /// What intake will need inside: body, headers the verifier used, sender ids, client.
    pub input: IntakeInput,
    /// When the relay received it (the inside node's `received_at`).
    pub received_at: DateTime<Utc>,
    /// What makes a retry of it recognisable (never stored in the clear).
    pub dedup: DedupKey,
}

/// What the buffer did with a [`Handover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffOutcome {
    /// Sealed and committed with fsync under this relay id.
    Accepted(String),
    /// A retry of a delivery already buffered: the first relay id.
    Duplicate(String),
}

/// Why the buffer took nothing (both are 503 with `Retry-After`: the sender keeps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// The size cap is reached.
    #[error("relay buffer full")]
    Full,
    /// Sealing or the commit failed.
    #[error("relay buffer unavailable")]
    Unavailable,
}

/// The future a [`Handoff`] returns.
pub type HandoffFuture<'a> =
    Pin<Box<dyn Future<Output = Result<HandoffOutcome, HandoffError>> + Send + 'a>>;

/// Where a relay's verified deliveries go instead of intake.
pub trait Handoff: Send + Sync + std::fmt::Debug {
    /// Seal and commit `delivery`; answer only after the commit is durable.
    fn hand_off(&self, delivery: Handover) -> HandoffFuture<'_>;
}

/// What the inside node's intake did with a relayed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayedOutcome {
    /// Committed as a new delivery.
    Accepted(String),
    /// A delivery already stored (a relay retry, or a hand-over repeated after a crash).
    Duplicate(String),
    /// Authentic but not normalizable: kept in quarantine.
    Quarantined(String),
}

/// The inside node could not commit a relayed delivery: do not acknowledge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("storage cannot commit the relayed delivery")]
pub struct RelayedError;

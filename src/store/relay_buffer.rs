//! The DMZ relay's buffer of sealed deliveries: the seam both backends implement (the relay
//! itself is `crate::relay`; SQLite's buffer is `sqlite::relay_buffer`, PostgreSQL's
//! `postgres::relay_buffer`).
//!
//! The buffer lives in the relay's own storage — the SQLite file of its `[storage] path`, or
//! its PostgreSQL database — beside the relay's audit chain, so a record and its audit entry
//! commit in one transaction: `relay_buffered` when a sealed delivery is stored,
//! `delivery_duplicate` for a sender's retry, `relay_handed_over` when the inside node
//! acknowledges it and the row is deleted. None carries anything but ids, the source name, the
//! client address, sizes and the puller's certificate fingerprint; the rows hold only HPKE
//! ciphertext, which the relay cannot open. The records are built here, once, so both backends
//! write the same ones.
//!
//! Guarantees both backends keep (the conformance scenarios in `conformance_relay` check
//! them): a `put` answers only after its commit; the pull cursor (`seq`) grows in commit order,
//! so a puller reading after a cursor never skips a record committed later with a lower
//! position; a retry within `dedup_window` gets `Duplicate` with the first relay id; past
//! `max_bytes` of sealed data a `put` stores nothing and answers [`BufferError::Full`] (the
//! sender gets 503 with `Retry-After`); an acknowledgement deletes, may be repeated, and frees
//! its bytes.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{StoreError, StoreFuture};
use crate::audit::{Action, Actor, AuditRecord, Code, DetailKey, Digest, ObjectId, Outcome};

/// Expired dedup rows deleted per acknowledgement, so the delete never holds a lock long.
pub(crate) const DEDUP_PURGE_CHUNK: i64 = 500;

/// A sealed delivery to buffer.
#[derive(Debug, Clone)]
pub struct NewSealed {
    /// The relay's receipt id (UUID), also the HPKE associated data.
    pub id: String,
    /// When the relay received it.
    pub received_at: DateTime<Utc>,
    /// The configured source, for the audit record.
    pub source: String,
    /// The client address, for the audit record.
    pub remote_addr: IpAddr,
    /// Key id of the public key it is sealed to.
    pub key_id: String,
    /// HPKE encapsulated key.
    pub enc: Vec<u8>,
    /// HPKE ciphertext.
    pub ciphertext: Vec<u8>,
    /// Blind index of the dedup key (hex HMAC under the relay's key).
    pub dedup_index: String,
}

impl NewSealed {
    /// Bytes of sealed data it holds: what the size cap counts.
    pub fn size(&self) -> u64 {
        (self.enc.len() + self.ciphertext.len()) as u64
    }
}

/// What `put` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buffered {
    /// Stored and durable under this relay id.
    Stored(String),
    /// A retry of a delivery received within the dedup window: the first relay id.
    Duplicate(String),
}

/// Why `put` stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The size cap is reached: answer 503 with `Retry-After`; the sender keeps the delivery.
    #[error("relay buffer is full")]
    Full,
    /// The database cannot commit.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A buffered record as the pull API serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    /// Position in the buffer: the pull cursor.
    pub seq: i64,
    /// The relay id (associated data of the seal).
    pub id: String,
    /// When the relay received it.
    pub received_at: DateTime<Utc>,
    /// Key id of the public key it is sealed to.
    pub key_id: String,
    /// HPKE encapsulated key.
    pub enc: Vec<u8>,
    /// HPKE ciphertext.
    pub ciphertext: Vec<u8>,
}

/// How much waits at the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Records not yet acknowledged.
    pub records: u64,
    /// Bytes of sealed data they hold.
    pub bytes: u64,
    /// When the oldest of them was received.
    pub oldest: Option<DateTime<Utc>>,
}

/// Which client certificate acknowledged a hand-over, in PHI-free form: the certificate's
/// SHA-256 fingerprint (unique, and what an operator compares with `openssl x509 -fingerprint
/// -sha256`) and its subject CN when that is an identifier (a machine name such as
/// `inside-node`; anything else is left out rather than written into the audit chain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Puller {
    /// SHA-256 of the certificate's DER encoding, lowercase hex.
    pub cert_sha256: Digest,
    /// The subject common name, when it passes [`Code`]'s rules.
    pub cert_cn: Option<Code>,
}

/// How a buffer is opened, whatever the backend.
#[derive(Debug, Clone)]
pub struct RelayBufferSettings {
    /// `[relay_server] max_buffer_bytes`: sealed bytes held at most.
    pub max_bytes: u64,
    /// `[relay_server] dedup_window`: how long a delivery's dedup index is kept.
    pub dedup_window: Duration,
    /// Notified after every commit that stored a record (the pull API's long polls wait on it).
    pub wake: Arc<tokio::sync::Notify>,
}

/// A `put`'s answer.
pub type BufferFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Buffered, BufferError>> + Send + 'a>>;

/// The relay's sealed buffer, on either backend. Shared behind an `Arc` by the sealer (puts)
/// and the pull API (reads and acknowledgements).
pub trait RelayBuffer: Send + Sync + std::fmt::Debug {
    /// Store a sealed delivery (or recognise a retry) with its audit record, durably.
    fn put(&self, record: NewSealed) -> BufferFuture<'_>;

    /// Delete the acknowledged records `seqs` (unknown ones are ignored: an acknowledgement
    /// may be repeated), each with a `relay_handed_over` audit record naming `puller`, and
    /// purge a chunk of expired dedup indexes. Returns how many records were deleted.
    fn ack(&self, seqs: Vec<i64>, puller: Option<Puller>) -> StoreFuture<'_, u64>;

    /// Up to `max` records after cursor `after`, oldest first.
    fn batch_after(&self, after: i64, max: usize) -> StoreFuture<'_, Vec<SealedRow>>;

    /// Records waiting, their size and the oldest one's receipt time.
    fn backlog(&self) -> StoreFuture<'_, Backlog>;
}

/// Oldest receipt time whose dedup index is still kept.
pub(crate) fn dedup_cutoff(window: Duration) -> DateTime<Utc> {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    Utc::now()
        .checked_sub_signed(window)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn code(s: &'static str) -> Code {
    Code::parse(s).unwrap_or_else(|_| unreachable!("a fixed identifier"))
}

/// What every record about an arriving delivery carries: its sender, address and source.
fn arrival(r: &NewSealed, action: Action) -> AuditRecord {
    let mut record = AuditRecord::new(
        Actor::sender(&r.source).unwrap_or(Actor::System),
        action,
        Outcome::Success,
    )
    .with_remote_addr(r.remote_addr)
    .with_detail(DetailKey::Via, code("relay"));
    if let Ok(source) = Code::parse(&r.source) {
        record = record.with_source(source);
    }
    record
}

/// `relay_buffered`: `r` is stored, `size` sealed bytes.
pub(crate) fn buffered_record(r: &NewSealed) -> AuditRecord {
    let mut record = arrival(r, Action::RelayBuffered).with_detail(
        DetailKey::Bytes,
        i64::try_from(r.size()).unwrap_or(i64::MAX),
    );
    if let Ok(id) = ObjectId::parse(&r.id) {
        record = record.with_delivery_id(id);
    }
    if let Ok(k) = Code::parse(&format!("k{}", r.key_id)) {
        record = record.with_detail(DetailKey::KeyId, k);
    }
    record
}

/// `delivery_duplicate`: `r` is a retry of the delivery first stored as `first`.
pub(crate) fn duplicate_record(r: &NewSealed, first: &str) -> AuditRecord {
    let mut record = arrival(r, Action::DeliveryDuplicate);
    if let Ok(id) = ObjectId::parse(first) {
        record = record.with_delivery_id(id);
    }
    record
}

/// `relay_handed_over`: relay record `id` was acknowledged by `who` and deleted.
pub(crate) fn handed_over_record(id: &str, who: Option<&Puller>) -> AuditRecord {
    let mut record = AuditRecord::new(Actor::System, Action::RelayHandedOver, Outcome::Success)
        .with_detail(DetailKey::ObjectKind, code("relay_record"));
    if let Ok(id) = ObjectId::parse(id) {
        record = record.with_delivery_id(id);
    }
    if let Some(who) = who {
        record = record.with_detail(DetailKey::Sha256, who.cert_sha256.clone());
        if let Some(cn) = &who.cert_cn {
            record = record.with_detail(DetailKey::Via, cn.clone());
        }
    }
    record
}

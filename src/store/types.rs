//! The storage vocabulary: the plain types the [`super::Storage`] trait speaks, shared by every
//! backend and by the code above it. Nothing here knows SQLite or PostgreSQL, HTTP or dispatch.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A reply to a real-time request, as given to the sender and kept with its delivery so a
/// retry gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// Body.
    pub body: String,
    /// Whether this is the route's fallback (for the audit record and metrics).
    pub fallback: bool,
}

/// The route plan's ordering, as data for claiming: for a `(source, handler)`, the handlers of
/// the same routes that must be done before it runs (their outputs are its `app_data`). Dispatch
/// builds it from its routes when the plan changes; storage only looks it up, so it never calls
/// back into dispatch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Predecessors {
    /// source → handler → handlers that must finish first. Nested so a lookup by `&str` needs
    /// no allocation.
    by_source: HashMap<String, HashMap<String, Vec<String>>>,
}

impl Predecessors {
    /// No ordering: every job may run as soon as it is due.
    pub fn none() -> Self {
        Self::default()
    }

    /// Record that `handler` of `source` runs only after `before` are done. An empty `before`
    /// records nothing.
    pub fn insert(&mut self, source: &str, handler: &str, before: Vec<String>) {
        if before.is_empty() {
            return;
        }
        self.by_source
            .entry(source.to_owned())
            .or_default()
            .insert(handler.to_owned(), before);
    }

    /// The handlers that must be done before `handler` of `source` runs; empty when none.
    pub fn before(&self, source: &str, handler: &str) -> &[String] {
        self.by_source
            .get(source)
            .and_then(|h| h.get(handler))
            .map_or(&[], Vec::as_slice)
    }
}

/// Who is asking, for the audit trail: the OS user at the CLI, an admin token id, or a console
/// user signed in through OpenID Connect.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The OS user name (CLI) — a short identifier.
    pub user: String,
    /// Which channel served the request: `cli`, `admin_api` (a token), or `oidc` (a console
    /// session signed in through the clinic's OpenID provider).
    pub via: &'static str,
}

impl Requester {
    /// The user running the CLI: `$SUDO_USER` under sudo, else `$USER`/`$LOGNAME`, else the
    /// numeric uid (`uid:0`).
    pub fn cli_user() -> Self {
        Self {
            // Under `sudo -u wardhook`, the person is the one who ran sudo, not the account.
            user: ["SUDO_USER", "USER", "LOGNAME"]
                .iter()
                .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
                .unwrap_or_else(|| {
                    // No login name in the environment (a service, a container): the numeric
                    // uid still says who, and /proc/self is owned by it.
                    use std::os::unix::fs::MetadataExt as _;
                    std::fs::metadata("/proc/self")
                        .map_or_else(|_| "unknown".to_owned(), |m| format!("uid:{}", m.uid()))
                }),
            via: "cli",
        }
    }

    /// An admin API caller: `user` holds the admin token's id (never the token itself), and
    /// the audit actor becomes `admin_token:<id>`.
    pub fn admin_token(token_id: &str) -> Self {
        Self {
            user: token_id.to_owned(),
            via: "admin_api",
        }
    }

    /// A console user signed in through OpenID Connect: `user` is their provider user name,
    /// and the audit actor becomes `oidc:<user>`.
    pub fn oidc(user: &str) -> Self {
        Self {
            user: user.to_owned(),
            via: "oidc",
        }
    }
}

/// Filters of `deliveries list` and `quarantine list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this source.
    pub source: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
    /// Only this status (`accepted`, `purged`; `quarantined` for quarantine).
    pub status: Option<String>,
    /// At most this many rows (newest first); 0 means 100.
    pub limit: usize,
}

/// One line of `deliveries list`: metadata only, nothing decrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliverySummary {
    /// Delivery id.
    pub id: String,
    /// Source name.
    pub source: String,
    /// Event type.
    pub event_type: String,
    /// When received (RFC 3339 UTC).
    pub received_at: String,
    /// `accepted` or `purged`.
    pub status: String,
    /// Jobs enqueued for it.
    pub jobs: i64,
}

/// One line of `quarantine list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuarantineSummary {
    /// Quarantine id.
    pub id: String,
    /// Source name.
    pub source: String,
    /// Why it could not be normalized (field paths only).
    pub reason: String,
    /// When received (RFC 3339 UTC).
    pub received_at: String,
    /// `quarantined` or `purged`.
    pub status: String,
}

/// A decrypted quarantine entry.
#[derive(Debug, Clone)]
pub struct QuarantineEntry {
    /// Its metadata.
    pub summary: QuarantineSummary,
    /// The raw body as received.
    pub body: Vec<u8>,
    /// The request's content type.
    pub content_type: Option<String>,
    /// The headers the signature check used.
    pub signature_headers: Vec<(String, String)>,
}

/// What `purge` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// Delivery payloads deleted (metadata rows kept for the audit trail).
    pub deliveries: u64,
    /// Quarantined bodies deleted.
    pub quarantined: u64,
    /// Job rows of purged deliveries deleted.
    pub jobs: u64,
    /// Period data keys destroyed (crypto-shredding).
    pub keys_destroyed: u64,
}

/// A job a worker has claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// Row id.
    pub id: i64,
    /// The delivery.
    pub delivery_id: String,
    /// The handler name.
    pub handler: String,
    /// The delivery's source.
    pub source: String,
    /// Attempts made on the current schedule before this one (index into the schedule).
    pub schedule_index: u32,
    /// 1-based number of this attempt over the job's whole life (retries included).
    pub attempt: u32,
}

impl ClaimedJob {
    /// The job just claimed: `attempts` made on its current schedule before this one and
    /// `lifetime` attempts recorded over its whole life (both as the database counts them).
    pub(crate) fn claimed(
        id: i64,
        delivery_id: String,
        handler: String,
        source: String,
        attempts: i64,
        lifetime: i64,
    ) -> Self {
        Self {
            id,
            delivery_id,
            handler,
            source,
            schedule_index: u32::try_from(attempts).unwrap_or(u32::MAX),
            attempt: u32::try_from(lifetime.saturating_add(1)).unwrap_or(u32::MAX),
        }
    }
}

/// How one attempt ended, as recorded. Reasons name hosts and variables, never payload data.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptResult {
    /// The handler succeeded; `output` is its `app_data` entry.
    Ok {
        /// `{"data": …, "status": …}` for later handlers (stored encrypted).
        output: serde_json::Value,
        /// The caller's phone the output names (the handler's `caller_phone_from`), indexed
        /// on the delivery when it has no caller of its own; never stored itself.
        caller_phone: Option<super::caller_phone::CallerPhone>,
    },
    /// A transient failure.
    Retryable {
        /// Why.
        reason: String,
    },
    /// A failure retrying will not cure.
    Permanent {
        /// Why.
        reason: String,
    },
}

impl AttemptResult {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Ok { .. } => "ok",
            Self::Retryable { .. } => "retryable",
            Self::Permanent { .. } => "permanent",
        }
    }
    pub(crate) fn reason(&self) -> Option<&str> {
        match self {
            Self::Ok { .. } => None,
            Self::Retryable { reason } | Self::Permanent { reason } => Some(reason),
        }
    }
}

/// One attempt's facts.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// When the handler was started.
    pub started_at: DateTime<Utc>,
    /// How long it took.
    pub latency: Duration,
    /// The destination's HTTP status, if any.
    pub http_status: Option<u16>,
    /// Host or program name.
    pub destination: Option<String>,
    /// The result.
    pub result: AttemptResult,
}

/// What happens to the job after this attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Finished.
    Done,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// Dead letter (permanent failure or attempts exhausted).
    Dead,
}

/// One dead letter, metadata only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Job id (what `dlq retry` takes).
    pub job_id: i64,
    /// The delivery.
    pub delivery_id: String,
    /// Source.
    pub source: String,
    /// Event type.
    pub event_type: String,
    /// Handler.
    pub handler: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last error (no payload data).
    pub last_error: Option<String>,
    /// When it was dead-lettered.
    pub updated_at: Option<String>,
}

/// Filters of `dlq list` and `dlq retry`.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    /// Only this handler.
    pub handler: Option<String>,
    /// Only this source.
    pub source: Option<String>,
    /// Only this job.
    pub job_id: Option<i64>,
    /// At most this many (0 = 100).
    pub limit: usize,
}

/// One attempt, for `dlq show` and the attempts timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptSummary {
    /// 1-based attempt number.
    pub attempt: i64,
    /// Start time.
    pub started_at: String,
    /// `ok`, `retryable` or `permanent`.
    pub result: String,
    /// HTTP status, if any.
    pub http_status: Option<i64>,
    /// Latency.
    pub latency_ms: i64,
    /// Host or program.
    pub destination: Option<String>,
    /// Error reason (no payload data).
    pub error: Option<String>,
}

/// Progress of a purge: rows handled so far of those found past the cutoff at the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeProgress {
    /// Delivery payloads and quarantined bodies purged so far.
    pub done: u64,
    /// Delivery payloads and quarantined bodies past the cutoff when the purge started.
    pub total: u64,
}

/// Progress of `keys rotate`, reported after each committed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationProgress {
    /// The generation new writes use and old rows are moved to.
    pub generation: i64,
    /// Rows re-encrypted so far in this run.
    pub done: u64,
    /// Rows that were under older keys when this run started.
    pub total: u64,
}

/// What `keys rotate` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationReport {
    /// The generation now in use.
    pub generation: i64,
    /// Whether this run resumed an interrupted rotation instead of starting a new one.
    pub resumed: bool,
    /// Rows re-encrypted.
    pub reencrypted: u64,
    /// Old data keys destroyed once nothing referenced them.
    pub keys_destroyed: u64,
}

/// A handler the route table matched for a delivery; becomes one `jobs` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// The `[[handlers]] name`.
    pub handler: String,
}

impl JobSpec {
    /// A job for `handler`.
    pub fn new(handler: impl Into<String>) -> Self {
        Self {
            handler: handler.into(),
        }
    }
}

/// What intake decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeOutcome {
    /// Committed (fsync'd) as a new delivery; jobs enqueued. Answer 200 `accepted`.
    Accepted {
        /// The new delivery's id.
        delivery_id: String,
    },
    /// A retry of a delivery already stored; nothing enqueued. Answer 200 `duplicate`.
    Duplicate {
        /// The id of the first delivery.
        delivery_id: String,
    },
}

impl IntakeOutcome {
    /// The delivery id to answer with.
    pub fn delivery_id(&self) -> &str {
        match self {
            Self::Accepted { delivery_id } | Self::Duplicate { delivery_id } => delivery_id,
        }
    }
}

/// The id of a quarantine entry, returned to the sender in the 400 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineId(pub String);

impl std::fmt::Display for QuarantineId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Predecessors;

    #[test]
    fn predecessors_lookup() {
        let mut p = Predecessors::none();
        assert!(p.before("s", "b").is_empty());
        p.insert("s", "b", vec!["a".to_owned()]);
        p.insert("s", "a", Vec::new());
        assert_eq!(p.before("s", "b"), ["a".to_owned()]);
        assert!(p.before("s", "a").is_empty());
        assert!(p.before("other", "b").is_empty());
    }
}

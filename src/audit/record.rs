//! The shape of one audit record, and the restricted value types that keep PHI out of it.
//!
//! Every string that can reach the audit log goes through a constructor here that accepts only
//! short identifiers (`[A-Za-z][A-Za-z0-9_.:-]{0,63}`), lowercase hex digests, UUIDs, IP
//! addresses or integers. Names with spaces, phone numbers, e-mail addresses, street addresses
//! and sentences are rejected by construction, so a payload field cannot slip into the log by
//! accident: the compiler makes the caller go through [`Code::parse`] and friends, and those
//! refuse free text.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde_json::Value;

use super::AuditError;

/// Longest identifier accepted anywhere in a record. Long enough for a UUID with a prefix or a
/// host name, too short for a sentence.
pub const MAX_CODE_LEN: usize = 64;

/// A short identifier: a reason code, handler/source/route name, token id, user name, host.
///
/// Must start with an ASCII letter and contain only `A-Z a-z 0-9 _ . : -`, at most 64 bytes.
/// Starting with a letter rules out phone numbers and dates of birth; the character set rules
/// out spaces (names, sentences), `@` (e-mail) and `+`/`(` (phone formats).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Code(String);

impl Code {
    /// Accept `s` if it is a short identifier (see the type docs); never echoes `s` on error,
    /// because a rejected value may be exactly the PHI we are keeping out.
    pub fn parse(s: &str) -> Result<Self, AuditError> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
        let rest_ok = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
        if first_ok && rest_ok && s.len() <= MAX_CODE_LEN {
            Ok(Self(s.to_owned()))
        } else {
            Err(AuditError::InvalidField {
                field: "code",
                rule: "a letter then [A-Za-z0-9_.:-], at most 64 bytes",
            })
        }
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lowercase hex digest of 32 to 128 hex digits (a SHA-256 of a config file, a MAC).
///
/// At least 32 digits so a card number or phone number written in digits cannot pass as one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest(String);

impl Digest {
    /// Accept lowercase hex of even length between 32 and 128 digits.
    pub fn parse(s: &str) -> Result<Self, AuditError> {
        if (32..=128).contains(&s.len())
            && s.len() % 2 == 0
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(AuditError::InvalidField {
                field: "digest",
                rule: "lowercase hex, 32..=128 digits",
            })
        }
    }

    /// Hex-encode raw digest bytes (16..=64 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuditError> {
        Self::parse(&hex::encode(bytes))
    }

    /// The digest as hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest [`FilePath`] accepted.
pub const MAX_PATH_LEN: usize = 255;

/// An absolute path an operator chose for a file wardhook wrote (a backup), so the audit trail
/// can say where a copy of the records went.
///
/// `/` and segments of `A-Z a-z 0-9 _ . -` only (no `.` or `..` segment), at most 255 bytes:
/// no spaces, `@` or `+`, so a sentence, an e-mail address or a formatted phone number cannot
/// pass as one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilePath(String);

impl FilePath {
    /// Accept `s` if it is such a path; never echoes `s` on error.
    pub fn parse(s: &str) -> Result<Self, AuditError> {
        let segments_ok = s.strip_prefix('/').is_some_and(|rest| {
            rest.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            })
        });
        if segments_ok && s.len() <= MAX_PATH_LEN {
            Ok(Self(s.to_owned()))
        } else {
            Err(AuditError::InvalidField {
                field: "path",
                rule: "an absolute path of [A-Za-z0-9_.-] segments, at most 255 bytes",
            })
        }
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An object id that wardhook itself generated (delivery id, quarantine id, job id): a UUID in
/// its hyphenated lowercase form, or a [`Code`] such as `dlv_01hz…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectId(String);

impl ObjectId {
    /// Accept a UUID (any textual form, normalised to hyphenated lowercase) or a [`Code`].
    pub fn parse(s: &str) -> Result<Self, AuditError> {
        if let Ok(u) = uuid::Uuid::try_parse(s) {
            return Ok(Self(u.hyphenated().to_string()));
        }
        Code::parse(s)
            .map(|c| Self(c.0))
            .map_err(|_| AuditError::InvalidField {
                field: "object_id",
                rule: "a UUID or a letter then [A-Za-z0-9_.:-], at most 64 bytes",
            })
    }

    /// Wrap a UUID wardhook generated.
    pub fn from_uuid(u: uuid::Uuid) -> Self {
        Self(u.hyphenated().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The blind index of a call id (64 lowercase hex digits, from [`crate::crypto::Keyring::call_ref`]).
///
/// The call id itself is never stored: it is linkable to a patient's call. The blind index lets
/// an auditor who knows the call id find its records without the log revealing it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallRef(String);

impl CallRef {
    /// Compute the call reference of a sender's call id.
    pub fn from_call_id(keyring: &crate::crypto::Keyring, call_id: &str) -> Self {
        Self(keyring.call_ref(call_id))
    }

    /// Accept an already computed call reference (64 lowercase hex digits).
    pub fn parse(s: &str) -> Result<Self, AuditError> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(AuditError::InvalidField {
                field: "call_ref",
                rule: "64 lowercase hex digits (Keyring::call_ref)",
            })
        }
    }

    /// The blind index as hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who caused the recorded event. Stored as `kind` or `kind:id` (e.g. `cli_user:alice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A sender, identified by the configured source name it posted to.
    Sender {
        /// The `[[sources]] name`.
        source: Code,
    },
    /// A holder of an admin API token, identified by the token's id (never its secret).
    AdminToken {
        /// The token id from the config.
        token_id: Code,
    },
    /// A person signed in to the console through the clinic's OpenID provider, identified by
    /// their user name there (`preferred_username`, else `sub`).
    Oidc {
        /// The provider's user name.
        user: Code,
    },
    /// A person running the CLI on the host, identified by their OS user name.
    CliUser {
        /// The OS user name.
        user: Code,
    },
    /// wardhook itself (workers, start-up, scheduled purges).
    System,
}

impl Actor {
    /// A sender actor; fails if `source` is not a short identifier.
    pub fn sender(source: &str) -> Result<Self, AuditError> {
        Ok(Self::Sender {
            source: Code::parse(source)?,
        })
    }

    /// An admin-token actor; fails if `token_id` is not a short identifier.
    pub fn admin_token(token_id: &str) -> Result<Self, AuditError> {
        Ok(Self::AdminToken {
            token_id: Code::parse(token_id)?,
        })
    }

    /// A console user signed in through OpenID Connect; fails if `user` is not a short
    /// identifier.
    pub fn oidc(user: &str) -> Result<Self, AuditError> {
        Ok(Self::Oidc {
            user: Code::parse(user)?,
        })
    }

    /// A CLI-user actor; fails if `user` is not a short identifier.
    pub fn cli_user(user: &str) -> Result<Self, AuditError> {
        Ok(Self::CliUser {
            user: Code::parse(user)?,
        })
    }

    /// The stored text form: `sender:<source>`, `admin_token:<id>`, `oidc:<user>`,
    /// `cli_user:<user>`, `system`.
    pub fn to_text(&self) -> String {
        match self {
            Self::Sender { source } => format!("sender:{source}"),
            Self::AdminToken { token_id } => format!("admin_token:{token_id}"),
            Self::Oidc { user } => format!("oidc:{user}"),
            Self::CliUser { user } => format!("cli_user:{user}"),
            Self::System => "system".to_owned(),
        }
    }

    /// Parse the stored text form back.
    pub fn from_text(s: &str) -> Result<Self, AuditError> {
        match s.split_once(':') {
            None if s == "system" => Ok(Self::System),
            Some(("sender", id)) => Self::sender(id),
            Some(("admin_token", id)) => Self::admin_token(id),
            Some(("oidc", id)) => Self::oidc(id),
            Some(("cli_user", id)) => Self::cli_user(id),
            _ => Err(AuditError::InvalidField {
                field: "actor",
                rule: "system | sender:ID | admin_token:ID | oidc:ID | cli_user:ID",
            }),
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name { $($(#[$vm])* $variant,)* }

        impl $name {
            /// Every variant, in declaration order (for docs, tests and CLI help).
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The stable snake_case name stored in the log. Never renamed: old records must
            /// keep verifying and searching.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            /// Parse a stored or user-supplied name.
            pub fn parse(s: &str) -> Result<Self, AuditError> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(AuditError::InvalidField { field: stringify!($name), rule: "a known snake_case name" }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl std::str::FromStr for $name {
            type Err = AuditError;
            fn from_str(s: &str) -> Result<Self, Self::Err> { Self::parse(s) }
        }
    };
}

string_enum! {
    /// What happened. See `docs/AUDIT.md` for the fields each action carries.
    pub enum Action {
        /// A verified delivery was committed to storage.
        DeliveryAccepted => "delivery_accepted",
        /// A verified delivery was recognised as a retry of one already stored.
        DeliveryDuplicate => "delivery_duplicate",
        /// A delivery failed verification (signature, timestamp, IP allowlist, unknown source...).
        DeliveryRejected => "delivery_rejected",
        /// An authentic but malformed delivery was stored encrypted in quarantine.
        DeliveryQuarantined => "delivery_quarantined",
        /// One handler invocation for a delivery, with its outcome.
        HandlerAttempt => "handler_attempt",
        /// A job exhausted its attempts or failed permanently.
        DeadLettered => "dead_lettered",
        /// A stored delivery was replayed to its handlers on request.
        Replayed => "replayed",
        /// A dead-lettered job was retried on request.
        Retried => "retried",
        /// A decrypted payload (delivery, quarantined body, handler response) was read.
        PayloadRead => "payload_read",
        /// A stored delivery's sender signature was re-checked (`deliveries reverify`).
        DeliveryReverified => "delivery_reverified",
        /// A new payload key id was added / re-encryption progressed.
        KeyRotated => "key_rotated",
        /// Payloads, quarantine entries or jobs past retention were deleted.
        Purged => "purged",
        /// A backup of the database was taken.
        BackupTaken => "backup_taken",
        /// The configuration file was loaded (with its SHA-256).
        ConfigLoaded => "config_loaded",
        /// The server started listening.
        ServerStarted => "server_started",
        /// The server stopped (graceful shutdown).
        ServerStopped => "server_stopped",
        /// Break-glass access to decrypted data with the master key, outside the server.
        EmergencyAccess => "emergency_access",
        /// Audit records older than the retention were deleted (records the new chain anchor).
        AuditPurged => "audit_purged",
        /// Audit records were exported (for a SIEM or an auditor).
        AuditExported => "audit_exported",
        /// An admin API request was refused for lack of a valid token or role.
        AccessDenied => "access_denied",
        /// A real-time route answered its sender (computed reply or fallback; no content).
        RealtimeReplied => "realtime_replied",
        /// An admin console token was created (its id and role; never the token).
        TokenCreated => "token_created",
        /// An admin console token was revoked.
        TokenRevoked => "token_revoked",
        /// A DMZ relay sealed a verified delivery to the inside node's key and buffered it.
        RelayBuffered => "relay_buffered",
        /// A DMZ relay handed a sealed delivery over to the inside node (acknowledged, deleted).
        RelayHandedOver => "relay_handed_over",
        /// A call recording or transcript the sender linked to was downloaded and stored
        /// encrypted (its id, size and SHA-256; never its URL).
        ArtifactCaptured => "artifact_captured",
        /// A captured artifact was deleted at the vendor after its capture was verified.
        ArtifactDeletedAtVendor => "artifact_deleted_at_vendor",
        /// A console search for calls, or one call's timeline (the call only as its blind index).
        CallsSearched => "calls_searched",
        /// Deliveries stored without a caller-phone index were decrypted and indexed
        /// (`deliveries index-phones`): one record when a run starts, one when it ends, counts
        /// only.
        CallersIndexed => "callers_indexed",
        /// A bulk retry or replay by filter: one record naming the filter and the count.
        BulkRequeued => "bulk_requeued",
        /// A console alert opened: a built-in rule's condition began to hold (its id, rule and
        /// subject; never delivery content).
        AlertOpened => "alert_opened",
        /// An operator acknowledged an open console alert.
        AlertAcknowledged => "alert_acknowledged",
        /// A console alert resolved itself: its condition no longer holds.
        AlertResolved => "alert_resolved",
        /// A person signed in to the console through the clinic's OpenID provider (their user
        /// name is the actor, the mapped role the `result`; nothing else of the ID token).
        ConsoleSignedIn => "console_signed_in",
        /// A console session signed in through the OpenID provider was ended by its user.
        ConsoleSignedOut => "console_signed_out",
    }
}

string_enum! {
    /// How it ended, coarse on purpose; the reason code goes into the detail.
    pub enum Outcome {
        /// The action completed.
        Success => "success",
        /// The action was attempted and failed (handler error, storage error).
        Failure => "failure",
        /// The action was refused (authentication, authorisation, policy).
        Denied => "denied",
    }
}

string_enum! {
    /// The names of the facts a record's detail may carry. A closed list, so a detail map can't
    /// become a dumping ground for payload fields.
    pub enum DetailKey {
        /// Machine reason code (`bad_signature`, `stale_timestamp`, `timeout`, `http_5xx`...).
        Reason => "reason",
        /// Which configured secret matched (0-based index into `secrets`).
        KeyIndex => "key_index",
        /// A payload encryption key id.
        KeyId => "key_id",
        /// Verification scheme / preset name.
        Scheme => "scheme",
        /// Event type (`call.ended`).
        EventType => "event_type",
        /// Handler name.
        Handler => "handler",
        /// Route name or index.
        Route => "route",
        /// Destination host of a handler call (never a full URL: paths and queries can hold PHI).
        Host => "host",
        /// HTTP status (sent or received).
        Status => "status",
        /// Duration in milliseconds.
        LatencyMs => "latency_ms",
        /// Attempt number, 1-based.
        Attempt => "attempt",
        /// Handler result class: `ok`, `retryable`, `permanent`.
        Result => "result",
        /// A count (rows purged, records exported, jobs enqueued...).
        Count => "count",
        /// What kind of object was acted on (`delivery`, `quarantine`, `job`, `response`...).
        ObjectKind => "object_kind",
        /// The id of a related object (quarantine id, job id, first delivery of a duplicate).
        ObjectId => "object_id",
        /// Which channel served a read: `cli`, `admin_api`.
        Via => "via",
        /// A SHA-256 (of the config file, of a backup).
        Sha256 => "sha256",
        /// A cutoff instant as Unix seconds (purges).
        CutoffUnix => "cutoff_unix",
        /// Last sequence number removed by an audit purge.
        ThroughSeq => "through_seq",
        /// MAC of the last removed record: the new chain anchor after an audit purge.
        AnchorMac => "anchor_mac",
        /// wardhook version.
        Version => "version",
        /// Listener kind or address family label (`hooks`, `admin`).
        Listener => "listener",
        /// Free-form count of bytes (body size, backup size).
        Bytes => "bytes",
        /// Unix seconds of the first event an aggregate record counts (rejections tallied per
        /// interval; the record's own `ts` is the end of the interval).
        SinceUnix => "since_unix",
        /// Where an operator wrote a file holding records (a backup), as a [`FilePath`].
        Path => "path",
        /// Start (Unix seconds) of the oldest data-key period a backup holds readable payloads of.
        OldestPeriodUnix => "oldest_period_unix",
        /// Start (Unix seconds) of the newest such period.
        NewestPeriodUnix => "newest_period_unix",
        /// How many of the deliveries a run read it gave a caller-phone index.
        Indexed => "indexed",
    }
}

/// One value in a record's detail: an identifier, an integer, a flag, a digest or an address.
/// There is deliberately no variant for arbitrary text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetailValue {
    /// A short identifier.
    Code(Code),
    /// A number (status, latency, count, index).
    Int(i64),
    /// A flag.
    Bool(bool),
    /// A hex digest.
    Digest(Digest),
    /// An IP address (e.g. a destination host given as an address).
    Ip(IpAddr),
    /// An absolute file path an operator chose.
    Path(FilePath),
}

impl DetailValue {
    /// A destination host: an IP address or a host name ([`Code`] rules).
    pub fn host(s: &str) -> Result<Self, AuditError> {
        match s.parse::<IpAddr>() {
            Ok(ip) => Ok(Self::Ip(ip)),
            Err(_) => Code::parse(s).map(Self::Code),
        }
    }
}

impl From<Code> for DetailValue {
    fn from(c: Code) -> Self {
        Self::Code(c)
    }
}
impl From<i64> for DetailValue {
    fn from(i: i64) -> Self {
        Self::Int(i)
    }
}
impl From<u32> for DetailValue {
    fn from(i: u32) -> Self {
        Self::Int(i64::from(i))
    }
}
impl From<u16> for DetailValue {
    fn from(i: u16) -> Self {
        Self::Int(i64::from(i))
    }
}
impl From<bool> for DetailValue {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}
impl From<Digest> for DetailValue {
    fn from(d: Digest) -> Self {
        Self::Digest(d)
    }
}
impl From<IpAddr> for DetailValue {
    fn from(ip: IpAddr) -> Self {
        Self::Ip(ip)
    }
}
impl From<FilePath> for DetailValue {
    fn from(p: FilePath) -> Self {
        Self::Path(p)
    }
}
impl From<ObjectId> for DetailValue {
    fn from(o: ObjectId) -> Self {
        // An ObjectId is a UUID or a Code; both are safe as a detail string.
        Self::Code(Code(o.0))
    }
}

/// The facts of a record beyond the fixed columns, keyed by [`DetailKey`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail(BTreeMap<&'static str, DetailValue>);

impl Detail {
    /// Set one fact (replacing an earlier value for the same key).
    pub fn insert(&mut self, key: DetailKey, value: impl Into<DetailValue>) {
        self.0.insert(key.as_str(), value.into());
    }

    /// True when no facts are set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The canonical JSON text stored in the log: keys sorted, no whitespace — the text
    /// [`canonical_json`] gives for the same facts, written straight from the sorted map
    /// without building a `Value` first (every accepted delivery writes one).
    pub fn to_canonical_json(&self) -> String {
        let mut out = String::with_capacity(2 + 40 * self.0.len());
        out.push('{');
        for (i, (key, value)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(&mut out, key);
            out.push(':');
            match value {
                DetailValue::Code(Code(s))
                | DetailValue::Digest(Digest(s))
                | DetailValue::Path(FilePath(s)) => push_json_str(&mut out, s),
                DetailValue::Ip(ip) => push_json_str(&mut out, &ip.to_string()),
                DetailValue::Int(n) => {
                    use std::fmt::Write;
                    let _ = write!(out, "{n}");
                }
                DetailValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            }
        }
        out.push('}');
        out
    }
}

/// A JSON string literal, escaped the way serde_json escapes (as [`canonical_json`] does).
fn push_json_str(out: &mut String, s: &str) {
    // Serializing a string into memory cannot fail.
    if let Ok(text) = serde_json::to_string(s) {
        out.push_str(&text);
    }
}

/// Serialize JSON with object keys sorted at every level and no whitespace, independent of
/// whether serde_json's `preserve_order` feature is enabled somewhere in the build. The MAC is
/// computed over this text, so it must be the same on every machine that verifies.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(val) = m.get(*k) {
                    write_canonical(val, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, val) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(val, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A record to append: built by the stage that changed state, sealed by [`super::append`].
///
/// Every field is one of the restricted types above, so the struct cannot hold free text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Who caused it.
    pub actor: Actor,
    /// What happened.
    pub action: Action,
    /// How it ended.
    pub outcome: Outcome,
    /// The delivery concerned, if any.
    pub delivery_id: Option<ObjectId>,
    /// The configured source concerned, if any.
    pub source: Option<Code>,
    /// The blind index of the call concerned, if known.
    pub call_ref: Option<CallRef>,
    /// Further non-PHI facts.
    pub detail: Detail,
    /// The peer address of the request that caused it, if any.
    pub remote_addr: Option<IpAddr>,
}

/// An audit record of the server's own life: config loaded (with the file's SHA-256), started,
/// stopped.
pub fn lifecycle_record(action: Action, config_sha256: Option<&str>) -> AuditRecord {
    let mut record = AuditRecord::new(Actor::System, action, Outcome::Success);
    if let Some(d) = config_sha256.and_then(|d| Digest::parse(d).ok()) {
        record.detail.insert(DetailKey::Sha256, d);
    }
    record
}

impl AuditRecord {
    /// A record with only actor, action and outcome set; add the rest with the `with_*` methods.
    pub fn new(actor: Actor, action: Action, outcome: Outcome) -> Self {
        Self {
            actor,
            action,
            outcome,
            delivery_id: None,
            source: None,
            call_ref: None,
            detail: Detail::default(),
            remote_addr: None,
        }
    }

    /// Set the delivery id.
    pub fn with_delivery_id(mut self, id: ObjectId) -> Self {
        self.delivery_id = Some(id);
        self
    }

    /// Set the source name.
    pub fn with_source(mut self, source: Code) -> Self {
        self.source = Some(source);
        self
    }

    /// Set the call reference.
    pub fn with_call_ref(mut self, call_ref: CallRef) -> Self {
        self.call_ref = Some(call_ref);
        self
    }

    /// Add one detail fact.
    pub fn with_detail(mut self, key: DetailKey, value: impl Into<DetailValue>) -> Self {
        self.detail.insert(key, value);
        self
    }

    /// Set the remote address.
    pub fn with_remote_addr(mut self, addr: IpAddr) -> Self {
        self.remote_addr = Some(addr);
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::IpAddr;

    use serde_json::Value;

    use super::{canonical_json, Code, Detail, DetailKey, DetailValue, Digest, FilePath};

    /// The detail as a JSON value, the way the canonical text was first produced.
    fn to_json(v: &DetailValue) -> Value {
        match v {
            DetailValue::Code(c) => Value::String(c.0.clone()),
            DetailValue::Int(i) => Value::from(*i),
            DetailValue::Bool(b) => Value::Bool(*b),
            DetailValue::Digest(d) => Value::String(d.0.clone()),
            DetailValue::Ip(ip) => Value::String(ip.to_string()),
            DetailValue::Path(p) => Value::String(p.0.clone()),
        }
    }

    /// Stored detail text is covered by each record's MAC: the direct writer must give the
    /// very text the `Value` route gave, for every kind of value and any number of keys.
    #[test]
    fn detail_text_is_the_canonical_json_of_its_facts() {
        let values = [
            DetailValue::Code(Code::parse("http_5xx").unwrap()),
            DetailValue::Int(-9_223_372_036_854_775_808),
            DetailValue::Int(42),
            DetailValue::Bool(true),
            DetailValue::Bool(false),
            DetailValue::Digest(Digest::parse(&"ab".repeat(32)).unwrap()),
            DetailValue::Ip("2001:db8::1".parse::<IpAddr>().unwrap()),
            DetailValue::Ip("10.0.0.7".parse::<IpAddr>().unwrap()),
            DetailValue::Path(FilePath::parse("/var/lib/wardhook/a-b_c.d").unwrap()),
        ];
        let keys = [
            DetailKey::Reason,
            DetailKey::KeyIndex,
            DetailKey::KeyId,
            DetailKey::Path,
            DetailKey::Indexed,
        ];
        assert_eq!(Detail::default().to_canonical_json(), "{}");
        for start in 0..values.len() {
            let mut detail = Detail::default();
            let mut map = serde_json::Map::new();
            for (i, key) in keys.iter().enumerate() {
                let value = values[(start + i * 2) % values.len()].clone();
                map.insert(key.as_str().to_owned(), to_json(&value));
                detail.insert(*key, value);
                assert_eq!(
                    detail.to_canonical_json(),
                    canonical_json(&Value::Object(map.clone()))
                );
            }
        }
    }
}

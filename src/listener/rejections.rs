//! The audit trail of rejected deliveries, bounded whatever the flood.
//!
//! Each rejection used to be one fsync'd audit record and one mirror line, so a flood of forged
//! requests filled the disk at the forger's pace. Here rejections are tallied per
//! (source, reason, client address) per interval: the first rejection of a key in an interval is
//! recorded at once, with its reason and address; the others are only counted, and when the
//! interval ends (or the server stops) each key that had more becomes one `delivery_rejected`
//! record with `count` and `since_unix`. The table holds at most [`RejectionLog::new`]'s
//! `capacity` keys; rejections of keys that do not fit are counted into one `other` aggregate
//! (no source, reason or address), so memory stays fixed too. A flood therefore costs at most
//! two records per key and interval, plus one for the overflow.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::audit::{Action, Actor, AuditRecord, Code, DetailKey, Outcome};

/// Reason code of the aggregate that counts rejections the table had no room for.
pub const OVERFLOW_REASON: &str = "other";

/// What the caller does with one rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tally {
    /// The first of its key in this interval: write this record now.
    RecordNow(Box<AuditRecord>),
    /// Counted; it appears in an aggregate record when the interval ends.
    Counted,
}

/// Which rejections are counted together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// A configured source name (never text from the request).
    source: String,
    /// The rejection's reason code.
    reason: &'static str,
    /// The client address after trusted-proxy resolution.
    client: IpAddr,
}

/// Rejections counted after the first record of a key.
#[derive(Debug, Clone, Copy, Default)]
struct Count {
    n: u64,
    since: Option<DateTime<Utc>>,
}

impl Count {
    fn add(&mut self, now: DateTime<Utc>) {
        self.n = self.n.saturating_add(1);
        self.since.get_or_insert(now);
    }
}

#[derive(Debug, Default)]
struct Table {
    keys: HashMap<Key, Count>,
    overflow: Count,
}

/// The per-interval tally of rejections (see the module docs).
#[derive(Debug)]
pub struct RejectionLog {
    capacity: usize,
    table: Mutex<Table>,
}

impl RejectionLog {
    /// An empty tally holding at most `capacity` keys per interval.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            table: Mutex::default(),
        }
    }

    /// Note one rejection of a delivery to the configured `source` from `client` at `now`.
    pub fn note(
        &self,
        source: &str,
        reason: &'static str,
        client: IpAddr,
        now: DateTime<Utc>,
    ) -> Tally {
        let key = Key {
            source: source.to_owned(),
            reason,
            client,
        };
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = table.keys.get_mut(&key) {
            count.add(now);
            return Tally::Counted;
        }
        if table.keys.len() >= self.capacity {
            table.overflow.add(now);
            return Tally::Counted;
        }
        table.keys.insert(key.clone(), Count::default());
        Tally::RecordNow(Box::new(record(&key, None)))
    }

    /// End the interval: one aggregate record per key that had rejections after its first,
    /// plus the overflow aggregate if anything overflowed; the table starts empty again.
    pub fn drain(&self) -> Vec<AuditRecord> {
        let table = std::mem::take(&mut *self.table.lock().unwrap_or_else(|p| p.into_inner()));
        let mut out: Vec<AuditRecord> = table
            .keys
            .iter()
            .filter(|(_, c)| c.n > 0)
            .map(|(k, c)| record(k, Some(*c)))
            .collect();
        if table.overflow.n > 0 {
            let mut r = AuditRecord::new(Actor::System, Action::DeliveryRejected, Outcome::Denied);
            if let Ok(code) = Code::parse(OVERFLOW_REASON) {
                r.detail.insert(DetailKey::Reason, code);
            }
            add_count(&mut r, table.overflow);
            out.push(r);
        }
        out
    }

    /// Keys tallied in the current interval.
    #[cfg(test)]
    pub fn keys(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys
            .len()
    }
}

/// The `delivery_rejected` record of `key`: a single rejection, or an aggregate of `count`.
fn record(key: &Key, count: Option<Count>) -> AuditRecord {
    let mut r = AuditRecord::new(
        Actor::sender(&key.source).unwrap_or(Actor::System),
        Action::DeliveryRejected,
        Outcome::Denied,
    );
    r.source = Code::parse(&key.source).ok();
    r.remote_addr = Some(key.client);
    if let Ok(code) = Code::parse(key.reason) {
        r.detail.insert(DetailKey::Reason, code);
    }
    if let Some(c) = count {
        add_count(&mut r, c);
    }
    r
}

fn add_count(r: &mut AuditRecord, c: Count) {
    r.detail
        .insert(DetailKey::Count, i64::try_from(c.n).unwrap_or(i64::MAX));
    if let Some(since) = c.since {
        r.detail.insert(DetailKey::SinceUnix, since.timestamp());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn count_of(r: &AuditRecord) -> Option<i64> {
        let json: serde_json::Value =
            serde_json::from_str(&r.detail.to_canonical_json()).expect("json");
        json["count"].as_i64()
    }

    #[test]
    fn the_first_rejection_of_a_key_is_recorded_and_the_rest_become_one_counted_record() {
        let log = RejectionLog::new(16);
        let t0 = Utc::now();
        let first = log.note("demo", "bad_signature", ip("203.0.113.5"), t0);
        let Tally::RecordNow(first) = first else {
            panic!("the first rejection must be recorded at once");
        };
        assert_eq!(first.remote_addr, Some(ip("203.0.113.5")));
        assert_eq!(count_of(&first), None);
        for i in 1..200 {
            let at = t0 + chrono::Duration::milliseconds(i);
            assert_eq!(
                log.note("demo", "bad_signature", ip("203.0.113.5"), at),
                Tally::Counted
            );
        }
        let records = log.drain();
        assert_eq!(records.len(), 1);
        let agg = &records[0];
        assert_eq!(agg.action, Action::DeliveryRejected);
        assert_eq!(agg.source.as_ref().map(Code::as_str), Some("demo"));
        assert_eq!(agg.remote_addr, Some(ip("203.0.113.5")));
        assert_eq!(count_of(agg), Some(199));
        let detail = agg.detail.to_canonical_json();
        assert!(
            detail.contains(&format!("\"since_unix\":{}", t0.timestamp())),
            "{detail}"
        );
        assert!(detail.contains("\"reason\":\"bad_signature\""), "{detail}");
        // A new interval: the next rejection of the key is recorded at once again.
        assert!(matches!(
            log.note("demo", "bad_signature", ip("203.0.113.5"), t0),
            Tally::RecordNow(_)
        ));
    }

    #[test]
    fn a_key_rejected_only_once_in_an_interval_gets_no_aggregate() {
        let log = RejectionLog::new(16);
        let now = Utc::now();
        let _ = log.note("demo", "bad_signature", ip("192.0.2.1"), now);
        let _ = log.note("demo", "stale_timestamp", ip("192.0.2.1"), now);
        let _ = log.note("demo", "bad_signature", ip("192.0.2.2"), now);
        assert!(log.drain().is_empty());
    }

    #[test]
    fn keys_beyond_the_capacity_are_counted_into_one_other_aggregate() {
        let log = RejectionLog::new(100);
        let now = Utc::now();
        let mut recorded = 0;
        for i in 0..10_000u32 {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            if let Tally::RecordNow(_) = log.note("demo", "bad_signature", client, now) {
                recorded += 1;
            }
            assert!(log.keys() <= 100);
        }
        assert_eq!(recorded, 100);
        let records = log.drain();
        assert_eq!(records.len(), 1, "only the overflow has a count");
        let other = &records[0];
        assert_eq!(other.actor, Actor::System);
        assert_eq!(other.source, None);
        assert_eq!(other.remote_addr, None);
        assert_eq!(count_of(other), Some(9_900));
        assert!(other
            .detail
            .to_canonical_json()
            .contains("\"reason\":\"other\""));
    }
}

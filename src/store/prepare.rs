//! Intake preparation both backends share: everything about a delivery that does not need the
//! database — its dedup index and the period its data key belongs to.

use chrono::{DateTime, Utc};

use crate::crypto::Keyring;
use crate::normalize::Normalized;

/// The period a timestamp falls in: its UTC day.
pub(crate) fn period_of(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// The blind index of a dedup key, scoped to the source.
pub(crate) fn dedup_index(keyring: &Keyring, source: &str, normalized: &Normalized) -> String {
    let mut material = Vec::with_capacity(source.len() + 80);
    material.extend_from_slice(&(source.len() as u64).to_be_bytes());
    material.extend_from_slice(source.as_bytes());
    material.extend_from_slice(&normalized.dedup.index_material());
    keyring.blind_index("dedup", &material)
}

//! Senders' clock skew, as seen in the timestamps they sign.
//!
//! A sender whose clock drifts towards the edge of the replay window starts failing with
//! "stale timestamp" one day; `wardhook doctor` warns before that from this summary, which the
//! server writes beside the database every minute and at shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// File name of the summary, in the database's folder.
pub const CLOCK_FILE: &str = "sender-clock.json";

/// One source's skew figures (sender's signed time minus our receive time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkewStat {
    /// The latest delivery's skew, milliseconds (positive: the sender's clock is ahead).
    pub last_ms: i64,
    /// The largest absolute skew seen since the server started, milliseconds.
    pub max_abs_ms: i64,
    /// Deliveries with a signed timestamp since the server started.
    pub samples: u64,
    /// When the latest one arrived.
    pub last_seen: Option<DateTime<Utc>>,
}

/// Skew per source, kept in memory.
#[derive(Debug, Default)]
pub struct SkewTracker {
    stats: Mutex<BTreeMap<String, SkewStat>>,
}

impl SkewTracker {
    /// Note a delivery's signed timestamp.
    pub fn record(&self, source: &str, signed_at: DateTime<Utc>, received_at: DateTime<Utc>) {
        let skew = (signed_at - received_at).num_milliseconds();
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let s = stats.entry(source.to_owned()).or_default();
        s.last_ms = skew;
        s.max_abs_ms = s.max_abs_ms.max(skew.abs());
        s.samples += 1;
        s.last_seen = Some(received_at);
    }

    /// Write the summary to `dir/sender-clock.json` (atomically: temp file, then rename).
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let path = dir.join(CLOCK_FILE);
        let tmp = dir.join(format!("{CLOCK_FILE}.tmp"));
        crate::fsutil::write_private(&tmp, &serde_json::to_vec_pretty(&stats)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }
}

/// Read a summary written by [`SkewTracker::write`].
pub fn read(dir: &Path) -> std::io::Result<BTreeMap<String, SkewStat>> {
    let bytes = std::fs::read(dir.join(CLOCK_FILE))?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

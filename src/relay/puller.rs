//! The inside node's puller: connects *out* to the relay's pull listener (mutual TLS), opens
//! each sealed record with its private keys, runs the usual intake at the record's original
//! receipt time ([`crate::listener::ingest_relayed`]: dedup, encryption under this node's own
//! keys, audit, dispatch), and acknowledges a record only after that commit.
//!
//! Order and safety: one batch at a time, records in the relay's order; a record whose intake
//! cannot commit stops the batch (nothing after it is acknowledged, the next pull starts again
//! at it). After a crash the cursor starts at 0, so unacknowledged records are served again;
//! intake recognises the ones it had already committed (its dedup index) and answers
//! `duplicate`, so nothing is stored twice. The same holds after any failed pass (the relay
//! restarted, an acknowledgement was lost): the cursor goes back to 0. A record that cannot be opened (no private key
//! with its key id, or altered) is skipped and left at the relay — counted, logged, and kept
//! visible in the backlog metrics and the alert — never acknowledged, so never lost.
//!
//! Backpressure: the next batch is asked for only after the previous one is committed and
//! acknowledged, and intake itself waits for its writer; the relay answers senders 503 when its
//! buffer is full.

use std::time::Duration;

use actix_web::web;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;

use super::pull_api::{Ack, Batch, WireRecord};
use super::record;
use super::seal::{KeySet, PrivateKey, Sealed};
use super::RelayError;
use crate::config::relay::RelaySettings;
use crate::listener::handoff::RelayedOutcome;
use crate::listener::AppState;

/// Longest pause between failed pulls.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How far a relay's receipt time may lie ahead of this node's clock (clock skew).
const MAX_RECEIPT_AHEAD: chrono::TimeDelta = chrono::TimeDelta::minutes(5);
/// How far it may lie behind: a record this old is not one a working relay still holds (its
/// backlog alert fires after 15 minutes).
const MAX_RECEIPT_AGE: chrono::TimeDelta = chrono::TimeDelta::days(366);

/// What one pass of the loop did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassReport {
    /// Records committed (accepted, duplicate or quarantined) and acknowledged.
    pub ingested: usize,
    /// Records that could not be opened (skipped, left at the relay).
    pub unopenable: usize,
}

/// Why a pass stopped early.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The relay could not be reached, or answered badly.
    #[error("relay pull failed: {0}")]
    Http(String),
    /// This node could not commit a record: it stays at the relay.
    #[error("intake cannot commit a relayed delivery; it stays at the relay")]
    Intake,
}

/// The inside node's pulling loop.
pub struct Puller {
    http: reqwest::Client,
    base: url::Url,
    keys: KeySet,
    state: web::Data<AppState>,
    batch: usize,
    wait: Duration,
    cursor: i64,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("base", &self.base.as_str())
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

impl Puller {
    /// Build from `[relay]`: the TLS client (this node's certificate, the relay's CA only) and
    /// the private keys.
    pub fn new(settings: &RelaySettings, state: web::Data<AppState>) -> Result<Self, RelayError> {
        let tls = |e: String| RelayError::Tls(e);
        let ca = std::fs::read(&settings.ca)
            .map_err(|e| tls(format!("{}: {e}", settings.ca.display())))?;
        let mut identity = std::fs::read(&settings.client_cert)
            .map_err(|e| tls(format!("{}: {e}", settings.client_cert.display())))?;
        identity.push(b'\n');
        identity.extend(
            std::fs::read(&settings.client_key)
                .map_err(|e| tls(format!("{}: {e}", settings.client_key.display())))?,
        );
        let identity = zeroize::Zeroizing::new(identity);
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(&ca).map_err(|e| tls(e.to_string()))?,
            )
            .identity(reqwest::Identity::from_pem(&identity).map_err(|e| tls(e.to_string()))?)
            .https_only(true)
            .connect_timeout(Duration::from_secs(10))
            .timeout(settings.wait + Duration::from_secs(30))
            .build()
            .map_err(|e| tls(e.to_string()))?;
        let keys = settings
            .private_keys
            .iter()
            .map(|s| PrivateKey::parse(s.expose_str().unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()?;
        let key_ids: Vec<&str> = keys.iter().map(PrivateKey::id).collect();
        tracing::info!(key_ids = ?key_ids, "relay private keys loaded");
        Ok(Self {
            http,
            base: settings.url.clone(),
            keys: KeySet::new(keys),
            state,
            batch: settings.batch,
            wait: settings.wait,
            cursor: 0,
        })
    }

    /// Pull until `stop` turns true. A failing or panicking pass is logged and retried after a
    /// growing pause (at most 30 s); the loop itself never ends on an error.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        tracing::info!(relay = %self.base, "pulling sealed deliveries from the DMZ relay");
        let mut backoff = Duration::from_millis(250);
        while !*stop.borrow() {
            let pass = std::panic::AssertUnwindSafe(self.pass(self.wait)).catch_unwind();
            let result = tokio::select! {
                r = pass => r,
                _ = stop.changed() => break,
            };
            match result {
                Ok(Ok(_)) => backoff = Duration::from_millis(250),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "relay pull pass failed; retrying");
                    self.pause(&mut stop, &mut backoff).await;
                }
                Err(_) => {
                    tracing::error!("relay pull pass panicked; retrying");
                    self.pause(&mut stop, &mut backoff).await;
                }
            }
        }
        tracing::info!("relay puller stopped");
    }

    async fn pause(&self, stop: &mut tokio::sync::watch::Receiver<bool>, backoff: &mut Duration) {
        tokio::select! {
            () = tokio::time::sleep(*backoff) => {}
            _ = stop.changed() => {}
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    }

    /// One pull: fetch a batch after the cursor (waiting up to `wait` when there is none),
    /// ingest its records in order, acknowledge the committed ones. Tests call this directly.
    pub async fn pass(&mut self, wait: Duration) -> Result<PassReport, PullError> {
        let result = self.pass_inner(wait).await;
        if result.is_err() {
            // Whatever failed (the relay restarted, an acknowledgement was lost, intake could
            // not commit), start over from the oldest record the relay still holds: records
            // committed here but not acknowledged come back and are recognised as duplicates.
            self.cursor = 0;
        }
        result
    }

    async fn pass_inner(&mut self, wait: Duration) -> Result<PassReport, PullError> {
        let batch = self.fetch(wait).await?;
        let oldest_age = batch
            .backlog
            .oldest_received_at
            .map(|t| (Utc::now() - t).to_std().unwrap_or_default())
            .unwrap_or_default();
        crate::metrics::relay_backlog(batch.backlog.records, oldest_age);
        let mut report = PassReport::default();
        let mut done = Vec::new();
        let mut failed = false;
        for rec in batch.records {
            match self.ingest(&rec).await {
                Ok(Some(result)) => {
                    crate::metrics::relay_record(result);
                    done.push(rec.seq);
                    report.ingested += 1;
                }
                Ok(None) => report.unopenable += 1,
                Err(e) => {
                    tracing::error!(error = %e, "relayed delivery not committed; it stays at the relay");
                    failed = true;
                    break;
                }
            }
            self.cursor = rec.seq;
        }
        if !done.is_empty() {
            self.acknowledge(done).await?;
        }
        if failed {
            return Err(PullError::Intake);
        }
        Ok(report)
    }

    /// Open and ingest one record: `Some(result)` when committed, `None` when it cannot be
    /// opened (skipped, left at the relay).
    async fn ingest(&self, rec: &WireRecord) -> Result<Option<&'static str>, PullError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let opened = (|| {
            let sealed = Sealed {
                key_id: rec.key_id.clone(),
                enc: b64.decode(&rec.enc).ok()?,
                ciphertext: b64.decode(&rec.ciphertext).ok()?,
            };
            let plaintext = match self.keys.open(&rec.id, &sealed) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(relay_id = %rec.id, error = %e, "cannot open a relayed record; left at the relay");
                    return None;
                }
            };
            match record::decode(&rec.id, &plaintext) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::error!(relay_id = %rec.id, error = %e, "relayed record is malformed; left at the relay");
                    None
                }
            }
        })();
        let Some((input, claimed_at)) = opened else {
            crate::metrics::relay_record("unopenable");
            return Ok(None);
        };
        let received_at = receipt_time(claimed_at, Utc::now());
        if received_at != claimed_at {
            tracing::warn!(relay_id = %rec.id, "relay receipt time out of range; using the pull time");
        }
        let outcome = crate::listener::ingest_relayed(&self.state, input, received_at)
            .await
            .map_err(|_| PullError::Intake)?;
        Ok(Some(match outcome {
            RelayedOutcome::Accepted(id) => {
                tracing::info!(delivery_id = %id, relay_id = %rec.id, "relayed delivery accepted");
                "accepted"
            }
            RelayedOutcome::Duplicate(id) => {
                tracing::info!(delivery_id = %id, relay_id = %rec.id, "relayed delivery was a duplicate");
                "duplicate"
            }
            RelayedOutcome::Quarantined(id) => {
                tracing::warn!(quarantine_id = %id, relay_id = %rec.id, "relayed delivery quarantined");
                "quarantined"
            }
        }))
    }

    async fn fetch(&self, wait: Duration) -> Result<Batch, PullError> {
        let mut url = self
            .base
            .join("relay/v1/records")
            .map_err(|e| PullError::Http(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("after", &self.cursor.to_string())
            .append_pair("max", &self.batch.to_string())
            .append_pair("wait", &wait.as_secs().to_string());
        let res = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| PullError::Http(without_url(e)))?;
        if !res.status().is_success() {
            return Err(PullError::Http(format!("relay answered {}", res.status())));
        }
        res.json::<Batch>()
            .await
            .map_err(|e| PullError::Http(without_url(e)))
    }

    async fn acknowledge(&self, seqs: Vec<i64>) -> Result<(), PullError> {
        let url = self
            .base
            .join("relay/v1/ack")
            .map_err(|e| PullError::Http(e.to_string()))?;
        let res = self
            .http
            .post(url)
            .json(&Ack { seqs })
            .send()
            .await
            .map_err(|e| PullError::Http(without_url(e)))?;
        if !res.status().is_success() {
            return Err(PullError::Http(format!(
                "relay answered {} to an acknowledgement",
                res.status()
            )));
        }
        Ok(())
    }
}

/// The receipt time to ingest a relayed record with: the relay's (`claimed`), unless it lies
/// more than [`MAX_RECEIPT_AHEAD`] in the future or more than [`MAX_RECEIPT_AGE`] in the past of
/// `now` (a wrong clock or a compromised relay), then `now`. Retention, dedup windows and
/// reports do arithmetic on this time; it comes from outside this node, so it is bounded here.
fn receipt_time(claimed: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let earliest = now.checked_sub_signed(MAX_RECEIPT_AGE);
    let latest = now.checked_add_signed(MAX_RECEIPT_AHEAD);
    match (earliest, latest) {
        (Some(earliest), Some(latest)) if (earliest..=latest).contains(&claimed) => claimed,
        _ => now,
    }
}

/// A reqwest error without the URL (it carries the cursor, harmless, but logs stay short).
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_receipt_time_outside_the_clock_window_becomes_the_pull_time() {
        let now = Utc::now();
        let cases = [
            (
                now - chrono::TimeDelta::hours(3),
                true,
                "a backlog of hours: kept",
            ),
            (
                now - chrono::TimeDelta::days(300),
                true,
                "within a year: kept",
            ),
            (
                now + chrono::TimeDelta::minutes(4),
                true,
                "clock skew: kept",
            ),
            (
                now + chrono::TimeDelta::minutes(6),
                false,
                "ahead of the skew",
            ),
            (
                now + chrono::TimeDelta::days(365 * 100),
                false,
                "a century ahead",
            ),
            (
                now - chrono::TimeDelta::days(367),
                false,
                "older than a year",
            ),
            (
                DateTime::<Utc>::MIN_UTC,
                false,
                "the earliest representable time",
            ),
            (
                DateTime::<Utc>::MAX_UTC,
                false,
                "the latest representable time",
            ),
        ];
        for (claimed, kept, why) in cases {
            let expected = if kept { claimed } else { now };
            assert_eq!(receipt_time(claimed, now), expected, "{why}");
        }
    }
}

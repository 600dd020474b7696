//! wardhook: a self-hosted webhook receiver for clinics and other HIPAA-style on-prem sites.
//!
//! AI phone and receptionist systems POST call events to `https://host:8443/hooks/<source>`.
//! One delivery travels through these stages, one module each:
//!
//! 1. [`listener`] — TLS termination (TLS 1.2/1.3, AEAD only), body caps checked while streaming,
//!    per-source rate limits charged only by verified deliveries, a separate per-client budget
//!    and per-minute audit tallies for refused ones, `/healthz` and `/readyz`.
//! 2. [`verify`] — the sender's signature or token, checked in constant time over the raw body;
//!    the only way to obtain a `VerifiedDelivery`.
//! 3. [`normalize`] — the sender's envelope turned into the canonical `wardhook_sdk::Event`; an
//!    event type that is not an identifier sends the delivery to quarantine.
//! 4. [`store`] — dedup + encryption ([`crypto`]) + commit with fsync before the ack, in SQLite
//!    (`store::sqlite`) or PostgreSQL (`store::postgres`); maintenance (`rotate`, `purge`,
//!    `backup`) in bounded chunks beside intake.
//! 5. [`audit`] — a hash-chained record of every state change, in the same transaction; the
//!    JSONL mirror is appended by every process under one file lock.
//! 6. [`dispatch`] — leased jobs run through the handlers (`handlers/*` crates on the SDK) with
//!    retries, dead letters, bounded destination delays and panics contained per attempt.
//!
//! Around them: [`config`] (typed, checked at start with every problem reported), [`secret`]
//! (`env:`/`file:` references, zeroized), [`certs`] and [`dev`] (the first-run setup),
//! [`fsutil`] (every file holding records, payloads or keys is created `0600` through it),
//! [`telemetry`] (operational logs without payload data) and [`cli`] (the binary's edge).
//! Beside the path: [`admin`] (the operator console: API, dashboard, `/metrics` on its own
//! listener) and [`metrics`] (counters and histograms the stages update).
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod certs;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dev;
pub mod dispatch;
pub mod fsutil;
pub mod listener;
pub mod metrics;
pub mod normalize;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod verify;

//! wardhook: a self-hosted webhook receiver for clinics and other HIPAA-style on-prem sites.
//!
//! AI phone and receptionist systems POST call events to `https://host:8443/hooks/<source>`.
//! The map: one delivery's path, top to bottom, and where each part lives. An arrow only goes
//! down; `tests/structure.rs` fails on a change that breaks that.
//!
//! ```text
//! main.rs ─▶ cli/                 one function per command; `serve` and `check-config` call app
//!              │
//!            app/                 wiring: build.rs (settings → each stage's runtime, the same
//!              │                  builders for serve and check-config; the backend opened
//!              │                  through `store::open`), relay.rs (the relay's parts and the
//!              │                  inside node's puller), run.rs, reload.rs (SIGHUP), shutdown.rs
//!   ┌──────────┼──────────────┬───────┐
//! listener/    admin/        relay/    the process's faces: senders (hooks.rs: cap → verify →
//!   │          │              │        normalize → plan → intake → respond; hook_error.rs is
//!   │          │              │        every refusal), operators (console, API, /metrics),
//!   │          │              │        the DMZ relay (seal.rs HPKE, sealer.rs the listener's
//!   │          │              │        handoff, pull_api.rs, puller.rs on the inside node)
//!   │          │              │
//! verify/ · normalize/ · dispatch/     sender schemes → canonical event → route plan (plan.rs),
//!   │                     │            workers (worker.rs), real-time replies, handler registry
//!   │                     └──────────▶ handlers/sdk ◀── handlers/* (one crate per destination)
//!   │      artifacts/                  the built-in `capture` step: recordings and transcripts
//!   │                                  fetched, encrypted as they stream (sealed_file.rs), read
//!   │
//! store/                  the `Storage` trait (backend.rs), its vocabulary (types.rs),
//!   │                     backend-neutral intake preparation (prepare.rs), the caller phone a
//!   │                     handler's output names (caller_phone.rs); the `Console` and
//!   │                     `Maintenance` traits (console.rs, maintenance.rs) with what both
//!   │                     backends share of them (rotation.rs, archive.rs, and
//!   │                     phone_backfill.rs: the caller index of deliveries stored before
//!   │                     it existed, `deliveries index-phones`); answers.rs: the writer's
//!   │                     answers to an HTTP worker's requests in one message per batch
//!   ├── sqlite/           SQLite: one file, a writer thread with group commit; the dedup
//!   │                     and call-ref blind indexes in leveled runs in `<db>.index`, merged
//!   │                     by their own thread (levels.rs, dedup.rs, bloom.rs)
//!   └── postgres/         PostgreSQL (`[storage] backend = "postgres"`, several nodes);
//!                         the same conformance tests run on both
//!   │
//! audit/ · crypto/ · tls.rs · certs.rs · metrics.rs · filter.rs
//!   │
//! config/                 plain typed settings, validated; builds nothing
//!   │
//! secret.rs · fsutil.rs
//! ```
//!
//! The stages, one module each:
//!
//! 1. `listener` — TLS termination (TLS 1.2/1.3, AEAD only, configured by `tls`), body caps
//!    checked while streaming, per-source rate limits charged only by verified deliveries, a
//!    separate per-client budget and per-minute audit tallies for refused ones, `/healthz` and
//!    `/readyz`. It only listens: [`app`] hands it its state.
//! 2. [`verify`] — the sender's signature or token, checked in constant time over the raw body;
//!    the only way to obtain a `VerifiedDelivery`. Builds each source's verifier from its
//!    settings (`verify::build_verifiers`).
//! 3. [`normalize`] — the sender's envelope turned into the canonical `wardhook_sdk::Event`; an
//!    event type that is not an identifier sends the delivery to quarantine.
//! 4. [`dispatch`] (planning) — the routes compiled once (`dispatch::plan::build_plan`);
//!    per event, one call (`Plan::route`) returns the jobs and the real-time route, if any.
//! 5. [`store`] — dedup + encryption ([`crypto`]) + commit with fsync before the ack, in SQLite
//!    (`store::sqlite`) or PostgreSQL (`store::postgres`), both through the backend-neutral
//!    preparation of `store::prepare`;
//!    maintenance (rotation, purge, backup, caller-index backfill) in bounded chunks beside
//!    intake.
//! 6. [`audit`] — a hash-chained record of every state change, in the same transaction; the
//!    JSONL mirror is appended by every process under one file lock. Beside the path,
//!    `audit::forward` sends the records to a syslog collector over TLS (RFC 5424/5425, ATNA
//!    body optional) from a durable cursor the store keeps, started by [`app`] with one call;
//!    `audit export --format fhir` writes them as FHIR `AuditEvent`s (`audit/fhir.rs`).
//! 7. [`dispatch`] (workers) — leased jobs run through the handlers (`handlers/*` crates on the
//!    SDK) with retries, dead letters, bounded destination delays and panics contained per
//!    attempt; real-time routes run inline under their deadline.
//!
//! Beside the path, for clinics whose inside network accepts no inbound connection: `relay`
//! (docs/RELAY.md) — `wardhook relay` runs the listener in the DMZ with a handoff that seals
//! each verified delivery to the inside node's public key and commits it to its own buffer
//! (`store::relay_buffer`, SQLite or PostgreSQL); the inside node's puller fetches the sealed records over mutual TLS
//! and runs them through its normal intake (`listener::ingest_relayed`).
//!
//! Around them: [`config`] (plain settings, checked at start with every problem reported; it
//! imports no stage), [`secret`] (`env:`/`file:` references and the master key, zeroized),
//! [`certs`] (TLS material on disk, and development certificates), `filter` (the route filter
//! language), `tls` (the listeners' rustls configuration), `fsutil` (every file holding
//! records, payloads or keys is created `0600` through it), [`telemetry`] (operational logs
//! without payload data, one cheap access line per request, and the optional OTLP traces of
//! deliveries), `dev` (the first-run setup) and [`cli`] (the binary's edge).
//! [`artifacts`] captures the call recordings and transcripts senders only link to, as the
//! built-in `capture` job of a route (`docs/ARTIFACTS.md`); their rows live in
//! `store::artifacts`; operators read them through `cli::artifacts`, `admin::artifacts`
//! and `emergency-export --with-artifacts`. Beside
//! the path: [`admin`] (the operator console on its own listener: API, dashboard — find a call,
//! bulk actions, per-source and per-handler charts, sign-in by token or through the clinic's
//! OpenID provider — and `/metrics`),
//! [`alerts`] (built-in alert rules evaluated beside the path: they open, show on every console
//! page, are acknowledged and resolve themselves, audited and sent to configured notifiers)
//! and [`metrics`] (counters and histograms the stages update).
//!
//! The public modules are what the binaries, the fuzz targets and the integration tests use;
//! the rest is `pub(crate)`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod alerts;
pub mod app;
pub mod artifacts;
pub mod audit;
pub mod certs;
pub mod cli;
pub mod config;
pub mod crypto;
pub(crate) mod dev;
pub mod dispatch;
pub(crate) mod filter;
pub(crate) mod fsutil;
pub(crate) mod listener;
pub mod metrics;
pub mod normalize;
pub(crate) mod relay;
pub mod secret;
pub mod store;
pub mod telemetry;
pub(crate) mod tls;
pub mod verify;

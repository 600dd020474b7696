//! The contract between wardhook and its handlers.
//!
//! A handler is the last stage of a delivery's path: wardhook has already verified, stored and
//! deduplicated the event, and hands each handler the same canonical [`Event`] whatever the
//! sender was. A CRM adapter written against this crate therefore serves every provider.
//!
//! What is here, in the order a handler author meets it:
//! - [`Event`] / [`Caller`]: the canonical event.
//! - [`Handler`]: two methods; [`Context`] (idempotency key, attempt, deadline, earlier
//!   handlers' outputs) in, [`Outcome`] or [`HandlerError`] (retryable vs permanent, decided
//!   once, with [`HandlerError::from_http_status`]) out.
//! - [`build`]: the typed config, the [`HandlerFactory`] trait and key-path problems;
//!   [`secret`]: `env:`/`file:` references.
//! - [`template`]: the one template engine for URLs, bodies, arguments and route filters.
//! - [`limits`]: `Retry-After` and `expires_in` parsed and clamped before they meet a clock.
//! - [`artifacts`]: captured recordings and transcripts by reference, and a decrypted stream
//!   on request.
//! - [`phi`]: minimum necessary — which fields are PHI and what a `phi = "none"` handler sees.
//! - `testing` (feature `testing`): events from fixtures and one-call handler runs for tests.
//!
//! This crate is deliberately small and depends on nothing of wardhook itself, so that a handler
//! author can build and test an adapter without the server.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use async_trait::async_trait;
pub use chrono;
pub use serde_json;
pub use toml;

pub mod artifacts;
pub mod build;
mod event;
mod handler;
#[cfg(feature = "http")]
pub mod http;
pub mod limits;
pub mod phi;
pub mod secret;
pub mod template;
#[cfg(feature = "testing")]
pub mod testing;

pub use build::{build_handler, BuildContext, ConfigProblem, HandlerFactory, Problems};
pub use event::{Caller, Event};
pub use handler::{idempotency_key, AppData, Context, Handler, HandlerError, Outcome};
pub use limits::parse_retry_after;
pub use phi::PhiLevel;
pub use secret::{SecretRef, SecretValue};

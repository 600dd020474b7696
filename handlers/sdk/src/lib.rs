//! The contract between wardhook and its handlers.
//!
//! A handler is the last stage of a delivery's path: wardhook has already verified, stored and
//! deduplicated the event, and hands each handler the same canonical [`Event`] whatever the
//! sender was. A CRM adapter written against this crate therefore serves every provider.
//!
//! This crate is deliberately small and depends on nothing of wardhook itself, so that a handler
//! author can build and test an adapter without the server.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use async_trait::async_trait;

mod event;
mod handler;

pub use event::{Caller, Event};
pub use handler::{Context, Handler, HandlerError, Outcome};

//! wardhook: a self-hosted webhook receiver for clinics.
#![forbid(unsafe_code)]

pub mod crypto;
pub mod secret;
pub mod verify;

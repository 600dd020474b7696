//! Call recordings and transcripts the senders only link to, captured into the clinic's own
//! storage: downloaded, encrypted on the fly, kept under the same retention and audit as the
//! deliveries that named them. See `docs/ARTIFACTS.md`.

pub mod capture;
pub mod read;
pub mod sealed_file;

pub use capture::{Capture, CaptureSetupError};
pub use read::{open_artifact, ReadError, StoreArtifactSource};

//! The application's wiring: settings → each stage's runtime, then run, reload and stop.
//!
//! - [`build`]: every stage builds its own runtime from its settings (`verify` the verifiers,
//!   `dispatch` the plan and handlers, `tls` the server configuration); `check-config` calls
//!   the same builders as `serve`.

pub mod build;

pub use build::{build_stages, startup_warnings, Stages};

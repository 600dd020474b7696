//! `wardhook audit verify|search|export`: the command implementations, for `src/cli/mod.rs` to
//! call with parsed arguments, an open database, the keyring and stdout/stderr.
//!
//! The logic lives in [`crate::audit::commands`] (next to the code and tests it depends on);
//! this module is the CLI's door to it. Each function writes human output to the `Write` it is
//! given and returns a typed result; a failed `verify` is
//! [`crate::audit::AuditError::VerifyFailed`], whose message names the first bad sequence number
//! (map it to its own exit code).

pub use crate::audit::commands::{
    checkpoint_path, export, parse_time, search, verify, CounterProgress, SearchArgs,
    VerifySummary, CHECKPOINT_FILE,
};
pub use crate::audit::ExportFormat;

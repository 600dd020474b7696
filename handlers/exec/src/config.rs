//! The exec handler's `[[handlers]]` keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `kind = "exec"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The program to run, absolute or relative to the config file's folder. Run directly,
    /// never through a shell.
    pub program: PathBuf,
    /// Argument templates (values are inserted as they are: each is one argument, so no
    /// quoting is needed and none can split it).
    #[serde(default)]
    pub args: Vec<String>,
    /// Fixed environment variables for the program.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of wardhook's own environment variables to pass through (e.g. `PATH`, `LANG`).
    /// Everything else is cleared.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Environment variables holding secrets: name → `env:`/`file:` reference.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    /// The program's working directory; the config file's folder by default.
    pub working_dir: Option<PathBuf>,
    /// Seconds before the program and everything it started are killed; 30 by default.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    30
}

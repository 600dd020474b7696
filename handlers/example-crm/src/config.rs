//! `kind = "example-crm"` keys.

use serde::Deserialize;

/// The adapter's config: everything except `name`, `kind`, `phi`, `baa`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleCrmConfig {
    /// The CRM's API root, e.g. `https://crm.internal/api`.
    pub base_url: String,
    /// Hosts besides `base_url`'s the adapter may reach, and private ranges its names may
    /// resolve to (`["10.0.0.0/8"]`).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// `env:`/`file:` reference to the API key.
    pub api_key: String,
    /// Seconds per request; 10 by default.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    10
}

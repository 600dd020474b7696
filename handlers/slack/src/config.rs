//! `kind = "slack"` keys.

use serde::Deserialize;

/// The adapter's config: the `[[handlers]]` table minus `name`, `kind`, `phi`, `baa`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// `env:`/`file:` reference to the incoming-webhook URL
    /// (`https://hooks.slack.com/services/T…/B…/…`): the URL itself is the credential.
    pub webhook_url: String,
    /// The admin listener's external URL (`https://wardhook.clinic.internal:9443`); each
    /// message links to `<admin_url>/deliveries/<delivery_id>`. Without it the message names
    /// the delivery id only.
    #[serde(default)]
    pub admin_url: Option<String>,
    /// Send only non-identifying fields (event type, call id, duration, status, the link), so
    /// the handler works with `phi = "none"`: a Slack workspace is not a HIPAA system. On by
    /// default; turning it off sends caller and summary and requires `phi = "full"` +
    /// `baa = true`.
    #[serde(default = "default_true")]
    pub minimal_phi: bool,
    /// Hosts besides the webhook URL's this adapter may reach, and the private ranges its
    /// names may resolve to: host names, IP addresses or CIDR ranges.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// The message title (a template); `New call: {{ event_type }}` by default.
    #[serde(default = "default_title")]
    pub title: String,
    /// Seconds per request; 10 by default.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_true() -> bool {
    true
}

fn default_title() -> String {
    "New call: {{ event_type }}".to_owned()
}

fn default_timeout() -> u64 {
    10
}

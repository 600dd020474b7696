//! `kind = "hubspot"` keys.

use std::collections::BTreeMap;

use serde::Deserialize;

/// HubSpot's public API root.
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";

/// The adapter's config: the `[[handlers]]` table minus `name`, `kind`, `phi`, `baa`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpotConfig {
    /// `env:`/`file:` reference to a private-app access token (scopes
    /// `crm.objects.contacts.read`, `crm.objects.contacts.write`).
    pub token: String,
    /// API root; only tests and proxies change it. `https://` (plain `http://` only to a
    /// loopback host).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Hosts besides `base_url`'s this adapter may reach, and the private ranges its names may
    /// resolve to (`["10.0.0.0/8"]` for an API proxy inside the clinic): host names, IP addresses
    /// or CIDR ranges.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Extra or overriding contact properties: HubSpot property name → template
    /// (`service_type = "{{ data.custom_fields.service_type | default('') }}"`). A property
    /// that renders empty is left out, so an existing value is never blanked; set a default
    /// property (`company = ""`) to drop it.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// The value written to the lead-source property; `AI Receptionist` by default.
    #[serde(default = "default_lead_source")]
    pub lead_source: String,
    /// The property that gets [`Self::lead_source`]; `lead_source` by default (a custom
    /// property in most portals; set `""` to skip it).
    #[serde(default = "default_lead_source_property")]
    pub lead_source_property: String,
    /// Attach the AI summary (`data.ai_summary`, else `data.summary`) to the contact as a note.
    #[serde(default = "default_true")]
    pub note: bool,
    /// Seconds per request; 10 by default.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.to_owned()
}

fn default_lead_source() -> String {
    "AI Receptionist".to_owned()
}

fn default_lead_source_property() -> String {
    "lead_source".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_timeout() -> u64 {
    10
}

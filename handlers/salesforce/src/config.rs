//! `kind = "salesforce"` keys.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The adapter's config: the `[[handlers]]` table minus `name`, `kind`, `phi`, `baa`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConfig {
    /// The org's own URL (`https://clinic.my.salesforce.com`), not `login.salesforce.com`.
    pub instance_url: String,
    /// REST API version, `v60.0` by default.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Hosts besides `instance_url`'s and `auth.token_url`'s this adapter may reach, and the
    /// private ranges its names may resolve to: host names, IP addresses or CIDR ranges.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// How wardhook gets an access token.
    pub auth: AuthConfig,
    /// `LastName` for a new Lead when the caller gave no name (Salesforce requires one).
    #[serde(default = "default_last_name")]
    pub fallback_last_name: String,
    /// `Company` for a new Lead when the caller named none (Salesforce requires one).
    #[serde(default = "default_company")]
    pub fallback_company: String,
    /// `LeadSource`; `AI Receptionist` by default, `""` to leave it out.
    #[serde(default = "default_lead_source")]
    pub lead_source: String,
    /// Extra or overriding Lead fields: API name → template
    /// (`Service_Type__c = "{{ data.custom_fields.service_type | default('') }}"`). A field
    /// that renders empty is left out.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Seconds per request (a token fetch included); 15 by default.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// OAuth 2.0 flows of a Salesforce connected app.
#[derive(Debug, Deserialize)]
#[serde(tag = "flow", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// Client-credentials flow (the connected app runs as its configured integration user).
    ClientCredentials {
        /// `https://<instance>.my.salesforce.com/services/oauth2/token`.
        token_url: String,
        /// The connected app's consumer key.
        client_id: String,
        /// `env:`/`file:` reference to the consumer secret.
        client_secret: String,
    },
    /// Refresh-token flow (a user authorised the app once; the refresh token is long-lived).
    RefreshToken {
        /// `https://login.salesforce.com/services/oauth2/token` or the org's own.
        token_url: String,
        /// The connected app's consumer key.
        client_id: String,
        /// `env:`/`file:` reference to the consumer secret, when the app requires it.
        client_secret: Option<String>,
        /// `env:`/`file:` reference to the refresh token.
        refresh_token: String,
    },
}

fn default_api_version() -> String {
    "v60.0".to_owned()
}

fn default_last_name() -> String {
    "Unknown caller".to_owned()
}

fn default_company() -> String {
    "Not provided".to_owned()
}

fn default_lead_source() -> String {
    "AI Receptionist".to_owned()
}

fn default_timeout() -> u64 {
    15
}

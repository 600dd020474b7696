//! `kind = "email"` keys.

use std::path::PathBuf;

use serde::Deserialize;

/// The adapter's config: the `[[handlers]]` table minus `name`, `kind`, `phi`, `baa`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server (the name its certificate is issued for).
    pub host: String,
    /// 587 for `starttls`, 465 for `tls`, 25 for `plain` unless set.
    #[serde(default)]
    pub port: Option<u16>,
    /// Transport security; `starttls` by default.
    #[serde(default)]
    pub security: Security,
    /// SMTP AUTH user name; needs `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// `env:`/`file:` reference to the SMTP password.
    #[serde(default)]
    pub password: Option<String>,
    /// The sender, `Front desk <frontdesk@clinic.example>`.
    pub from: String,
    /// Recipients, each a template rendering one address (`{{ caller.email }}`,
    /// `oncall@clinic.example`). An entry that renders empty is skipped
    /// (`{{ caller.email | default('') }}`); a message with no recipient at all fails
    /// permanently.
    #[serde(default)]
    pub to: Vec<String>,
    /// Copy recipients, templates like `to`.
    #[serde(default)]
    pub cc: Vec<String>,
    /// Blind-copy recipients, templates like `to`.
    #[serde(default)]
    pub bcc: Vec<String>,
    /// `Reply-To`, a template rendering one address.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The subject template (line breaks are folded into spaces).
    pub subject: String,
    /// The plain-text body template.
    pub text: String,
    /// An optional HTML body template; values are HTML-escaped. With it the message is
    /// `multipart/alternative` (text + HTML).
    #[serde(default)]
    pub html: Option<String>,
    /// A PEM file of extra CA certificates to trust (an internal relay); the public roots are
    /// always trusted and verification is always on.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Seconds for the whole SMTP conversation; 30 by default.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Attach the artifacts the route's `capture` step stored for the delivery (call
    /// recordings, transcripts), each as a file named by its id (`art_….wav`). Off by default:
    /// a recording is PHI, so like a body naming patient data it needs `phi = "full"` (and with
    /// it `baa = true`), and mail leaves the clinic.
    #[serde(default)]
    pub attach_artifacts: bool,
    /// The largest artifact attached, in bytes: 10 MiB by default, at most 50 MiB (mail
    /// servers refuse larger messages). A larger one fails the attempt permanently, naming
    /// this key; the mail is never sent without what it was configured to carry.
    #[serde(default = "default_max_attachment_bytes")]
    pub max_attachment_bytes: u64,
}

/// The most `max_attachment_bytes` may be: base64 grows it by a third, and common mail
/// servers accept 25 to 100 MB per message.
pub const MAX_ATTACHMENT_BYTES: u64 = 50 * 1024 * 1024;

fn default_max_attachment_bytes() -> u64 {
    10 * 1024 * 1024
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connect, then STARTTLS, which is required: a server that does not offer it is an
    /// error, never a silent downgrade.
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// No encryption: only to a loopback host (a local relay that does TLS onward).
    Plain,
}

impl Security {
    /// The usual port.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Tls => 465,
            Self::Plain => 25,
        }
    }
}

fn default_timeout() -> u64 {
    30
}

//! `kind = "hl7v2"` keys.

use std::path::PathBuf;

use serde::Deserialize;

/// The adapter's config: the `[[handlers]]` table minus `name`, `kind`, `phi`, `baa`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7Config {
    /// The receiver (an interface engine, the EHR's HL7 listener): the name its certificate is
    /// issued for, or an IP address.
    pub host: String,
    /// The MLLP port; 2575 (IANA's `hl7` port) by default.
    #[serde(default = "default_port")]
    pub port: u16,
    /// TLS (default). `false` only for an IP address in a private range (10/8, 172.16/12,
    /// 192.168/16, fc00::/7) or loopback, and then with a warning (at start-up, from
    /// `check-config`, and at the first connection).
    #[serde(default = "default_true")]
    pub tls: bool,
    /// A PEM file of CA certificates to trust besides the public roots (an internal CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A PEM file with our client certificate chain, for receivers that require mutual TLS.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// `file:`/`env:` reference to the client certificate's private key (PEM).
    #[serde(default)]
    pub client_key: Option<String>,
    /// `MDM^T02` (default), `SIU^S12` or `ADT^A08`: the message type and its default segments.
    #[serde(default = "default_message")]
    pub message: String,
    /// `MDM^T02` only: add the transcript as a second `OBX`. PHI: needs `phi = "full"`.
    #[serde(default)]
    pub transcript: bool,
    /// Body segment templates (after `MSH` and `EVN`), replacing the type's defaults.
    #[serde(default)]
    pub segments: Option<Vec<String>>,
    /// `MSH-3`; `WARDHOOK` by default.
    #[serde(default = "default_sending_application")]
    pub sending_application: String,
    /// `MSH-4`.
    #[serde(default)]
    pub sending_facility: String,
    /// `MSH-5`.
    #[serde(default)]
    pub receiving_application: String,
    /// `MSH-6`.
    #[serde(default)]
    pub receiving_facility: String,
    /// `MSH-11`: `P` (production, default), `T` (training) or `D` (debugging).
    #[serde(default = "default_processing_id")]
    pub processing_id: String,
    /// `original` (default: `MSH-15`/`16` empty, answered `AA`/`AE`/`AR`) or `enhanced`
    /// (`MSH-15 = AL`, `MSH-16 = NE`: a commit ACK `CA`/`CE`/`CR`).
    #[serde(default)]
    pub ack_mode: AckMode,
    /// What `MSH-10` carries: `key` (default), the idempotency key `<delivery id>:<handler>`;
    /// `short`, its SHA-256 as 20 hex characters, for receivers that hold v2.5.1's 20-character
    /// limit.
    #[serde(default)]
    pub control_id: ControlId,
    /// Seconds for TCP connect and the TLS handshake; 10 by default, 1 to 120.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds from sending until the whole ACK has arrived; 30 by default, 1 to 300.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_secs: u64,
    /// Seconds an idle connection is kept for the next message; 60 by default, 0 (a new
    /// connection per message) to 3600.
    #[serde(default = "default_idle")]
    pub idle_secs: u64,
    /// Idle connections kept; 2 by default, 0 to 16.
    #[serde(default = "default_max_idle")]
    pub max_idle_connections: usize,
}

/// The acknowledgement mode asked for in `MSH-15`/`MSH-16`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// Original mode: one application ACK (`AA`/`AE`/`AR`).
    #[default]
    Original,
    /// Enhanced mode, commit ACK only (`CA`/`CE`/`CR`).
    Enhanced,
}

/// The form of `MSH-10`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlId {
    /// The idempotency key itself.
    #[default]
    Key,
    /// 20 hex characters of the key's SHA-256.
    Short,
}

fn default_port() -> u16 {
    2575
}

fn default_true() -> bool {
    true
}

fn default_message() -> String {
    "MDM^T02".to_owned()
}

fn default_sending_application() -> String {
    "WARDHOOK".to_owned()
}

fn default_processing_id() -> String {
    "P".to_owned()
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_ack_timeout() -> u64 {
    30
}

fn default_idle() -> u64 {
    60
}

fn default_max_idle() -> usize {
    2
}

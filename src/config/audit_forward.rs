//! `[audit_forward]`: live forwarding of audit records to a syslog collector (a SIEM or an IHE
//! ATNA audit record repository) over TLS, RFC 5424 messages in RFC 5425 framing.
//!
//! Checked like every section: every problem with its key path, all at once. TLS is not
//! optional (audit records leave the host), so there is no plaintext setting; the CA file, and
//! the client certificate and key when given, must be readable here, and `app::build` loads them
//! into a rustls configuration at start-up and in `check-config`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// `[audit_forward]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditForwardSection {
    /// Forward at all (default true once the section exists): lets a site pause forwarding
    /// without deleting the section. The cursor is kept meanwhile.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The collector's TLS syslog listener, `host:port` (6514 is the registered port).
    pub address: String,
    /// The name the collector's certificate must carry (default: the host of `address`).
    pub server_name: Option<String>,
    /// PEM CA certificate(s) the collector's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM client certificate chain, for collectors that require mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert` (0600).
    pub client_key: Option<PathBuf>,
    /// `rfc5424` (JSON body, fields as structured data) or `atna` (DICOM PS3.15 A.5 XML body).
    #[serde(default = "default_format")]
    pub format: String,
    /// The cursor's name: forwarding progress is kept per name (and per node on PostgreSQL),
    /// so pointing at a new collector under a new name starts it from `start_at`.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where a new cursor starts: `oldest` (every record still held) or `next` (records written
    /// from now on).
    #[serde(default = "default_start_at")]
    pub start_at: String,
    /// The syslog HOSTNAME field (default: this host's name).
    pub hostname: Option<String>,
    /// The syslog APP-NAME field.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// Syslog facility: a name (`authpriv`, `audit`, `local0`…) or number 0–23. IHE ATNA
    /// repositories expect `authpriv` (10), the default.
    #[serde(default = "default_facility")]
    pub facility: String,
    /// The private enterprise number in the structured-data ids (`wardhook@<pen>`). The
    /// default, 32473, is the number RFC 5612 reserves for documentation: use your own.
    #[serde(default = "default_enterprise")]
    pub enterprise_number: u32,
    /// Most records sent on one connection before it is closed and the batch confirmed.
    #[serde(default = "default_batch")]
    pub batch_max: usize,
    /// How often to look for new records when there is nothing to send.
    #[serde(default = "default_poll")]
    pub poll_interval: String,
    /// Time allowed to connect and complete the TLS handshake.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// Time allowed for sending one batch and for the collector to confirm it.
    #[serde(default = "default_io_timeout")]
    pub io_timeout: String,
    /// Longest wait between retries while the collector is unreachable.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: String,
}

fn yes() -> bool {
    true
}
fn default_format() -> String {
    "rfc5424".into()
}
fn default_name() -> String {
    "syslog".into()
}
fn default_start_at() -> String {
    "oldest".into()
}
fn default_app_name() -> String {
    "wardhook".into()
}
fn default_facility() -> String {
    "authpriv".into()
}
fn default_enterprise() -> u32 {
    32473
}
fn default_batch() -> usize {
    500
}
fn default_poll() -> String {
    "1s".into()
}
fn default_connect_timeout() -> String {
    "10s".into()
}
fn default_io_timeout() -> String {
    "30s".into()
}
fn default_max_backoff() -> String {
    "60s".into()
}

/// The body of each syslog message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardFormat {
    /// The record as its JSONL mirror line (verifiable with the master key); every field also
    /// as RFC 5424 structured data.
    Rfc5424,
    /// A DICOM PS3.15 A.5 audit message (the IHE ATNA format), with MSGID `IHE+RFC-3881`.
    Atna,
}

/// Where a cursor that does not exist yet starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Every record the chain still holds.
    Oldest,
    /// After the chain's head when forwarding starts.
    Next,
}

/// `[audit_forward]`, checked.
#[derive(Debug, Clone)]
pub struct AuditForwardSettings {
    /// The collector's host (DNS name or IP address).
    pub host: String,
    /// The collector's port.
    pub port: u16,
    /// The name its certificate must carry.
    pub server_name: String,
    /// PEM CA file.
    pub ca_file: PathBuf,
    /// Client certificate chain and key, both or neither.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    /// Message format.
    pub format: ForwardFormat,
    /// Cursor name.
    pub name: String,
    /// Where a new cursor starts.
    pub start_at: StartAt,
    /// Syslog HOSTNAME.
    pub hostname: String,
    /// Syslog APP-NAME.
    pub app_name: String,
    /// Facility number, 0–23.
    pub facility: u8,
    /// Private enterprise number for structured-data ids.
    pub enterprise_number: u32,
    /// Records per connection, at most.
    pub batch_max: usize,
    /// Idle poll interval.
    pub poll_interval: Duration,
    /// Connect + handshake limit.
    pub connect_timeout: Duration,
    /// Send + confirm limit.
    pub io_timeout: Duration,
    /// Longest retry wait.
    pub max_backoff: Duration,
}

/// Most records in one batch: bounds memory and the time one confirmation may take.
pub const MAX_BATCH: usize = 10_000;

const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("audit", 13),
    ("alert", 14),
    ("clock", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

/// RFC 5424 header fields are printable US-ASCII without spaces, each with a maximum length.
fn is_header_field(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b))
}

/// Split `host:port` (`[v6]:port` for IPv6).
fn split_address(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    (!host.is_empty() && !host.contains(['/', ' ', '@'])).then(|| (host.to_owned(), port))
}

fn this_host() -> String {
    hostname_text().unwrap_or_else(|| "wardhook".to_owned())
}

/// The kernel's host name (`/proc/sys/kernel/hostname`), if it is a valid syslog HOSTNAME.
fn hostname_text() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_owned();
    is_header_field(&name, 255).then_some(name)
}

/// Check `[audit_forward]`; relative paths are taken from `base`. `push(path, message)`
/// records each problem. `None` when the section is disabled or has problems.
pub(super) fn check(
    section: &AuditForwardSection,
    base: &Path,
    push: &mut dyn FnMut(String, String),
) -> Option<AuditForwardSettings> {
    let mut ok = true;
    let mut bad = |key: &str, msg: String| {
        push(format!("audit_forward.{key}"), msg);
        ok = false;
    };
    let full = |p: &Path| {
        if p.is_relative() {
            base.join(p)
        } else {
            p.to_owned()
        }
    };
    let address = split_address(&section.address);
    if address.is_none() {
        bad(
            "address",
            "must be host:port, e.g. \"siem.example.org:6514\"".into(),
        );
    }
    let ca_file = full(&section.ca_file);
    if let Err(e) = std::fs::metadata(&ca_file) {
        bad("ca_file", format!("cannot read {}: {e}", ca_file.display()));
    }
    let client_auth = match (&section.client_cert, &section.client_key) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            let (c, k) = (full(c), full(k));
            for (key, p) in [("client_cert", &c), ("client_key", &k)] {
                if let Err(e) = std::fs::metadata(p) {
                    bad(key, format!("cannot read {}: {e}", p.display()));
                }
            }
            Some((c, k))
        }
        (Some(_), None) => {
            bad("client_key", "client_cert needs client_key".into());
            None
        }
        (None, Some(_)) => {
            bad("client_cert", "client_key needs client_cert".into());
            None
        }
    };
    let format = match section.format.as_str() {
        "rfc5424" => ForwardFormat::Rfc5424,
        "atna" => ForwardFormat::Atna,
        _ => {
            bad("format", "must be \"rfc5424\" or \"atna\"".into());
            ForwardFormat::Rfc5424
        }
    };
    let start_at = match section.start_at.as_str() {
        "oldest" => StartAt::Oldest,
        "next" => StartAt::Next,
        _ => {
            bad("start_at", "must be \"oldest\" or \"next\"".into());
            StartAt::Oldest
        }
    };
    // The cursor name is stored as a key and shown in logs and metrics: an identifier.
    let name_ok = section.name.len() <= 64
        && section.name.starts_with(|c: char| c.is_ascii_alphabetic())
        && section
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !name_ok {
        bad(
            "name",
            "must start with a letter, then letters, digits, _ - . (at most 64)".into(),
        );
    }
    let hostname = section.hostname.clone().unwrap_or_else(this_host);
    if !is_header_field(&hostname, 255) {
        bad(
            "hostname",
            "must be printable ASCII without spaces, at most 255 bytes".into(),
        );
    }
    if !is_header_field(&section.app_name, 48) {
        bad(
            "app_name",
            "must be printable ASCII without spaces, at most 48 bytes".into(),
        );
    }
    let facility = FACILITIES
        .iter()
        .find(|(n, _)| *n == section.facility)
        .map(|(_, v)| *v)
        .or_else(|| section.facility.parse::<u8>().ok().filter(|v| *v <= 23));
    if facility.is_none() {
        bad(
            "facility",
            "must be a syslog facility name (authpriv, audit, local0, …) or 0–23".into(),
        );
    }
    if section.enterprise_number == 0 {
        bad("enterprise_number", "must be a positive number".into());
    }
    if section.batch_max == 0 || section.batch_max > MAX_BATCH {
        bad("batch_max", format!("must be between 1 and {MAX_BATCH}"));
    }
    let mut duration =
        |key: &str, text: &str, min: Duration, max: Duration| match super::parse_duration(text) {
            Ok(d) if d >= min && d <= max => Some(d),
            Ok(_) => {
                bad(
                    key,
                    format!(
                        "must be between {}ms and {}s",
                        min.as_millis(),
                        max.as_secs()
                    ),
                );
                None
            }
            Err(e) => {
                bad(key, e);
                None
            }
        };
    let ms = Duration::from_millis;
    let s = Duration::from_secs;
    let poll_interval = duration("poll_interval", &section.poll_interval, ms(50), s(3600));
    let connect_timeout = duration("connect_timeout", &section.connect_timeout, ms(100), s(300));
    let io_timeout = duration("io_timeout", &section.io_timeout, ms(100), s(3600));
    let max_backoff = duration("max_backoff", &section.max_backoff, ms(100), s(86_400));
    if !ok || !section.enabled {
        return None;
    }
    let (host, port) = address?;
    Some(AuditForwardSettings {
        server_name: section.server_name.clone().unwrap_or_else(|| host.clone()),
        host,
        port,
        ca_file,
        client_auth,
        format,
        name: section.name.clone(),
        start_at,
        hostname,
        app_name: section.app_name.clone(),
        facility: facility?,
        enterprise_number: section.enterprise_number,
        batch_max: section.batch_max,
        poll_interval: poll_interval?,
        connect_timeout: connect_timeout?,
        io_timeout: io_timeout?,
        max_backoff: max_backoff?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(extra: &str) -> AuditForwardSection {
        toml::from_str(&format!(
            "address = \"127.0.0.1:6514\"\nca_file = \"Cargo.toml\"\n{extra}"
        ))
        .expect("section parses")
    }

    fn problems(extra: &str) -> Vec<String> {
        let mut found = Vec::new();
        check(&section(extra), Path::new("."), &mut |p, m| {
            found.push(format!("{p}: {m}"))
        });
        found
    }

    #[test]
    fn defaults_are_an_authpriv_rfc5424_forwarder_from_the_oldest_record() {
        let mut none = Vec::new();
        let s = check(&section(""), Path::new("."), &mut |p, m| none.push((p, m))).expect("valid");
        assert!(none.is_empty(), "{none:?}");
        assert_eq!((s.host.as_str(), s.port), ("127.0.0.1", 6514));
        assert_eq!(s.server_name, "127.0.0.1");
        assert_eq!(s.format, ForwardFormat::Rfc5424);
        assert_eq!(s.facility, 10);
        assert_eq!(s.start_at, StartAt::Oldest);
        assert_eq!(s.batch_max, 500);
    }

    #[test]
    fn every_bad_key_is_reported_with_its_path_at_once() {
        let found = problems(
            r#"format = "cef"
start_at = "yesterday"
name = "a b"
facility = "local9"
batch_max = 0
poll_interval = "1"
client_cert = "Cargo.toml"
hostname = "has space"
"#,
        );
        for key in [
            "audit_forward.format",
            "audit_forward.start_at",
            "audit_forward.name",
            "audit_forward.facility",
            "audit_forward.batch_max",
            "audit_forward.poll_interval",
            "audit_forward.client_key",
            "audit_forward.hostname",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(key)),
                "{key} not reported in {found:?}"
            );
        }
    }

    #[test]
    fn addresses_need_a_host_and_a_nonzero_port() {
        for (address, ok) in [
            ("siem.example.org:6514", true),
            ("[::1]:6514", true),
            ("siem.example.org", false),
            ("siem.example.org:0", false),
            (":6514", false),
            ("tcp://siem:6514", false),
        ] {
            assert_eq!(split_address(address).is_some(), ok, "{address}");
        }
        assert_eq!(split_address("[::1]:6514"), Some(("::1".into(), 6514)));
    }

    #[test]
    fn a_missing_ca_file_is_a_problem() {
        let s: AuditForwardSection =
            toml::from_str("address = \"h:1\"\nca_file = \"/nonexistent/ca.pem\"").expect("toml");
        let mut found = Vec::new();
        assert!(check(&s, Path::new("."), &mut |p, m| found
            .push(format!("{p}: {m}")))
        .is_none());
        assert!(
            found[0].starts_with("audit_forward.ca_file: cannot read"),
            "{found:?}"
        );
    }
}

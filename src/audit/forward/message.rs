//! One audit record as an RFC 5424 syslog message, and RFC 5425 octet-counting framing.
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [wardhook@PEN seq=… mac=… …][wardhookDetail@PEN …] BOM MSG
//! ```
//!
//! Every record field is a structured-data parameter, so a SIEM indexes them without parsing the
//! body; `seq`, `prev_mac` and `mac` (and `node` on PostgreSQL, whose chains are per node) let
//! the collector check that it holds every record, in order, unaltered. The body is the record's
//! JSONL mirror line (rfc5424 format; verifiable with the master key) or a DICOM audit message
//! (atna format). Nothing here adds text of its own beyond fixed names: every value comes from
//! the stored record, whose fields cannot hold PHI (`record.rs`).

use super::atna;
use crate::audit::mirror::JsonLine;
use crate::audit::StoredRecord;
use crate::config::audit_forward::{AuditForwardSettings, ForwardFormat};

/// UTF-8 byte order mark: RFC 5424 §6.4 marks a UTF-8 MSG with it.
const BOM: &str = "\u{feff}";

/// Syslog severities used: notice for what went as intended, warning for failures and refusals.
fn severity(outcome: &str) -> u8 {
    match outcome {
        "success" => 5,
        _ => 4,
    }
}

/// Escape an SD-PARAM value (RFC 5424 §6.3.3: `"`, `\` and `]`).
fn sd_escape(out: &mut String, v: &str) {
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

fn sd_param(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    sd_escape(out, value);
    out.push('"');
}

/// An SD-NAME (PARAM-NAME) is at most 32 printable ASCII characters without `=`, space, `]`,
/// `"`. Detail keys come from a closed list of snake_case names, so this only guards against a
/// future key breaking the syntax.
fn is_sd_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| (33..=126).contains(&b) && !matches!(b, b'=' | b']' | b'"'))
}

/// The structured data of `r`: the record element and, when it has any, the detail element.
pub(crate) fn structured_data(
    r: &StoredRecord,
    node: Option<&str>,
    enterprise_number: u32,
) -> String {
    let mut sd = format!("[wardhook@{enterprise_number}");
    sd_param(&mut sd, "seq", &r.seq.to_string());
    if let Some(node) = node {
        sd_param(&mut sd, "node", node);
    }
    sd_param(&mut sd, "ts", &r.ts);
    sd_param(&mut sd, "actor", &r.actor);
    sd_param(&mut sd, "action", &r.action);
    sd_param(&mut sd, "outcome", &r.outcome);
    for (name, value) in [
        ("delivery_id", &r.delivery_id),
        ("source", &r.source),
        ("call_ref", &r.call_ref),
        ("remote_addr", &r.remote_addr),
    ] {
        if let Some(v) = value {
            sd_param(&mut sd, name, v);
        }
    }
    sd_param(&mut sd, "prev_mac", &r.prev_mac);
    sd_param(&mut sd, "mac", &r.mac);
    sd.push(']');
    let detail: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&r.detail).unwrap_or_default();
    if !detail.is_empty() {
        sd.push_str(&format!("[wardhookDetail@{enterprise_number}"));
        for (k, v) in &detail {
            if !is_sd_name(k) {
                continue;
            }
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            sd_param(&mut sd, k, &text);
        }
        sd.push(']');
    }
    sd
}

/// `r` as one RFC 5424 message (without framing).
pub(crate) fn render(
    r: &StoredRecord,
    node: Option<&str>,
    settings: &AuditForwardSettings,
) -> String {
    let pri = u16::from(settings.facility) * 8 + u16::from(severity(&r.outcome));
    let (msgid, body) = match settings.format {
        // Action names are at most 32 characters (the MSGID limit), snake_case.
        ForwardFormat::Rfc5424 => (r.action.as_str(), JsonLine::render_on(node, r)),
        ForwardFormat::Atna => ("IHE+RFC-3881", atna::render(r, node, &settings.hostname)),
    };
    let msgid = if msgid.len() <= 32 { msgid } else { "-" };
    format!(
        "<{pri}>1 {ts} {host} {app} - {msgid} {sd} {BOM}{body}",
        ts = r.ts,
        host = settings.hostname,
        app = settings.app_name,
        sd = structured_data(r, node, settings.enterprise_number),
    )
}

/// RFC 5425 §4.3 octet counting: `MSG-LEN SP SYSLOG-MSG`, the length in bytes.
pub(crate) fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::audit_forward::StartAt;
    use std::time::Duration;

    pub(crate) fn settings(format: ForwardFormat) -> AuditForwardSettings {
        AuditForwardSettings {
            host: "127.0.0.1".into(),
            port: 6514,
            server_name: "localhost".into(),
            ca_file: "ca.pem".into(),
            client_auth: None,
            format,
            name: "syslog".into(),
            start_at: StartAt::Oldest,
            hostname: "gw1".into(),
            app_name: "wardhook".into(),
            facility: 10,
            enterprise_number: 32473,
            batch_max: 10,
            poll_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
        }
    }

    pub(crate) fn record() -> StoredRecord {
        StoredRecord {
            seq: 42,
            ts: "2026-12-03T10:00:00.123456Z".into(),
            actor: "sender:nextphone".into(),
            action: "delivery_rejected".into(),
            outcome: "denied".into(),
            delivery_id: None,
            source: Some("nextphone".into()),
            call_ref: Some("ab".repeat(32)),
            remote_addr: Some("203.0.113.7".into()),
            detail: r#"{"count":3,"reason":"bad_signature"}"#.into(),
            prev_mac: "0".repeat(64),
            mac: "f".repeat(64),
        }
    }

    #[test]
    fn a_record_becomes_an_rfc5424_message_with_every_field_as_structured_data() {
        let m = render(&record(), None, &settings(ForwardFormat::Rfc5424));
        // authpriv (10) * 8 + warning (4)
        assert!(
            m.starts_with("<84>1 2026-12-03T10:00:00.123456Z gw1 wardhook - delivery_rejected [wardhook@32473 seq=\"42\" ts="),
            "{m}"
        );
        for part in [
            "actor=\"sender:nextphone\"",
            "outcome=\"denied\"",
            "source=\"nextphone\"",
            "remote_addr=\"203.0.113.7\"",
            &format!("mac=\"{}\"", "f".repeat(64)),
            &format!("prev_mac=\"{}\"", "0".repeat(64)),
            "[wardhookDetail@32473 count=\"3\" reason=\"bad_signature\"]",
        ] {
            assert!(m.contains(part), "{part} missing from {m}");
        }
        let body = m.split_once('\u{feff}').expect("BOM before the body").1;
        let line: serde_json::Value = serde_json::from_str(body).expect("body is the JSONL line");
        assert_eq!(line["seq"], 42);
        assert_eq!(line["mac"], "f".repeat(64));
    }

    #[test]
    fn structured_data_values_escape_quote_backslash_and_bracket() {
        let mut r = record();
        r.detail = r#"{"path":"a\"b\\c]d"}"#.into();
        let sd = structured_data(&r, Some("node-a"), 1);
        assert!(sd.contains(r#"path="a\"b\\c\]d""#), "{sd}");
        assert!(sd.contains(r#"node="node-a""#), "{sd}");
    }

    #[test]
    fn frames_count_bytes_not_characters() {
        assert_eq!(frame("<1>1 é"), "7 <1>1 é".as_bytes());
    }
}

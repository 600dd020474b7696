//! The ATNA body: one audit record as a DICOM PS3.15 A.5 audit message (the XML an IHE audit
//! record repository expects from ITI-20 "Record Audit Event").
//!
//! ```text
//! AuditMessage
//!   EventIdentification   the action's DICOM class (codes.rs), outcome, time; wardhook's
//!                         action name as EventTypeCode
//!   ActiveParticipant     the actor (requestor), with the client address if any
//!   ActiveParticipant     wardhook on this host (not the requestor)
//!   AuditSourceIdentification  this host
//!   ParticipantObjectIdentification  the delivery (by id), the call (by blind index), and the
//!                         audit record itself: seq, node, prev_mac, mac and the detail facts
//! ```
//!
//! Every value comes from the stored record or from the configured host name; all are escaped
//! for XML attributes. `ParticipantObjectDetail` values are base64, as the schema requires.

use base64::Engine as _;

use super::codes::{self, ActorKind, ACTION_SYSTEM, DCM};
use crate::audit::StoredRecord;

/// Escape for an XML attribute value in double quotes.
fn attr(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 => out.push_str(&format!("&#x{:x};", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn coded(element: &str, code: &str, system: &str, display: &str) -> String {
    format!(
        "<{element} csd-code=\"{}\" codeSystemName=\"{}\" originalText=\"{}\"/>",
        attr(code),
        attr(system),
        attr(display)
    )
}

fn detail(kind: &str, value: &str) -> String {
    format!(
        "<ParticipantObjectDetail type=\"{}\" value=\"{}\"/>",
        attr(kind),
        base64::engine::general_purpose::STANDARD.encode(value)
    )
}

/// `r` (of `node`'s chain on PostgreSQL) as a DICOM audit message; `host` is this host's name.
pub(crate) fn render(r: &StoredRecord, node: Option<&str>, host: &str) -> String {
    let class = codes::event_class(&r.action);
    let mut x = String::with_capacity(2048);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>");
    x.push_str(&format!(
        "<EventIdentification EventActionCode=\"{}\" EventDateTime=\"{}\" EventOutcomeIndicator=\"{}\">",
        class.action,
        attr(&r.ts),
        codes::outcome_code(&r.outcome)
    ));
    x.push_str(&coded("EventID", class.code, DCM, class.display));
    if let Some((code, display)) = codes::event_type(&r.action) {
        x.push_str(&coded("EventTypeCode", code, DCM, display));
    }
    x.push_str(&coded("EventTypeCode", &r.action, ACTION_SYSTEM, &r.action));
    x.push_str("</EventIdentification>");

    // The actor: the requestor of what happened.
    let (role_code, role_display) = match codes::actor_kind(&r.actor) {
        ActorKind::Sender => ("110153", "Source Role ID"),
        ActorKind::Person | ActorKind::System => ("110150", "Application"),
    };
    x.push_str(&format!(
        "<ActiveParticipant UserID=\"{}\" UserIsRequestor=\"true\"",
        attr(&r.actor)
    ));
    if let Some(addr) = &r.remote_addr {
        x.push_str(&format!(
            " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"2\"",
            attr(addr)
        ));
    }
    x.push('>');
    x.push_str(&coded("RoleIDCode", role_code, DCM, role_display));
    x.push_str("</ActiveParticipant>");
    // wardhook itself, the system that recorded it.
    x.push_str(&format!(
        "<ActiveParticipant UserID=\"wardhook\" AlternativeUserID=\"{}\" UserIsRequestor=\"false\" NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"1\">",
        attr(node.unwrap_or(host)),
        attr(host)
    ));
    x.push_str(&coded("RoleIDCode", "110152", DCM, "Destination Role ID"));
    x.push_str("</ActiveParticipant>");

    x.push_str(&format!(
        "<AuditSourceIdentification AuditSourceID=\"{}\">",
        attr(host)
    ));
    x.push_str(&coded(
        "AuditSourceTypeCode",
        "4",
        DCM,
        "Application Server Process",
    ));
    x.push_str("</AuditSourceIdentification>");

    // Objects: the delivery, the call (blind index only), then the audit record itself.
    if let Some(id) = &r.delivery_id {
        x.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">",
            attr(id)
        ));
        x.push_str(&coded(
            "ParticipantObjectIDTypeCode",
            "delivery_id",
            "urn:wardhook:object",
            "wardhook delivery id",
        ));
        if let Some(source) = &r.source {
            x.push_str(&detail("source", source));
        }
        x.push_str("</ParticipantObjectIdentification>");
    }
    if let Some(call_ref) = &r.call_ref {
        x.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">",
            attr(call_ref)
        ));
        x.push_str(&coded(
            "ParticipantObjectIDTypeCode",
            "call_ref",
            "urn:wardhook:object",
            "blind index of the sender's call id",
        ));
        x.push_str("</ParticipantObjectIdentification>");
    }
    let record_id = match node {
        Some(n) => format!("{n}/{}", r.seq),
        None => r.seq.to_string(),
    };
    x.push_str(&format!(
        "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"13\">",
        attr(&record_id)
    ));
    x.push_str(&coded(
        "ParticipantObjectIDTypeCode",
        "audit_record",
        "urn:wardhook:object",
        "wardhook audit record (node/seq)",
    ));
    x.push_str(&detail("seq", &r.seq.to_string()));
    if let Some(n) = node {
        x.push_str(&detail("node", n));
    }
    if let Some(source) = &r.source {
        x.push_str(&detail("source", source));
    }
    x.push_str(&detail("prev_mac", &r.prev_mac));
    x.push_str(&detail("mac", &r.mac));
    let facts: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&r.detail).unwrap_or_default();
    for (k, v) in &facts {
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        x.push_str(&detail(k, &text));
    }
    x.push_str("</ParticipantObjectIdentification></AuditMessage>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_is_a_security_alert_with_a_minor_failure_and_its_chain_facts() {
        let r = super::super::message::tests::record();
        let x = render(&r, Some("node-a"), "gw1");
        for part in [
            "<EventIdentification EventActionCode=\"E\" EventDateTime=\"2026-12-03T10:00:00.123456Z\" EventOutcomeIndicator=\"4\">",
            "<EventID csd-code=\"110113\" codeSystemName=\"DCM\" originalText=\"Security Alert\"/>",
            "<EventTypeCode csd-code=\"delivery_rejected\" codeSystemName=\"urn:wardhook:audit:action\"",
            "<ActiveParticipant UserID=\"sender:nextphone\" UserIsRequestor=\"true\" NetworkAccessPointID=\"203.0.113.7\" NetworkAccessPointTypeCode=\"2\">",
            "<AuditSourceIdentification AuditSourceID=\"gw1\">",
            "ParticipantObjectID=\"node-a/42\"",
            // base64("42")
            "<ParticipantObjectDetail type=\"seq\" value=\"NDI=\"/>",
            // base64("bad_signature")
            "<ParticipantObjectDetail type=\"reason\" value=\"YmFkX3NpZ25hdHVyZQ==\"/>",
        ] {
            assert!(x.contains(part), "{part} missing from {x}");
        }
        assert!(x.ends_with("</AuditMessage>"));
    }

    #[test]
    fn attribute_values_are_escaped() {
        assert_eq!(attr("a\"<&>'\n"), "a&quot;&lt;&amp;&gt;&apos;&#xa;");
    }
}

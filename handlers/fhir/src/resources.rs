//! The resources written for an event: default templates, rendering, and the elements the
//! adapter sets itself (identifier, patient reference, owner, due date, attachments).
//!
//! A template renders the whole resource as JSON (values escaped as JSON string content).
//! Elements that render empty are dropped before sending — an empty string is not valid FHIR —
//! so `"{{ data.ai_summary | default('') }}"` simply leaves the element out when the sender had
//! no summary.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use wardhook_sdk::PhiLevel;

use crate::config::{DocumentContent, ResourceKind};
use crate::error::FhirError;

/// The call summary, whichever key the sender used.
const SUMMARY: &str = "{{ data.ai_summary | default(data.summary | default('')) }}";

/// The `meta.tag` system marking resources written without a single matching patient.
pub const MATCH_TAG_SYSTEM: &str = "urn:wardhook:patient-match";

/// The default template of `kind` for a handler allowed `phi`. Defaults for `phi = "none"`
/// carry no summary, so they reference no PHI field.
pub fn default_template(kind: ResourceKind, phi: PhiLevel, content: DocumentContent) -> String {
    let full = phi == PhiLevel::Full;
    match kind {
        ResourceKind::Communication => {
            let payload = if full {
                format!(r#","payload": [{{"contentString": "{SUMMARY}"}}]"#)
            } else {
                String::new()
            };
            format!(
                r#"{{"resourceType": "Communication", "status": "completed",
 "category": [{{"coding": [{{"system": "urn:wardhook:communication-category", "code": "phone-call"}}], "text": "Phone call"}}],
 "medium": [{{"coding": [{{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode", "code": "PHONE", "display": "telephone"}}]}}],
 "sent": "{{{{ timestamp }}}}", "received": "{{{{ received_at }}}}"{payload}}}"#
            )
        }
        ResourceKind::Task => {
            let note = if full {
                format!(r#","note": [{{"text": "{SUMMARY}"}}]"#)
            } else {
                String::new()
            };
            format!(
                r#"{{"resourceType": "Task", "status": "requested", "intent": "order", "priority": "routine",
 "description": "Call back the caller",
 "reasonCode": {{"coding": [{{"system": "urn:wardhook:task-reason", "code": "callback", "display": "Callback requested"}}], "text": "Callback requested by phone"}},
 "authoredOn": "{{{{ received_at }}}}"{note}}}"#
            )
        }
        ResourceKind::Appointment => {
            let comment = if full {
                format!(r#","comment": "{SUMMARY}""#)
            } else {
                String::new()
            };
            format!(
                r#"{{"resourceType": "Appointment", "status": "proposed",
 "description": "Appointment requested by phone", "created": "{{{{ received_at }}}}"{comment}}}"#
            )
        }
        ResourceKind::AppointmentResponse => {
            // `appointment` and `participantStatus` are set by the adapter (see lib.rs).
            let comment = if full {
                format!(r#","comment": "{SUMMARY}""#)
            } else {
                String::new()
            };
            format!(r#"{{"resourceType": "AppointmentResponse"{comment}}}"#)
        }
        ResourceKind::DocumentReference => {
            let what = match content {
                DocumentContent::Transcript => "transcript",
                DocumentContent::Summary => "summary",
            };
            format!(
                r#"{{"resourceType": "DocumentReference", "status": "current", "docStatus": "final",
 "type": {{"text": "Phone call {what}"}}, "date": "{{{{ received_at }}}}",
 "description": "Phone call {what} {{{{ call_id | default('') }}}}"}}"#
            )
        }
    }
}

/// Parse a rendered template into a resource of `kind`, dropping empty elements.
pub fn parse_rendered(kind: ResourceKind, rendered: &str) -> Result<Value, FhirError> {
    let mut value: Value = serde_json::from_str(rendered).map_err(|e| FhirError::Template {
        key: kind.key(),
        // serde_json's message names a line and column, not the text.
        what: format!("did not render JSON ({e})"),
    })?;
    prune(&mut value);
    if value.get("resourceType").and_then(Value::as_str) != Some(kind.type_name()) {
        return Err(FhirError::Template {
            key: kind.key(),
            what: format!(
                "must render a resource with \"resourceType\": \"{}\"",
                kind.type_name()
            ),
        });
    }
    Ok(value)
}

/// Remove empty strings, nulls, and objects and arrays left empty; `true` when `value` itself
/// is empty.
pub fn prune(value: &mut Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        Value::Array(items) => {
            items.retain_mut(|v| !prune(v));
            items.is_empty()
        }
        Value::Object(map) => {
            map.retain(|_, v| !prune(v));
            map.is_empty()
        }
        _ => false,
    }
}

/// Append wardhook's identifier.
pub fn add_identifier(resource: &mut Value, system: &str, value: &str) {
    if let Some(obj) = resource.as_object_mut() {
        let list = obj.entry("identifier").or_insert_with(|| json!([]));
        if let Some(arr) = list.as_array_mut() {
            arr.push(json!({"system": system, "value": value}));
        }
    }
}

/// Tag a resource as written without a single matching patient (`unmatched`).
pub fn add_unmatched_tag(resource: &mut Value, why: &str) {
    if let Some(obj) = resource.as_object_mut() {
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let tags = meta.entry("tag").or_insert_with(|| json!([]));
            if let Some(tags) = tags.as_array_mut() {
                tags.push(json!({
                    "system": MATCH_TAG_SYSTEM,
                    "code": "unmatched",
                    "display": format!("No single matching patient ({why})"),
                }));
            }
        }
    }
}

/// Point the resource at its patient, unless its template already did.
pub fn set_patient(kind: ResourceKind, resource: &mut Value, reference: Option<&str>) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    match kind {
        ResourceKind::Communication | ResourceKind::DocumentReference => {
            if let Some(r) = reference {
                obj.entry("subject")
                    .or_insert_with(|| json!({"reference": r}));
            }
        }
        ResourceKind::Task => {
            if let Some(r) = reference {
                obj.entry("for").or_insert_with(|| json!({"reference": r}));
            }
        }
        ResourceKind::AppointmentResponse => {
            if let Some(r) = reference {
                obj.entry("actor")
                    .or_insert_with(|| json!({"reference": r}));
            }
        }
        ResourceKind::Appointment => {
            // FHIR requires a participant; without a known patient it names the role.
            obj.entry("participant").or_insert_with(|| match reference {
                Some(r) => json!([{"actor": {"reference": r}, "status": "needs-action"}]),
                None => json!([{"type": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                    "code": "SBJ", "display": "subject"}]}], "status": "needs-action"}]),
            });
        }
    }
}

/// Set `key` to `value` on an object resource, unless its template already did.
pub fn set_default(resource: &mut Value, key: &str, value: Value) {
    if let Some(obj) = resource.as_object_mut() {
        obj.entry(key).or_insert(value);
    }
}

/// Text for an attachment: a string as is; anything else (a list of turns) as JSON.
pub fn attachment_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A plain-text attachment, base64 as FHIR requires.
pub fn text_attachment(text: &str, title: &str) -> Value {
    json!({
        "contentType": "text/plain; charset=utf-8",
        "data": B64.encode(text.as_bytes()),
        "title": title,
    })
}

/// A captured artifact as an attachment: its bytes base64 in `data`, with `contentType`,
/// `size` and `hash`, which FHIR R4 defines as the SHA-1 of the data, base64-encoded.
pub fn artifact_attachment(artifact: &wardhook_sdk::artifacts::Attachment) -> Value {
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &artifact.content);
    let title = if artifact.reference.content_type.starts_with("audio/") {
        "Call recording"
    } else {
        "Call transcript"
    };
    json!({
        "contentType": artifact.reference.content_type,
        "data": B64.encode(&artifact.content[..]),
        "size": artifact.content.len(),
        "hash": B64.encode(sha1.as_ref()),
        "title": title,
    })
}

/// Add `attachment` as a `Communication.payload` entry.
pub fn add_payload_attachment(resource: &mut Value, attachment: Value) {
    if let Some(obj) = resource.as_object_mut() {
        let payload = obj.entry("payload").or_insert_with(|| json!([]));
        if let Some(arr) = payload.as_array_mut() {
            arr.push(json!({ "contentAttachment": attachment }));
        }
    }
}

/// The summary text, whichever key the sender used.
pub fn summary(data: &Value) -> Option<&Value> {
    ["ai_summary", "summary"]
        .iter()
        .find_map(|k| data.get(*k).filter(|v| !v.is_null()))
}

/// A JSON object from pairs (for small literal elements).
pub fn object(pairs: &[(&str, Value)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<Map<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_elements_are_dropped_recursively() {
        let mut v = json!({"resourceType": "Communication", "payload": [{"contentString": ""}],
            "note": [{"text": "  "}], "status": "completed", "medium": [{"coding": [], "text": "x"}]});
        prune(&mut v);
        assert_eq!(
            v,
            json!({"resourceType": "Communication", "status": "completed", "medium": [{"text": "x"}]})
        );
    }

    #[test]
    fn phi_none_defaults_reference_no_summary() {
        for kind in [
            ResourceKind::Communication,
            ResourceKind::Task,
            ResourceKind::Appointment,
            ResourceKind::AppointmentResponse,
        ] {
            let t = default_template(kind, PhiLevel::None, DocumentContent::Transcript);
            assert!(!t.contains("data."), "{t}");
            let t = default_template(kind, PhiLevel::Full, DocumentContent::Transcript);
            assert!(t.contains("data.ai_summary"), "{t}");
        }
    }

    #[test]
    fn a_template_must_render_its_own_resource_type() {
        let e = parse_rendered(ResourceKind::Task, r#"{"resourceType": "Communication"}"#)
            .expect_err("wrong type");
        assert!(e.to_string().starts_with("task.template: "), "{e}");
        assert!(parse_rendered(ResourceKind::Task, "{").is_err());
    }
}

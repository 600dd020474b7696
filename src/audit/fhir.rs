//! `audit export --format fhir`: the selected records as a FHIR R4 `Bundle` (type
//! `collection`) of `AuditEvent` resources, streamed record by record so memory use does not
//! depend on the range.
//!
//! One record → one `AuditEvent`:
//! - `type`: the action's DICOM audit event class (`forward/codes.rs`, shared with the ATNA
//!   syslog format); `subtype`: the narrower DICOM event type where one fits, and always
//!   wardhook's own action name (system `urn:wardhook:audit:action`);
//! - `action` (C/R/U/D/E), `recorded` (the record's time), `outcome` (0 / 4 / 8);
//! - `agent`: the actor (`who.identifier` = `sender:…`, `cli_user:…`, `admin_token:…` or
//!   `system`), the requestor, with the client address as `network` when there is one;
//! - `source`: wardhook (the PostgreSQL node, if any);
//! - `entity`: the delivery by its id, the call by its **blind index** (never the call id), and
//!   the audit record itself with `seq`, `node`, `prev_mac`, `mac` and the detail facts, so the
//!   export still proves completeness and integrity to whoever holds the master key.
//!
//! Like every export, only record fields go out: no PHI exists in them.

use std::io::Write;

use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use super::forward::codes::{self, ActorKind, ACTION_SYSTEM};
use super::query::{Filter, Progress};
use super::source::RecordStream;
use super::{AuditError, StoredRecord};

const DCM_SYSTEM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const ROLE_TYPES: &str = "http://terminology.hl7.org/CodeSystem/extra-security-role-type";
const ENTITY_TYPES: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLES: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const SOURCE_TYPES: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";

/// The resource id: `wardhook-<seq>`, or `wardhook-<node hash>-<seq>` for a node's chain (node
/// ids may hold characters a FHIR id may not, and an id is at most 64 characters).
fn resource_id(node: Option<&str>, seq: u64) -> String {
    match node {
        None => format!("wardhook-{seq}"),
        Some(n) => {
            let h = hex::encode(Sha256::digest(n.as_bytes()));
            format!("wardhook-{}-{seq}", &h[..16])
        }
    }
}

fn entity(system: &str, value: &str, role: (&str, &str), detail: Vec<Value>) -> Value {
    let mut e = json!({
        "what": {"identifier": {"system": system, "value": value}},
        "type": {"system": ENTITY_TYPES, "code": "2", "display": "System Object"},
        "role": {"system": OBJECT_ROLES, "code": role.0, "display": role.1},
    });
    if !detail.is_empty() {
        e["detail"] = Value::Array(detail);
    }
    e
}

fn fact(kind: &str, value: &str) -> Value {
    json!({"type": kind, "valueString": value})
}

/// `r` (of `node`'s chain on PostgreSQL) as a FHIR R4 `AuditEvent`.
pub(crate) fn audit_event(node: Option<&str>, r: &StoredRecord) -> Value {
    let class = codes::event_class(&r.action);
    let mut subtype = Vec::new();
    if let Some((code, display)) = codes::event_type(&r.action) {
        subtype.push(json!({"system": DCM_SYSTEM, "code": code, "display": display}));
    }
    subtype.push(json!({"system": ACTION_SYSTEM, "code": r.action, "display": r.action}));

    let (role_code, role_display) = match codes::actor_kind(&r.actor) {
        ActorKind::Person => ("humanuser", "human user"),
        ActorKind::Sender => ("datacollector", "data collector"),
        ActorKind::System => ("dataprocessor", "data processor"),
    };
    let mut agent = json!({
        "type": {"coding": [{"system": ROLE_TYPES, "code": role_code, "display": role_display}]},
        "who": {"identifier": {"system": "urn:wardhook:actor", "value": r.actor}},
        "requestor": true,
    });
    if let Some(addr) = &r.remote_addr {
        agent["network"] = json!({"address": addr, "type": "2"});
    }

    let mut entities = Vec::new();
    if let Some(id) = &r.delivery_id {
        entities.push(entity(
            "urn:wardhook:delivery-id",
            id,
            ("3", "Report"),
            Vec::new(),
        ));
    }
    if let Some(call_ref) = &r.call_ref {
        entities.push(entity(
            "urn:wardhook:call-ref",
            call_ref,
            ("3", "Report"),
            Vec::new(),
        ));
    }
    let mut facts = vec![fact("seq", &r.seq.to_string())];
    if let Some(n) = node {
        facts.push(fact("node", n));
    }
    if let Some(s) = &r.source {
        facts.push(fact("source", s));
    }
    facts.push(fact("prev_mac", &r.prev_mac));
    facts.push(fact("mac", &r.mac));
    let detail: Map<String, Value> = serde_json::from_str(&r.detail).unwrap_or_default();
    for (k, v) in &detail {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        facts.push(fact(k, &text));
    }
    let record_id = match node {
        Some(n) => format!("{n}/{}", r.seq),
        None => r.seq.to_string(),
    };
    entities.push(entity(
        "urn:wardhook:audit-record",
        &record_id,
        ("13", "Security Resource"),
        facts,
    ));

    let site = node.unwrap_or("wardhook");
    json!({
        "resourceType": "AuditEvent",
        "id": resource_id(node, r.seq),
        "type": {"system": DCM_SYSTEM, "code": class.code, "display": class.display},
        "subtype": subtype,
        "action": class.action,
        "recorded": r.ts,
        "outcome": codes::outcome_code(&r.outcome),
        "agent": [agent],
        "source": {
            "site": site,
            "observer": {
                "identifier": {"system": "urn:wardhook:node", "value": site},
                "display": "wardhook",
            },
            "type": [{"system": SOURCE_TYPES, "code": "4", "display": "Application Server"}],
        },
        "entity": entities,
    })
}

/// Stream the matching records as one FHIR R4 `Bundle` to `out`. An empty selection is a
/// Bundle without `entry` (FHIR JSON has no empty arrays). Returns how many were written.
pub(crate) fn export_bundle(
    stream: &(impl RecordStream + ?Sized),
    filter: &Filter,
    out: &mut dyn Write,
    progress: &mut dyn Progress,
) -> Result<u64, AuditError> {
    progress.start(stream.count(filter)?);
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    write!(
        out,
        "{{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"timestamp\":\"{now}\""
    )
    .map_err(AuditError::Output)?;
    let mut done = 0u64;
    stream.for_each(filter, &mut |node, r| {
        out.write_all(if done == 0 { b",\"entry\":[\n" } else { b",\n" })
            .map_err(AuditError::Output)?;
        let entry = json!({ "resource": audit_event(node, r) });
        serde_json::to_writer(&mut *out, &entry)
            .map_err(|e| AuditError::Output(std::io::Error::other(e)))?;
        done += 1;
        progress.advance(done);
        Ok(())
    })?;
    if done > 0 {
        out.write_all(b"\n]").map_err(AuditError::Output)?;
    }
    out.write_all(b"}\n").map_err(AuditError::Output)?;
    out.flush().map_err(AuditError::Output)?;
    progress.finish(done);
    Ok(done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_is_a_security_alert_event_with_the_chain_facts_as_entity_detail() {
        let r = super::super::forward::message::tests::record();
        let e = audit_event(Some("node:a"), &r);
        assert_eq!(e["type"]["code"], "110113");
        assert_eq!(e["outcome"], "4");
        assert_eq!(e["action"], "E");
        assert_eq!(
            e["agent"][0]["who"]["identifier"]["value"],
            "sender:nextphone"
        );
        assert_eq!(e["agent"][0]["network"]["address"], "203.0.113.7");
        let id = e["id"].as_str().unwrap();
        assert!(id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let record = e["entity"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(record["what"]["identifier"]["value"], "node:a/42");
        let facts = record["detail"].as_array().unwrap();
        assert!(facts.contains(&json!({"type": "reason", "valueString": "bad_signature"})));
        assert!(facts.contains(&json!({"type": "mac", "valueString": "f".repeat(64)})));
    }
}

//! The coded vocabulary both outside formats share: each wardhook action as a DICOM audit event
//! (PS3.16 CID 400 "Audit Event ID", code system `DCM`) with its event action code, and each
//! outcome as the DICOM/FHIR outcome indicator. The ATNA syslog body (`atna.rs`) and the FHIR
//! `AuditEvent` export (`audit/fhir.rs`) use this one table, so an ATNA repository and a FHIR
//! server classify a record the same way. wardhook's own action name always travels beside the
//! DICOM code (as an event type / subtype), so nothing is lost by the coarser DICOM class.

/// The DICOM code system name in ATNA messages.
pub(crate) const DCM: &str = "DCM";

/// The code system of wardhook's own action names (ATNA `EventTypeCode`, FHIR `subtype`).
pub(crate) const ACTION_SYSTEM: &str = "urn:wardhook:audit:action";

/// One action's classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventClass {
    /// DICOM audit event id (CID 400), e.g. `110107`.
    pub code: &'static str,
    /// Its display name.
    pub display: &'static str,
    /// Event action code: `C`reate, `R`ead, `U`pdate, `D`elete, `E`xecute.
    pub action: &'static str,
}

const fn class(code: &'static str, display: &'static str, action: &'static str) -> EventClass {
    EventClass {
        code,
        display,
        action,
    }
}

/// The DICOM class of a stored action name. Unknown names (a newer build's actions read by an
/// older one) are "Application Activity", executed.
pub(crate) fn event_class(action: &str) -> EventClass {
    const IMPORT: (&str, &str) = ("110107", "Import");
    const EXPORT: (&str, &str) = ("110106", "Export");
    const PATIENT_RECORD: (&str, &str) = ("110110", "Patient Record");
    const SECURITY_ALERT: (&str, &str) = ("110113", "Security Alert");
    const USER_AUTH: (&str, &str) = ("110114", "User Authentication");
    const APP_ACTIVITY: (&str, &str) = ("110100", "Application Activity");
    const AUDIT_LOG_USED: (&str, &str) = ("110101", "Audit Log Used");
    let ((code, display), act) = match action {
        // A sender's delivery came in: data imported from an outside system.
        "delivery_accepted" | "delivery_duplicate" | "delivery_quarantined" => (IMPORT, "C"),
        // A delivery refused at verification: a security alert, not an import.
        "delivery_rejected" => (SECURITY_ALERT, "E"),
        // Data leaving for a handler's destination, or an answer to the sender.
        "handler_attempt" | "dead_lettered" | "replayed" | "retried" | "realtime_replied" => {
            (EXPORT, "E")
        }
        "backup_taken" | "emergency_access" => (EXPORT, "R"),
        // A person or token read decrypted call data.
        "payload_read" | "delivery_reverified" | "callers_indexed" => (PATIENT_RECORD, "R"),
        "purged" => (PATIENT_RECORD, "D"),
        "key_rotated" | "config_loaded" | "token_created" | "token_revoked" => {
            (SECURITY_ALERT, "E")
        }
        "access_denied" | "console_signed_in" | "console_signed_out" => (USER_AUTH, "E"),
        "audit_exported" => (AUDIT_LOG_USED, "R"),
        "audit_purged" => (AUDIT_LOG_USED, "D"),
        _ => (APP_ACTIVITY, "E"),
    };
    class(code, display, act)
}

/// A DICOM event type code (CID 401/402) that narrows the event id, where one fits.
pub(crate) fn event_type(action: &str) -> Option<(&'static str, &'static str)> {
    match action {
        "server_started" => Some(("110120", "Application Start")),
        "server_stopped" => Some(("110121", "Application Stop")),
        "emergency_access" => Some(("110127", "Emergency Override Started")),
        "config_loaded" | "key_rotated" => Some(("110129", "Security Configuration")),
        "token_created" | "token_revoked" => Some(("110137", "User Security Attributes Changed")),
        "console_signed_in" => Some(("110122", "Login")),
        "console_signed_out" => Some(("110123", "Logout")),
        _ => None,
    }
}

/// The DICOM / FHIR R4 outcome indicator: `0` success, `4` minor failure (refused by policy or
/// authentication), `8` serious failure.
pub(crate) fn outcome_code(outcome: &str) -> &'static str {
    match outcome {
        "success" => "0",
        "denied" => "4",
        _ => "8",
    }
}

/// What kind of participant an actor is (`sender:`, `admin_token:`, `oidc:`, `cli_user:`,
/// `system`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActorKind {
    /// A configured sender system pushing deliveries.
    Sender,
    /// A person at the CLI, an admin token, or a console user signed in through OpenID Connect.
    Person,
    /// wardhook itself.
    System,
}

/// The kind of `actor` (the record's text form).
pub(crate) fn actor_kind(actor: &str) -> ActorKind {
    if actor.starts_with("sender:") {
        ActorKind::Sender
    } else if ["cli_user:", "admin_token:", "oidc:"]
        .iter()
        .any(|p| actor.starts_with(p))
    {
        ActorKind::Person
    } else {
        ActorKind::System
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_a_dicom_class_and_unknown_ones_fall_back() {
        for a in crate::audit::Action::ALL {
            let c = event_class(a.as_str());
            assert!(c.code.starts_with("1101"), "{a:?}");
            assert!(["C", "R", "U", "D", "E"].contains(&c.action));
        }
        assert_eq!(event_class("from_the_future").code, "110100");
        assert_eq!(outcome_code("success"), "0");
        assert_eq!(outcome_code("denied"), "4");
        assert_eq!(outcome_code("failure"), "8");
    }
}

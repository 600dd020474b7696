//! Minimum necessary: which parts of an event are PHI, and what a handler without a business
//! associate agreement may see.
//!
//! Every handler declares `phi = "full"` (the destination is covered by a BAA) or `phi = "none"`
//! (the default). For a `phi = "none"` handler two things hold, each enough on its own:
//! its templates may not *reference* a PHI field (rejected when the handler is built, naming the
//! field), and the event it is handed is [`redact`]ed, so its render context holds no PHI at all.
//! A Slack channel therefore gets "callback requested from a new caller", never the transcript.
//!
//! What counts as PHI: the whole `caller` (phone, name, e-mail), everything under `data` except a
//! short allowlist of operational keys ([`SAFE_DATA_KEYS`]: durations, status, direction, event
//! ids), and the outputs of earlier handlers (`app_data`), because a CRM's answer usually echoes
//! the patient's record. Envelope fields (`event_type`, `call_id`, `delivery_id`, `source`,
//! `occurred_at`, `received_at`) and `now` are not PHI.

use serde::Deserialize;

use crate::{Caller, Event};

/// What a handler may receive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhiLevel {
    /// The whole event. Only for destinations under a business associate agreement
    /// (`baa = true` in the handler's config).
    Full,
    /// No PHI: the event is redacted before the handler sees it.
    #[default]
    None,
}

impl PhiLevel {
    /// `"full"` or `"none"`, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::None => "none",
        }
    }
}

/// Top-level keys of `data` that are operational, not about the patient. Everything else under
/// `data` is PHI. Kept short on purpose: adding a key here is a compliance decision.
pub const SAFE_DATA_KEYS: &[&str] = &[
    "duration",
    "duration_seconds",
    "call_duration",
    "status",
    "call_status",
    "direction",
    "event_id",
    "webhook_id",
    "call_id",
    "ai_handled",
    "forwarded",
    "called_number",
    "receiving_number",
];

/// Whether a top-level `data` key is on the non-PHI allowlist.
pub fn is_safe_data_key(key: &str) -> bool {
    SAFE_DATA_KEYS.contains(&key)
}

/// Template names that are not PHI, whatever the event.
const SAFE_ROOTS: &[&str] = &[
    "event_type",
    "call_id",
    "delivery_id",
    "source",
    "occurred_at",
    "received_at",
    "now",
    "weekday",
    "timestamp",
    // Builtin functions a reference analysis may report as names.
    "hour_between",
    "time_between",
    "range",
    "dict",
    "namespace",
];

/// Names that always reach PHI.
const PHI_ROOTS: &[&str] = &[
    "caller",
    "caller_number",
    "caller_name",
    "caller_email",
    "email",
    "app_data",
];

/// If the template variable `path` (dotted, as `caller.phone` or `event.calling_number`) can
/// reach PHI, the field it names; `None` when it is safe for a `phi = "none"` handler.
pub fn phi_field(path: &str) -> Option<String> {
    let mut parts = path.split('.');
    let root = parts.next().unwrap_or_default();
    let second = parts.next();
    if SAFE_ROOTS.contains(&root) {
        return None;
    }
    if PHI_ROOTS.contains(&root) {
        return Some(path.to_owned());
    }
    match root {
        "data" => data_key_phi(path, second),
        "event" => match second {
            None => Some(path.to_owned()),
            Some(k) if SAFE_ROOTS.contains(&k) => None,
            Some("caller" | "calling_number" | "calling_name" | "calling_email") => {
                Some(path.to_owned())
            }
            Some("data") => data_key_phi(path, parts.next()),
            Some(k) => data_key_phi(path, Some(k)),
        },
        // Any other top-level name is a sender field (NextPhone `{{budget}}`): looked up in
        // `data.custom_fields`, then `data`.
        other => data_key_phi(path, Some(other)),
    }
}

fn data_key_phi(path: &str, key: Option<&str>) -> Option<String> {
    match key {
        Some(k) if is_safe_data_key(k) => None,
        _ => Some(path.to_owned()),
    }
}

/// The event as a `phi = "none"` handler sees it: no caller, only allowlisted `data` keys.
pub fn redact(event: &Event) -> Event {
    let data = match &event.data {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .filter(|(k, _)| is_safe_data_key(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => serde_json::Value::Object(serde_json::Map::new()),
    };
    Event {
        caller: Caller::default(),
        data,
        ..event.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified() {
        for safe in [
            "event_type",
            "call_id",
            "now.hour",
            "data.duration_seconds",
            "event.timestamp",
            "event.called_number",
            "event.data.status",
            "duration_seconds",
        ] {
            assert_eq!(phi_field(safe), None, "{safe} should be safe");
        }
        for phi in [
            "caller",
            "caller.phone",
            "caller_number",
            "email",
            "data",
            "data.transcript",
            "data.custom_fields.budget",
            "event.calling_number",
            "event.calling_name",
            "event.data.summary",
            "app_data.crm.data.id",
            "first_name",
        ] {
            assert_eq!(phi_field(phi).as_deref(), Some(phi), "{phi} should be PHI");
        }
    }

    #[test]
    fn redaction_keeps_only_allowlisted_data() {
        let event = Event {
            delivery_id: "d".into(),
            source: "s".into(),
            event_type: "call.ended".into(),
            call_id: Some("c".into()),
            occurred_at: None,
            received_at: chrono::DateTime::UNIX_EPOCH,
            caller: Caller {
                phone: Some("+15551234567".into()),
                name: Some("Pat".into()),
                email: None,
            },
            data: serde_json::json!({"duration_seconds": 135, "transcript": "secret", "status": "completed"}),
        };
        let r = redact(&event);
        assert_eq!(r.caller, Caller::default());
        assert_eq!(
            r.data,
            serde_json::json!({"duration_seconds": 135, "status": "completed"})
        );
        assert_eq!(r.call_id.as_deref(), Some("c"));
    }
}

/// Take the shared `phi` and `baa` keys out of a handler's `[[handlers]]` table and check them:
/// `phi = "full"` needs `baa = true`. Problems carry key paths relative to the table.
pub fn take_phi_settings(
    settings: &mut toml::Table,
) -> Result<PhiLevel, Vec<crate::ConfigProblem>> {
    use crate::ConfigProblem;
    let mut problems = Vec::new();
    let phi = match settings.remove("phi") {
        None => PhiLevel::None,
        Some(toml::Value::String(s)) if s == "full" => PhiLevel::Full,
        Some(toml::Value::String(s)) if s == "none" => PhiLevel::None,
        Some(_) => {
            problems.push(ConfigProblem::new("phi", "must be \"full\" or \"none\""));
            PhiLevel::None
        }
    };
    let baa = match settings.remove("baa") {
        None => false,
        Some(toml::Value::Boolean(b)) => b,
        Some(_) => {
            problems.push(ConfigProblem::new("baa", "must be true or false"));
            false
        }
    };
    if phi == PhiLevel::Full && !baa {
        problems.push(ConfigProblem::new(
            "phi",
            "phi = \"full\" sends patient data to this destination: it requires baa = true \
             (a business associate agreement covers the destination)",
        ));
    }
    if problems.is_empty() {
        Ok(phi)
    } else {
        Err(problems)
    }
}

/// Wraps a `phi = "none"` handler so that it is only ever handed a [`redact`]ed event and no
/// outputs of earlier handlers, whatever its templates or code do.
#[derive(Debug)]
pub struct MinimumNecessary {
    inner: std::sync::Arc<dyn crate::Handler>,
}

impl MinimumNecessary {
    /// Guard `handler` according to `level`: `Full` returns it unchanged.
    pub fn guard(
        handler: std::sync::Arc<dyn crate::Handler>,
        level: PhiLevel,
    ) -> std::sync::Arc<dyn crate::Handler> {
        match level {
            PhiLevel::Full => handler,
            PhiLevel::None => std::sync::Arc::new(Self { inner: handler }),
        }
    }
}

#[async_trait::async_trait]
impl crate::Handler for MinimumNecessary {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn handle(
        &self,
        event: &Event,
        ctx: &mut crate::Context,
    ) -> Result<crate::Outcome, crate::HandlerError> {
        let redacted = redact(event);
        let saved = ctx.app_data().clone();
        ctx.clear_app_data();
        // Recordings and transcripts are PHI: no opener either.
        let opener = ctx.take_artifact_source();
        let result = self.inner.handle(&redacted, ctx).await;
        let mut restored = ctx.clone().with_app_data(saved);
        if let Some(opener) = opener {
            restored = restored.with_artifact_source(opener);
        }
        *ctx = restored;
        result
    }
}

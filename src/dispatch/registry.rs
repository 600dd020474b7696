//! Handler kinds, registered one line each: `kind = "…"` in a `[[handlers]]` table picks the
//! factory that builds it. Adding a CRM adapter = a crate in `handlers/` plus one line in
//! [`FACTORIES`] (see `docs/HANDLERS.md`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use wardhook_handler_exec::ExecFactory;
use wardhook_handler_http::HttpFactory;
use wardhook_sdk::{build_handler, BuildContext, ConfigProblem, Handler};

use crate::config::HandlerSection;
use crate::store::caller_phone::PhonePointer;

/// Builds one handler from its settings (the table minus `name`, `kind`, `phi`, `baa`).
type BuildFn = fn(toml::Table, &BuildContext) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>>;

/// One config problem: (key path such as `handlers[3].auth.token`, message).
pub type KeyPathProblem = (String, String);

/// Every handler kind wardhook knows, one line each.
const FACTORIES: &[(&str, BuildFn)] = &[
    ("http", build_handler::<HttpFactory>),
    ("exec", build_handler::<ExecFactory>),
    (
        "hubspot",
        build_handler::<wardhook_handler_hubspot::HubSpotFactory>,
    ),
    (
        "salesforce",
        build_handler::<wardhook_handler_salesforce::SalesforceFactory>,
    ),
    ("fhir", build_handler::<wardhook_handler_fhir::FhirFactory>),
    (
        "slack",
        build_handler::<wardhook_handler_slack::SlackFactory>,
    ),
    (
        "email",
        build_handler::<wardhook_handler_email::EmailFactory>,
    ),
    ("hl7v2", build_handler::<wardhook_handler_hl7v2::Hl7Factory>),
];

/// The registered kinds, for messages and `--help`.
pub fn known_kinds() -> Vec<&'static str> {
    FACTORIES.iter().map(|(k, _)| *k).collect()
}

/// The configured handlers, built, and where each one's output names the caller's phone.
#[derive(Debug, Default)]
pub struct BuiltHandlers {
    /// In config order.
    pub handlers: Vec<Arc<dyn Handler>>,
    /// Handler name → its `caller_phone_from` pointer, for handlers that set one.
    pub caller_phone_from: HashMap<String, PhonePointer>,
}

/// Take `caller_phone_from` (any kind may set it) out of a handler's settings and check it.
fn take_caller_phone_from(
    settings: &mut toml::Table,
) -> Result<Option<PhonePointer>, ConfigProblem> {
    let problem = |message: String| ConfigProblem::new("caller_phone_from", message);
    match settings.remove("caller_phone_from") {
        None => Ok(None),
        Some(toml::Value::String(text)) => PhonePointer::parse(&text).map(Some).map_err(problem),
        Some(_) => Err(problem("must be a string (a JSON pointer)".into())),
    }
}

/// Build every configured handler, in config order. Secrets are resolved and templates compiled
/// (with the minimum-necessary check) here, so `check-config` reports them. On failure, every
/// problem of every handler, each as (`handlers[3].auth.token`, message).
pub fn build_handlers(
    sections: &[HandlerSection],
    base_dir: &Path,
) -> Result<BuiltHandlers, Vec<KeyPathProblem>> {
    let mut built = BuiltHandlers::default();
    let mut problems = Vec::new();
    for (i, section) in sections.iter().enumerate() {
        let prefix = format!("handlers[{i}]");
        let mut report = |list: Vec<ConfigProblem>| {
            for p in list {
                let path = if p.path.is_empty() {
                    prefix.clone()
                } else {
                    format!("{prefix}.{}", p.path)
                };
                problems.push((path, p.message));
            }
        };
        let mut settings = section.settings.clone();
        match take_caller_phone_from(&mut settings) {
            Ok(Some(pointer)) => {
                built
                    .caller_phone_from
                    .insert(section.name.clone(), pointer);
            }
            Ok(None) => {}
            Err(p) => report(vec![p]),
        }
        let phi = match super::phi::handler_phi(&mut settings) {
            Ok(level) => level,
            Err(list) => {
                report(list);
                continue;
            }
        };
        let Some((_, build)) = FACTORIES.iter().find(|(k, _)| *k == section.kind) else {
            report(vec![ConfigProblem::new(
                "kind",
                format!(
                    "unknown handler kind {:?}; known kinds: {}",
                    section.kind,
                    known_kinds().join(", ")
                ),
            )]);
            continue;
        };
        let ctx = BuildContext::new(section.name.clone(), phi, base_dir);
        match build(settings, &ctx) {
            Ok(handler) => built.handlers.push(super::phi::guard(handler, phi)),
            Err(list) => report(list),
        }
    }
    if problems.is_empty() {
        Ok(built)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections(toml_src: &str) -> Vec<HandlerSection> {
        #[derive(serde::Deserialize)]
        struct File {
            handlers: Vec<HandlerSection>,
        }
        toml::from_str::<File>(toml_src).expect("toml").handlers
    }

    #[test]
    fn builds_each_kind_and_reports_every_problem_with_its_key_path() {
        let ok = sections(
            r#"
            [[handlers]]
            name = "crm"
            kind = "http"
            phi = "full"
            baa = true
            url = "https://crm.internal/api/leads"
            body = '{"phone": "{{ caller.phone }}"}'
            caller_phone_from = "/data/contact/phone"

            [[handlers]]
            name = "script"
            kind = "exec"
            program = "/bin/true"
            "#,
        );
        let built = build_handlers(&ok, Path::new(".")).expect("builds");
        assert_eq!(
            built.handlers.iter().map(|h| h.name()).collect::<Vec<_>>(),
            ["crm", "script"]
        );
        let pointer = built
            .caller_phone_from
            .get("crm")
            .expect("crm names a phone");
        let output = serde_json::json!({"data": {"contact": {"phone": "+15550101234"}}});
        assert!(pointer.read(&output).is_some());
        assert!(!built.caller_phone_from.contains_key("script"));

        let bad = sections(
            r#"
            [[handlers]]
            name = "crm"
            kind = "http"
            url = "https://crm.internal/api/leads"
            auth = { type = "bearer", token = "env:WARDHOOK_REGISTRY_TEST_UNSET" }

            [[handlers]]
            name = "slack"
            kind = "http"
            url = "https://hooks.slack.example/x"
            body = '{"text": "{{ data.transcript }}"}'

            [[handlers]]
            name = "fax"
            kind = "fax"

            [[handlers]]
            name = "emr"
            kind = "exec"
            phi = "full"
            program = "/bin/true"

            [[handlers]]
            name = "lookup"
            kind = "exec"
            program = "/bin/true"
            caller_phone_from = "data/phone"
            "#,
        );
        let problems = build_handlers(&bad, Path::new(".")).expect_err("problems");
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "handlers[0].auth.token",
                "handlers[1].body",
                "handlers[2].kind",
                "handlers[3].phi",
                "handlers[4].caller_phone_from"
            ]
        );
        assert_eq!(
            problems[0].1,
            "env var WARDHOOK_REGISTRY_TEST_UNSET is not set"
        );
        assert!(problems[1].1.contains("\"slack\"") && problems[1].1.contains("`data.transcript`"));
        assert!(
            problems[2].1.contains("known kinds: http, exec"),
            "{}",
            problems[2].1
        );
    }
}

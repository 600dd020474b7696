//! `kind = "fhir"`: each call event becomes FHIR R4 (4.0.1) resources in the clinic's EHR.
//!
//! Built only on `wardhook-sdk`. For each event:
//!
//! 1. **Patient** (optional, `[handlers.patient]`): `GET Patient?telecom=phone|…` (plus `name`
//!    and `birthdate` when the event has them). Exactly one match is referenced; none or several
//!    follow `when_none` / `when_several` (`skip`, `unmatched`, or — for none — `create`): the
//!    adapter never picks one of several.
//! 2. **Resources** (`resources = [...]`): `Communication` (the call), `Task` (callback),
//!    `Appointment` (`proposed`), `AppointmentResponse` (the caller's answer to that
//!    Appointment or to one the template names), `DocumentReference` (transcript or summary, and
//!    with `document_reference.artifacts` the recordings and transcripts the route's `capture`
//!    step stored, read through the SDK's audited, decrypted stream), each rendered
//!    from a JSON template with defaults for call events, then given wardhook's `identifier`
//!    (`<identifier_system>|<delivery id>:<handler>:<resource>`), the patient reference and the
//!    configured owner, due date and attachments.
//! 3. **Idempotent writes**: every create is conditional (`If-None-Exist: identifier=…`), so a
//!    retried attempt finds what an earlier one made instead of making a second resource.
//!    Several resources go as one `transaction` Bundle (all or nothing) unless
//!    `transaction = false`. Created ids go to `app_data` for later handlers.
//! 4. **Auth**: SMART Backend Services ([`smart`]: `private_key_jwt` with ES384 or RS384, token
//!    cached until expiry, refreshed once on 401), a bearer token, or basic.
//!
//! Outcomes are decided by the HTTP status and the `OperationOutcome` issue codes
//! ([`error::classify`]); the recorded reason never contains the outcome's diagnostics.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod error;
mod patient;
pub mod resources;
pub mod smart;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::{json, Value};
use wardhook_sdk::artifacts::{read_attachments, Attachment};
use wardhook_sdk::http::{egress, Egress};
use wardhook_sdk::template::{Escape, Template};
use wardhook_sdk::{
    async_trait, BuildContext, ConfigProblem, Context, Event, Handler, HandlerError,
    HandlerFactory, Outcome, PhiLevel, Problems, SecretValue,
};

pub use crate::config::FhirConfig;
use crate::config::{AuthConfig, DocumentContent, NoMatch, ParticipantStatus, ResourceKind};
pub use crate::error::FhirError;
use crate::patient::{PatientLink, PatientMatching};
use crate::smart::{SigningKey, SmartTokens, TokenEndpoint};

/// `application/fhir+json`, the FHIR JSON media type.
const FHIR_JSON: &str = "application/fhir+json";

/// Registers `kind = "fhir"`.
#[derive(Debug)]
pub struct FhirFactory;

/// How requests are authenticated.
#[derive(Debug)]
enum Auth {
    None,
    Bearer(SecretValue),
    Basic {
        username: String,
        password: SecretValue,
    },
    Smart(Box<SmartTokens>),
}

/// One resource the handler writes.
#[derive(Debug)]
struct ResourcePlan {
    kind: ResourceKind,
    template: Template,
}

impl HandlerFactory for FhirFactory {
    type Config = FhirConfig;

    fn build(
        config: FhirConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>> {
        let mut p = Problems::new();
        let base = p.take(wardhook_sdk::http::api_url("base_url", &config.base_url));
        if config.resources.is_empty() {
            p.push(ConfigProblem::new(
                "resources",
                "name at least one resource",
            ));
        }
        let mut seen = Vec::new();
        for kind in &config.resources {
            if seen.contains(kind) {
                p.push(ConfigProblem::new(
                    "resources",
                    format!("{} is listed twice", kind.type_name()),
                ));
            }
            seen.push(*kind);
        }
        if !is_identifier_system(&config.identifier_system) {
            p.push(ConfigProblem::new(
                "identifier_system",
                "must be a URI (urn:… or https://…) without spaces, `|`, `,`, `$` or `\\`",
            ));
        }
        let timeout = p.timeout_secs("timeout_secs", config.timeout_secs);

        // Settings of a resource the handler does not write are a mistake, not a no-op.
        let configured = [
            (
                ResourceKind::Communication,
                config.communication.template.is_some() || config.communication.transcript,
            ),
            (
                ResourceKind::Task,
                config.task.template.is_some()
                    || config.task.owner.is_some()
                    || config.task.due_within_hours.is_some(),
            ),
            (
                ResourceKind::Appointment,
                config.appointment.template.is_some(),
            ),
            (
                ResourceKind::AppointmentResponse,
                config.appointment_response.template.is_some()
                    || config.appointment_response.participant_status.is_some(),
            ),
            (
                ResourceKind::DocumentReference,
                config.document_reference.template.is_some() || config.document_reference.artifacts,
            ),
        ];
        for (kind, set) in configured {
            if set && !config.resources.contains(&kind) {
                p.push(ConfigProblem::new(
                    kind.key(),
                    format!("is set, but {} is not in resources", kind.type_name()),
                ));
            }
        }

        // An AppointmentResponse answers an Appointment: the one written just before it, or one
        // its template references.
        let position = |k: ResourceKind| config.resources.iter().position(|r| *r == k);
        if let Some(response) = position(ResourceKind::AppointmentResponse) {
            match position(ResourceKind::Appointment) {
                Some(appointment) if appointment > response => p.push(ConfigProblem::new(
                    "resources",
                    "Appointment must come before AppointmentResponse, which answers it",
                )),
                None if config.appointment_response.template.is_none() => {
                    p.push(ConfigProblem::new(
                        "appointment_response.template",
                        "an AppointmentResponse needs the Appointment it answers: put Appointment \
                         before it in resources, or set a template whose `appointment` references \
                         one ({\"reference\": \"Appointment/{{ data.appointment_id }}\"})",
                    ))
                }
                _ => {}
            }
        }

        // Minimum necessary: fields read in code are declared like template references.
        if config.communication.transcript {
            p.take(ctx.check_phi("communication.transcript", ["data.transcript"]));
        }
        if config.resources.contains(&ResourceKind::DocumentReference) {
            let field = match config.document_reference.content {
                DocumentContent::Transcript => "data.transcript",
                DocumentContent::Summary => "data.ai_summary",
            };
            p.take(ctx.check_phi("document_reference.content", [field]));
        }
        if config.patient.is_some() {
            p.take(ctx.check_phi("patient", ["caller.phone", "caller.name", "data.birthdate"]));
        }
        let attach_artifacts = p.artifact_limit(
            ctx,
            (
                "document_reference.artifacts",
                config.document_reference.artifacts,
            ),
            (
                "document_reference.max_artifact_bytes",
                config.document_reference.max_artifact_bytes,
            ),
            config::MAX_ARTIFACT_BYTES,
        );
        if ctx.phi() == PhiLevel::None {
            if let Some(t) = &config.communication.template {
                if t.contains("\"payload\"") {
                    p.push(ConfigProblem::new(
                        "communication.template",
                        format!(
                            "handler {:?} has phi = \"none\" but its Communication sets `payload`; \
                             a phi = \"none\" handler sends no call content (set phi = \"full\" \
                             with baa = true for an EHR covered by a business associate agreement)",
                            ctx.name()
                        ),
                    ));
                }
            }
        }

        let mut plans = Vec::new();
        for kind in &config.resources {
            let custom = match kind {
                ResourceKind::Communication => config.communication.template.clone(),
                ResourceKind::Task => config.task.template.clone(),
                ResourceKind::Appointment => config.appointment.template.clone(),
                ResourceKind::AppointmentResponse => config.appointment_response.template.clone(),
                ResourceKind::DocumentReference => config.document_reference.template.clone(),
            };
            let source = custom.unwrap_or_else(|| {
                resources::default_template(*kind, ctx.phi(), config.document_reference.content)
            });
            let key = format!("{}.template", kind.key());
            if let Some(template) = p.take(ctx.template(&key, &source, Escape::JsonString)) {
                plans.push(ResourcePlan {
                    kind: *kind,
                    template,
                });
            }
        }

        let owner = config.task.owner.clone();
        if let Some(o) = &owner {
            if !is_reference(o) {
                p.push(ConfigProblem::new(
                    "task.owner",
                    "must be a relative reference such as Practitioner/123 or Organization/front-desk",
                ));
            }
        }
        if let Some(h) = config.task.due_within_hours {
            if h == 0 || h > 8760 {
                p.push(ConfigProblem::new(
                    "task.due_within_hours",
                    "must be 1 to 8760",
                ));
            }
        }
        let matching = config.patient.as_ref().map(|pc| {
            if pc.when_several == NoMatch::Create {
                p.push(ConfigProblem::new(
                    "patient.when_several",
                    "must be skip or unmatched: with several matches wardhook never guesses and never adds another",
                ));
            }
            PatientMatching {
                when_none: pc.when_none,
                when_several: pc.when_several,
            }
        });

        // Egress: the base URL's host and a configured token endpoint's, plus `allow_hosts`.
        let fixed_token_url = match &config.auth {
            AuthConfig::Smart {
                token_url: Some(raw),
                ..
            } => wardhook_sdk::http::api_url("auth.token_url", raw).ok(),
            _ => None,
        };
        let egress = egress(
            base.iter().chain(fixed_token_url.iter()),
            &config.allow_hosts,
            &mut p,
        );
        let auth = egress.as_ref().and_then(|egress| {
            build_auth(
                config.auth,
                &config.resources,
                matching.as_ref(),
                base.as_ref(),
                egress,
                ctx,
                &mut p,
            )
        });
        let client = egress
            .as_ref()
            .and_then(|e| p.take(e.client_with_ca(config.ca_file.as_deref(), ctx)));
        p.check()?;
        let (Some(base), Some(auth), Some(client)) = (base, auth, client) else {
            return Err(ConfigProblem::incomplete());
        };
        let host = base.host_str().unwrap_or("FHIR server").to_owned();
        Ok(Arc::new(Fhir {
            name: ctx.name().to_owned(),
            base: base.as_str().trim_end_matches('/').to_owned(),
            host,
            plans,
            identifier_system: config.identifier_system,
            transaction: config.transaction,
            matching,
            transcript: config.communication.transcript,
            document_content: config.document_reference.content,
            attach_artifacts,
            owner,
            due_within_hours: config.task.due_within_hours,
            participant_status: config
                .appointment_response
                .participant_status
                .unwrap_or_default(),
            auth,
            timeout,
            client,
        }))
    }
}

fn build_auth(
    config: AuthConfig,
    kinds: &[ResourceKind],
    matching: Option<&PatientMatching>,
    base: Option<&Url>,
    egress: &Egress,
    ctx: &BuildContext,
    p: &mut Problems,
) -> Option<Auth> {
    match config {
        AuthConfig::None => Some(Auth::None),
        AuthConfig::Bearer { token } => p
            .take(ctx.secret_str("auth.token", &token))
            .map(Auth::Bearer),
        AuthConfig::Basic { username, password } => {
            if username.is_empty() || username.contains(':') {
                p.push(ConfigProblem::new(
                    "auth.username",
                    "must be non-empty and without `:`",
                ));
            }
            let password = p.take(ctx.secret_str("auth.password", &password))?;
            Some(Auth::Basic { username, password })
        }
        AuthConfig::Smart {
            client_id,
            private_key,
            kid,
            token_url,
            scope,
        } => {
            if client_id.trim().is_empty() {
                p.push(ConfigProblem::new("auth.client_id", "must not be empty"));
            }
            if kid.as_deref().is_some_and(|k| k.trim().is_empty()) {
                p.push(ConfigProblem::new("auth.kid", "must not be empty"));
            }
            let key = p
                .take(ctx.secret_str("auth.private_key", &private_key))
                .and_then(|pem| {
                    p.take(
                        SigningKey::from_pem(pem.expose().as_bytes(), kid)
                            .map_err(|e| ConfigProblem::new("auth.private_key", e.to_string())),
                    )
                });
            let endpoint = match token_url {
                Some(raw) => p
                    .take(wardhook_sdk::http::api_url("auth.token_url", &raw))
                    .map(TokenEndpoint::Fixed),
                None => base.and_then(|b| {
                    let well_known = format!(
                        "{}/.well-known/smart-configuration",
                        b.as_str().trim_end_matches('/')
                    );
                    p.take(wardhook_sdk::http::api_url("base_url", &well_known))
                        .map(|well_known| TokenEndpoint::Discover {
                            well_known,
                            found: tokio::sync::Mutex::new(None),
                            egress: egress.clone(),
                        })
                }),
            };
            let scope = scope.unwrap_or_else(|| default_scope(kinds, matching));
            Some(Auth::Smart(Box::new(SmartTokens::new(
                client_id, key?, endpoint?, scope,
            ))))
        }
    }
}

/// SMART v2 scopes for what the handler does: `system/<Type>.c` per resource, and
/// `system/Patient.rs` (plus `.c` when it may create) for matching.
fn default_scope(kinds: &[ResourceKind], matching: Option<&PatientMatching>) -> String {
    let mut scopes: Vec<String> = kinds
        .iter()
        .map(|k| format!("system/{}.c", k.type_name()))
        .collect();
    if let Some(m) = matching {
        scopes.push("system/Patient.rs".into());
        if m.when_none == NoMatch::Create {
            scopes.push("system/Patient.c".into());
        }
    }
    scopes.join(" ")
}

fn is_identifier_system(s: &str) -> bool {
    s.contains(':')
        && !s.is_empty()
        && s.len() <= 255
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '|' | ',' | '$' | '\\'))
}

/// `Type/id`: a FHIR resource type and a FHIR id.
fn is_reference(s: &str) -> bool {
    let Some((ty, id)) = s.split_once('/') else {
        return false;
    };
    ty.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && ty.chars().all(|c| c.is_ascii_alphabetic())
        && is_fhir_id(id)
}

/// A FHIR search value with the search escapes (`\`, `|`, `,`, `$`) applied.
pub(crate) fn search_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | '|' | ',' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A configured FHIR adapter.
#[derive(Debug)]
pub struct Fhir {
    name: String,
    /// The base URL without a trailing slash.
    base: String,
    host: String,
    plans: Vec<ResourcePlan>,
    identifier_system: String,
    transaction: bool,
    matching: Option<PatientMatching>,
    transcript: bool,
    document_content: DocumentContent,
    /// `document_reference.max_artifact_bytes` when `document_reference.artifacts` is on.
    attach_artifacts: Option<u64>,
    owner: Option<String>,
    due_within_hours: Option<u32>,
    participant_status: ParticipantStatus,
    auth: Auth,
    timeout: Duration,
    client: reqwest::Client,
}

/// A 2xx answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) location: Option<String>,
}

/// One resource ready to send.
#[derive(Debug)]
struct Write {
    /// `app_data` key.
    key: &'static str,
    type_name: &'static str,
    resource: Value,
    /// `identifier=<system>|<value>`, escaped for a query string.
    condition: String,
    /// A `DocumentReference`'s `content` attachments so far (the event's text), completed by
    /// [`complete_documents`] once the captured artifacts are read; `None` for other types.
    document_content: Option<Vec<Value>>,
}

impl Fhir {
    /// Send one request with the configured auth; for SMART, a 401 fetches one new token and
    /// repeats the request once. Returns 2xx answers; classifies everything else.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        if_none_exist: Option<&str>,
        ctx: &Context,
    ) -> Result<Answer, FhirError> {
        let mut token = match &self.auth {
            Auth::Smart(t) => Some(t.token(&self.client, ctx.time_left(self.timeout)).await?),
            _ => None,
        };
        let mut refreshed = false;
        loop {
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .timeout(ctx.time_left(self.timeout))
                .header(reqwest::header::ACCEPT, FHIR_JSON);
            request = match (&self.auth, &token) {
                (Auth::Smart(_), Some(t)) => request.bearer_auth(t.expose()),
                (Auth::Bearer(t), _) => request.bearer_auth(t.expose()),
                (Auth::Basic { username, password }, _) => {
                    request.basic_auth(username, Some(password.expose()))
                }
                _ => request,
            };
            if let Some(cond) = if_none_exist {
                request = request.header("If-None-Exist", cond);
            }
            if let Some(b) = body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, FHIR_JSON)
                    .body(b.to_string());
            }
            let response = request
                .send()
                .await
                .map_err(|e| FhirError::request(&self.host, &e))?;
            let status = response.status().as_u16();
            let retry_after = smart::retry_after(response.headers());
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = response
                .bytes()
                .await
                .map_err(|e| FhirError::request(&self.host, &e))?;
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if (200..300).contains(&status) {
                return Ok(Answer {
                    status,
                    body,
                    location,
                });
            }
            if status == 401 {
                if let (Auth::Smart(tokens), Some(rejected)) = (&self.auth, &token) {
                    if refreshed {
                        return Err(FhirError::AuthRefused {
                            host: self.host.clone(),
                        });
                    }
                    let fresh = tokens
                        .refresh(&self.client, ctx.time_left(self.timeout), rejected)
                        .await?;
                    token = Some(fresh);
                    refreshed = true;
                    continue;
                }
            }
            return Err(error::classify(
                status,
                error::issue_codes(&body),
                retry_after,
                &self.host,
            ));
        }
    }

    /// `<base>/<path>`.
    pub(crate) fn url(&self, path: &str) -> Result<Url, FhirError> {
        Url::parse(&format!("{}/{path}", self.base)).map_err(|_| FhirError::BadResponse {
            host: self.host.clone(),
            what: "unusable URL",
        })
    }

    pub(crate) fn bad(&self, what: &'static str) -> FhirError {
        FhirError::BadResponse {
            host: self.host.clone(),
            what,
        }
    }

    /// The identifier value of `resource_key` for this invocation.
    fn identifier_value(&self, ctx: &Context, resource_key: &str) -> String {
        format!("{}:{resource_key}", ctx.idempotency_key())
    }

    /// The `If-None-Exist` condition for an identifier.
    fn condition(&self, value: &str) -> String {
        use wardhook_sdk::template::percent_encode_component as enc;
        format!(
            "identifier={}|{}",
            enc(&self.identifier_system),
            enc(&search_escape(value))
        )
    }

    /// Render and complete every configured resource but a `DocumentReference`'s `content`,
    /// which waits for the artifacts ([`complete_documents`]): everything that can fail on the
    /// event fails here, before any artifact is read.
    fn build_writes(
        &self,
        event: &Event,
        ctx: &Context,
        patient: Option<&str>,
        unmatched: Option<&str>,
        patient_later: bool,
    ) -> Result<Vec<Write>, FhirError> {
        let vars = ctx.template_vars(event);
        let mut writes = Vec::new();
        for plan in &self.plans {
            let rendered = plan
                .template
                .render(&vars)
                .map_err(|e| FhirError::template(plan.kind.key(), &e))?;
            let mut resource = resources::parse_rendered(plan.kind, &rendered)?;
            let value = self.identifier_value(ctx, plan.kind.key());
            resources::add_identifier(&mut resource, &self.identifier_system, &value);
            // A Patient created in the same write is referenced once its URL is known.
            if !patient_later {
                resources::set_patient(plan.kind, &mut resource, patient);
            }
            if let Some(why) = unmatched {
                resources::add_unmatched_tag(&mut resource, why);
            }
            let mut document_content = None;
            match plan.kind {
                ResourceKind::Communication if self.transcript => {
                    if let Some(text) = resources::attachment_text(event.data.get("transcript")) {
                        resources::add_payload_attachment(
                            &mut resource,
                            resources::text_attachment(&text, "Call transcript"),
                        );
                    }
                }
                ResourceKind::Task => {
                    if let Some(owner) = &self.owner {
                        resources::set_default(&mut resource, "owner", json!({"reference": owner}));
                    }
                    if let Some(hours) = self.due_within_hours {
                        // `hours` is at most 8760 (checked at build), so this cannot overflow.
                        let due = event.occurred_at.unwrap_or(event.received_at)
                            + wardhook_sdk::chrono::Duration::hours(i64::from(hours));
                        resources::set_default(
                            &mut resource,
                            "restriction",
                            json!({"period": {"end": due.to_rfc3339()}}),
                        );
                    }
                }
                ResourceKind::AppointmentResponse => {
                    resources::set_default(
                        &mut resource,
                        "participantStatus",
                        json!(self.participant_status.code()),
                    );
                    self.check_answered_appointment(&resource)?;
                }
                ResourceKind::DocumentReference => {
                    let (text, title) = match self.document_content {
                        DocumentContent::Transcript => (
                            resources::attachment_text(event.data.get("transcript")),
                            "Call transcript",
                        ),
                        DocumentContent::Summary => (
                            resources::attachment_text(resources::summary(&event.data)),
                            "Call summary",
                        ),
                    };
                    document_content = Some(
                        text.map(|t| resources::text_attachment(&t, title))
                            .into_iter()
                            .collect(),
                    );
                }
                _ => {}
            }
            writes.push(Write {
                key: plan.kind.key(),
                type_name: plan.kind.type_name(),
                condition: self.condition(&value),
                resource,
                document_content,
            });
        }
        Ok(writes)
    }

    /// An `appointment` the template set must be `Appointment/<id>` (a value from the event
    /// must not point elsewhere); without one, the handler must be writing the Appointment,
    /// which is referenced once its id or `urn:uuid` is known.
    fn check_answered_appointment(&self, resource: &Value) -> Result<(), FhirError> {
        let what = match resource.get("appointment") {
            Some(a) => match a.get("reference").and_then(Value::as_str) {
                Some(r) if r.strip_prefix("Appointment/").is_some_and(is_fhir_id) => return Ok(()),
                _ => "appointment.reference must be Appointment/<id>",
            },
            None if self
                .plans
                .iter()
                .any(|p| p.kind == ResourceKind::Appointment) =>
            {
                return Ok(())
            }
            None => {
                "must set appointment.reference (Appointment/<id>): Appointment is not in resources"
            }
        };
        Err(FhirError::Template {
            key: ResourceKind::AppointmentResponse.key(),
            what: what.to_owned(),
        })
    }

    async fn deliver(&self, event: &Event, ctx: &Context) -> Result<Outcome, FhirError> {
        let link = match &self.matching {
            Some(m) => m.find(self, event, ctx).await?,
            None => PatientLink::NotMatched,
        };
        let mut data = serde_json::Map::new();
        if let Some(summary) = link.summary() {
            data.insert("patient".into(), summary);
        }
        if link.is_skip() {
            data.insert("skipped".into(), Value::Bool(true));
            return Ok(Outcome::done()
                .with_destination(self.host.clone())
                .with_data(Value::Object(data)));
        }
        let new_patient = link.new_patient(self, event, ctx);
        let writes = self.build_writes(
            event,
            ctx,
            link.reference(),
            link.unmatched_reason(),
            new_patient.is_some(),
        )?;
        // Read (and audited) only once the handler knows it writes and every resource built.
        let artifacts = match self.attach_artifacts {
            Some(max) => read_attachments(ctx, max, "document_reference.max_artifact_bytes")
                .await
                .map_err(FhirError::Artifact)?,
            None => Vec::new(),
        };
        let mut writes = complete_documents(writes, &artifacts);
        let total = writes.len() + usize::from(new_patient.is_some());
        let status = if self.transaction && total > 1 {
            self.write_transaction(new_patient, &mut writes, &mut data, ctx)
                .await?
        } else {
            self.write_one_by_one(new_patient, &mut writes, &mut data, ctx)
                .await?
        };
        let mut outcome = Outcome::done()
            .with_destination(self.host.clone())
            .with_data(Value::Object(data));
        if let Some(s) = status {
            outcome = outcome.with_status(s);
        }
        Ok(outcome)
    }

    /// Conditional creates, one request each, in order: a new Patient first, so the others can
    /// reference it, and the Communication before the Task that points at it.
    async fn write_one_by_one(
        &self,
        new_patient: Option<Write>,
        writes: &mut [Write],
        data: &mut serde_json::Map<String, Value>,
        ctx: &Context,
    ) -> Result<Option<u16>, FhirError> {
        let mut last = None;
        let mut patient_ref = None;
        if let Some(p) = new_patient {
            let (status, created) = self.create(&p, ctx).await?;
            patient_ref = created
                .get("reference")
                .and_then(Value::as_str)
                .map(str::to_owned);
            data.insert(
                "patient".into(),
                json!({"match": "created", "reference": patient_ref}),
            );
            last = Some(status);
        }
        let mut communication_ref = None;
        let mut appointment_ref = None;
        for w in writes.iter_mut() {
            if let Some(r) = &patient_ref {
                let kind = kind_of(w.key);
                resources::set_patient(kind, &mut w.resource, Some(r));
            }
            link_earlier(w, communication_ref.as_deref(), appointment_ref.as_deref());
            let (status, created) = self.create(w, ctx).await?;
            let reference = created
                .get("reference")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match w.key {
                "communication" => communication_ref = reference,
                "appointment" => appointment_ref = reference,
                _ => {}
            }
            data.insert(w.key.into(), created);
            last = Some(status);
        }
        Ok(last)
    }

    /// One conditional create; `app_data` entry `{"id", "reference", "created"}`.
    async fn create(&self, w: &Write, ctx: &Context) -> Result<(u16, Value), FhirError> {
        let answer = self
            .send(
                Method::POST,
                self.url(w.type_name)?,
                Some(&w.resource),
                Some(&w.condition),
                ctx,
            )
            .await?;
        let id = answer
            .body
            .get("id")
            .and_then(Value::as_str)
            .filter(|_| {
                answer.body.get("resourceType").and_then(Value::as_str) == Some(w.type_name)
            })
            .map(str::to_owned)
            .or_else(|| {
                answer
                    .location
                    .as_deref()
                    .and_then(|l| id_from_location(l, w.type_name))
            })
            .ok_or_else(|| self.bad("created resource without id or Location"))?;
        Ok((
            answer.status,
            created_entry(w.type_name, &id, answer.status == 201),
        ))
    }

    /// Every write in one `transaction` Bundle: the server applies all or none. Entries refer
    /// to each other by `urn:uuid:` full URLs, which the server replaces with the real ids.
    async fn write_transaction(
        &self,
        new_patient: Option<Write>,
        writes: &mut [Write],
        data: &mut serde_json::Map<String, Value>,
        ctx: &Context,
    ) -> Result<Option<u16>, FhirError> {
        let mut entries = Vec::new();
        let mut order: Vec<(&'static str, &'static str)> = Vec::new();
        let mut patient_url = None;
        if let Some(p) = &new_patient {
            let full_url = urn_uuid()?;
            entries.push(bundle_entry(&full_url, p));
            order.push((p.key, p.type_name));
            patient_url = Some(full_url);
        }
        let mut communication_url = None;
        let mut appointment_url = None;
        for w in writes.iter_mut() {
            let full_url = urn_uuid()?;
            if let Some(r) = &patient_url {
                resources::set_patient(kind_of(w.key), &mut w.resource, Some(r));
            }
            link_earlier(w, communication_url.as_deref(), appointment_url.as_deref());
            match w.key {
                "communication" => communication_url = Some(full_url.clone()),
                "appointment" => appointment_url = Some(full_url.clone()),
                _ => {}
            }
            entries.push(bundle_entry(&full_url, w));
            order.push((w.key, w.type_name));
        }
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let base = Url::parse(&format!("{}/", self.base)).map_err(|_| self.bad("unusable URL"))?;
        let answer = self
            .send(Method::POST, base, Some(&bundle), None, ctx)
            .await?;
        let results = answer
            .body
            .get("entry")
            .and_then(Value::as_array)
            .filter(|e| e.len() == order.len())
            .ok_or_else(|| self.bad("transaction-response without one entry per request"))?;
        for ((key, type_name), entry) in order.iter().zip(results) {
            let response = entry.get("response");
            let id = response
                .and_then(|r| r.get("location"))
                .and_then(Value::as_str)
                .and_then(|l| id_from_location(l, type_name))
                .ok_or_else(|| self.bad("transaction-response entry without a location"))?;
            let created = response
                .and_then(|r| r.get("status"))
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with("201"));
            let entry = created_entry(type_name, &id, created);
            if *key == "patient" {
                data.insert(
                    "patient".into(),
                    json!({"match": "created", "reference": entry["reference"].clone()}),
                );
            } else {
                data.insert((*key).into(), entry);
            }
        }
        Ok(Some(answer.status))
    }
}

/// Give each `DocumentReference` its `content`: the event's text, then `artifacts`. FHIR
/// requires content; a document with none is not written.
fn complete_documents(writes: Vec<Write>, artifacts: &[Attachment]) -> Vec<Write> {
    writes
        .into_iter()
        .filter_map(|mut w| {
            let Some(text) = w.document_content.take() else {
                return Some(w);
            };
            let content: Vec<Value> = text
                .into_iter()
                .chain(artifacts.iter().map(resources::artifact_attachment))
                .map(|a| json!({ "attachment": a }))
                .collect();
            if content.is_empty() {
                return None;
            }
            resources::set_default(&mut w.resource, "content", Value::Array(content));
            Some(w)
        })
        .collect()
}

/// Point a write at resources written before it for the same event, unless its template did:
/// a `Task` at the call's `Communication` (`focus`), an `AppointmentResponse` at the
/// `Appointment` it answers.
fn link_earlier(w: &mut Write, communication: Option<&str>, appointment: Option<&str>) {
    let (element, target) = match w.key {
        "task" => ("focus", communication),
        "appointment_response" => ("appointment", appointment),
        _ => return,
    };
    if let Some(r) = target {
        resources::set_default(&mut w.resource, element, json!({"reference": r}));
    }
}

fn kind_of(key: &str) -> ResourceKind {
    match key {
        "task" => ResourceKind::Task,
        "appointment" => ResourceKind::Appointment,
        "appointment_response" => ResourceKind::AppointmentResponse,
        "document_reference" => ResourceKind::DocumentReference,
        _ => ResourceKind::Communication,
    }
}

fn bundle_entry(full_url: &str, w: &Write) -> Value {
    // `ifNoneExist` is the query part only; the URL is the resource type.
    json!({
        "fullUrl": full_url,
        "resource": w.resource,
        "request": {"method": "POST", "url": w.type_name, "ifNoneExist": w.condition},
    })
}

fn created_entry(type_name: &str, id: &str, created: bool) -> Value {
    json!({"id": id, "reference": format!("{type_name}/{id}"), "created": created})
}

/// The id in `…/Type/id` or `…/Type/id/_history/n` (relative or absolute).
fn id_from_location(location: &str, type_name: &str) -> Option<String> {
    let path = location.split(['?', '#']).next().unwrap_or_default();
    let parts: Vec<&str> = path.split('/').collect();
    let at = parts.iter().rposition(|p| *p == type_name)?;
    let id = parts.get(at + 1)?;
    is_fhir_id(id).then(|| (*id).to_owned())
}

/// A FHIR logical id (`[A-Za-z0-9\-\.]{1,64}`), and not `.` or `..`, which would move up a
/// path when a later handler puts the reference into a URL.
pub(crate) fn is_fhir_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !id.chars().all(|c| c == '.')
}

/// A fresh `urn:uuid:` (version 4) for a Bundle entry.
fn urn_uuid() -> Result<String, FhirError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| FhirError::Signing)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[async_trait]
impl Handler for Fhir {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError> {
        self.deliver(event, ctx).await.map_err(HandlerError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_relative_and_absolute_locations() {
        assert_eq!(
            id_from_location("Task/abc/_history/1", "Task").as_deref(),
            Some("abc")
        );
        assert_eq!(
            id_from_location(
                "https://ehr.example/fhir/R4/Communication/9f-1.a/_history/2",
                "Communication"
            )
            .as_deref(),
            Some("9f-1.a")
        );
        assert_eq!(id_from_location("Task/../../x", "Task"), None);
        assert_eq!(id_from_location("Patient/1", "Task"), None);
    }

    #[test]
    fn search_values_are_escaped() {
        assert_eq!(search_escape(r"a|b,c$d\e"), r"a\|b\,c\$d\\e");
    }

    #[test]
    fn references_and_identifier_systems_are_checked() {
        assert!(is_reference("Practitioner/123"));
        assert!(!is_reference("Practitioner/"));
        assert!(!is_reference("practitioner/1"));
        assert!(!is_reference("Practitioner/1/2"));
        assert!(is_identifier_system("urn:wardhook:event"));
        assert!(is_identifier_system("https://clinic.example/ids/wardhook"));
        assert!(!is_identifier_system("wardhook"));
        assert!(!is_identifier_system("urn:a|b"));
    }

    #[test]
    fn bundle_entry_ids_are_version_4_uuids() {
        let u = urn_uuid().expect("uuid");
        assert_eq!(u.len(), "urn:uuid:".len() + 36);
        assert_eq!(&u[23..24], "4");
        assert_ne!(u, urn_uuid().expect("uuid"));
    }
}

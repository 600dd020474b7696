//! `kind = "hubspot"`: every call becomes a HubSpot contact, with the AI summary as a note.
//!
//! Built only on `wardhook-sdk`, so it doubles as an example of a real adapter. For each event:
//!
//! 1. The contact's properties are assembled: defaults from the canonical caller
//!    (`firstname`/`lastname` split from `caller.name`, `phone`, `email`, `company` from the
//!    sender's `company_name`/`company` field, the lead source), then the configured
//!    `properties` templates on top. A property that renders empty is left out, so an update
//!    never blanks what the clinic already has.
//! 2. Upsert through the CRM v3 objects API: search by e-mail (HubSpot's unique key for
//!    contacts), or by phone when the caller gave no e-mail; PATCH the match, else create.
//!    A create that races another one (409 "Contact already exists. Existing ID: …") becomes a
//!    PATCH of the existing contact. Repeating the whole handler is therefore harmless.
//! 3. Optionally a note holding the AI summary, associated with the contact. The note ends with
//!    a reference line carrying the job's idempotency key (`delivery id:handler`, no PHI). A
//!    retry (attempt 2 or later) first looks through the contact's associated notes for that
//!    reference and reuses the note it finds, so an answer lost after HubSpot created the note
//!    does not add a second one. It reads the associations and the notes directly rather than
//!    through HubSpot's search index, which lags behind writes.
//!
//! Outcomes: 429 (HubSpot's 10-second windows, `Retry-After` honoured), 408 and 5xx are
//! retryable; 400/422 (a property HubSpot does not know or a bad value), 401 (private-app
//! tokens cannot be refreshed) and other 4xx are permanent. Nothing from the payload or from
//! HubSpot's answers is logged or put into an error reason.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod error;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};
use serde_json::{json, Map, Value};
use wardhook_sdk::chrono::SecondsFormat;
use wardhook_sdk::http::{outbound, Outbound, Unreachable};
use wardhook_sdk::template::{html_escape, Escape, Template};
use wardhook_sdk::{
    async_trait, BuildContext, ConfigProblem, Context, Event, Handler, HandlerError,
    HandlerFactory, Outcome, Problems, SecretValue,
};

pub use crate::config::HubSpotConfig;
pub use crate::error::HubSpotError;
use crate::error::RATE_LIMIT_WINDOW;

/// Fields read in code (not through templates), declared to the minimum-necessary check: the
/// adapter therefore needs `phi = "full"` and `baa = true`.
const FIELDS_READ: &[&str] = &[
    "caller.name",
    "caller.phone",
    "caller.email",
    "data.custom_fields.company_name",
    "data.ai_summary",
];

/// HubSpot-defined association type "note to contact".
const NOTE_TO_CONTACT: u32 = 202;

/// Pages of a contact's note associations a retry reads looking for its earlier note (100 per
/// page). A contact with more notes than this gets at most one extra note on a retry.
const NOTE_PAGES: usize = 5;

/// Registers `kind = "hubspot"`.
#[derive(Debug)]
pub struct HubSpotFactory;

impl HandlerFactory for HubSpotFactory {
    type Config = HubSpotConfig;

    fn build(
        config: HubSpotConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>> {
        let mut p = Problems::new();
        p.take(ctx.check_phi("", FIELDS_READ.iter().copied()));
        let base_url = p.take(wardhook_sdk::http::api_url(
            "base_url",
            config.base_url.trim_end_matches('/'),
        ));
        let token = p.take(ctx.secret_str("token", &config.token));
        if let Some(t) = &token {
            if reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.expose())).is_err() {
                p.push(ConfigProblem::new(
                    "token",
                    "holds characters not allowed in a header",
                ));
            }
        }
        let mut properties = Vec::new();
        for (name, source) in &config.properties {
            let key = format!("properties.{name}");
            if let Some(t) = p.take(ctx.template(&key, source, Escape::None)) {
                properties.push((name.clone(), t));
            }
        }
        let timeout = p.timeout_secs("timeout_secs", config.timeout_secs);
        let outbound = base_url
            .as_ref()
            .and_then(|url| outbound([url], &config.allow_hosts, None, ctx, &mut p));
        p.check()?;
        let (Some(base_url), Some(token), Some(outbound)) = (base_url, token, outbound) else {
            return Err(ConfigProblem::incomplete());
        };
        let host = base_url.host_str().unwrap_or("HubSpot").to_owned();
        Ok(Arc::new(HubSpot {
            name: ctx.name().to_owned(),
            base_url,
            host,
            token,
            properties,
            lead_source: config.lead_source,
            lead_source_property: config.lead_source_property,
            note: config.note,
            timeout,
            outbound,
        }))
    }
}

/// A configured HubSpot adapter.
#[derive(Debug)]
pub struct HubSpot {
    name: String,
    base_url: Url,
    host: String,
    token: SecretValue,
    properties: Vec<(String, Template)>,
    lead_source: String,
    lead_source_property: String,
    note: bool,
    timeout: Duration,
    /// Where requests may go: the API root's host and `allow_hosts`.
    outbound: Outbound,
}

/// What one API call answered: status and JSON body (`Null` when empty).
struct Answer {
    status: u16,
    body: Value,
}

impl HubSpot {
    /// The contact's properties for `event`: defaults, then the configured templates.
    fn contact_properties(
        &self,
        event: &Event,
        ctx: &Context,
    ) -> Result<BTreeMap<String, String>, HubSpotError> {
        let mut props = BTreeMap::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) {
                props.insert(k.to_owned(), v.to_owned());
            }
        };
        if let Some(name) = event.caller.name.as_deref() {
            let mut words = name.split_whitespace();
            let first = words.next();
            let rest: Vec<&str> = words.collect();
            put("firstname", first);
            put("lastname", Some(&rest.join(" ")));
        }
        put("phone", event.caller.phone.as_deref());
        put("email", event.caller.email.as_deref());
        put("company", company(&event.data));
        if !self.lead_source_property.is_empty() {
            put(&self.lead_source_property, Some(&self.lead_source));
        }
        if !self.properties.is_empty() {
            wardhook_sdk::template::render_fields(
                &self.properties,
                &ctx.template_vars(event),
                &mut props,
            )
            .map_err(|(property, source)| HubSpotError::Template { property, source })?;
        }
        Ok(props)
    }

    /// `path` may carry a query (`?limit=100`), already encoded.
    fn url(&self, path: &str) -> Url {
        let mut url = self.base_url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        url.set_path(&format!("{base}{path}"));
        url.set_query(query);
        url
    }

    /// One JSON request. 2xx and 409 (the caller decides about conflicts) are answers; every
    /// other status is classified here, once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        ctx: &Context,
    ) -> Result<Answer, HubSpotError> {
        let mut request = self
            .outbound
            .client()
            .request(method, self.url(path))
            .bearer_auth(self.token.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(ctx.time_left(self.timeout));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = self
            .outbound
            .send::<HubSpotError>(request, &self.host)
            .await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let host = self.host.clone();
        match status {
            200..=299 | 409 => {
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| Unreachable::new(&host, &e))?;
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                Ok(Answer { status, body })
            }
            401 => Err(HubSpotError::Unauthorized { host }),
            403 => Err(HubSpotError::Forbidden { host }),
            400 | 422 => Err(HubSpotError::Validation { status, host }),
            _ => {
                let mut retry_after = retry_after.as_deref().and_then(|v| {
                    wardhook_sdk::parse_retry_after(v, wardhook_sdk::chrono::Utc::now())
                });
                if status == 429 && retry_after.is_none() {
                    retry_after = Some(RATE_LIMIT_WINDOW);
                }
                Err(HubSpotError::Status {
                    status,
                    host,
                    retry_after,
                })
            }
        }
    }

    /// The id of the contact whose `property` equals `value`, if any.
    async fn search(
        &self,
        property: &str,
        value: &str,
        ctx: &Context,
    ) -> Result<Option<String>, HubSpotError> {
        let body = json!({
            "filterGroups": [{"filters": [{"propertyName": property, "operator": "EQ", "value": value}]}],
            "properties": ["email", "phone"],
            "limit": 1,
        });
        let answer = self
            .call(
                Method::POST,
                "/crm/v3/objects/contacts/search",
                Some(&body),
                ctx,
            )
            .await?;
        if answer.status == 409 {
            return Err(HubSpotError::Status {
                status: 409,
                host: self.host.clone(),
                retry_after: None,
            });
        }
        let results = answer
            .body
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| self.bad("search results"))?;
        Ok(results.first().and_then(object_id))
    }

    async fn update(
        &self,
        id: &str,
        properties: &Value,
        ctx: &Context,
    ) -> Result<(), HubSpotError> {
        let path = format!(
            "/crm/v3/objects/contacts/{}",
            path_segment(id).ok_or_else(|| self.bad("contact id"))?
        );
        let answer = self
            .call(
                Method::PATCH,
                &path,
                Some(&json!({"properties": properties})),
                ctx,
            )
            .await?;
        if answer.status == 409 {
            // Changing the e-mail to one another contact already has.
            return Err(HubSpotError::Validation {
                status: 409,
                host: self.host.clone(),
            });
        }
        Ok(())
    }

    /// Create, or — when HubSpot says the contact already exists — update that one.
    async fn create(
        &self,
        properties: &Value,
        ctx: &Context,
    ) -> Result<(String, bool), HubSpotError> {
        let answer = self
            .call(
                Method::POST,
                "/crm/v3/objects/contacts",
                Some(&json!({"properties": properties})),
                ctx,
            )
            .await?;
        if answer.status == 409 {
            let existing = answer
                .body
                .get("message")
                .and_then(Value::as_str)
                .and_then(existing_id)
                .ok_or_else(|| self.bad("existing contact id in a 409"))?;
            self.update(&existing, properties, ctx).await?;
            return Ok((existing, false));
        }
        let id = object_id(&answer.body).ok_or_else(|| self.bad("contact id"))?;
        Ok((id, true))
    }

    async fn add_note(
        &self,
        contact_id: &str,
        summary: &str,
        event: &Event,
        ctx: &Context,
    ) -> Result<String, HubSpotError> {
        let at = event.occurred_at.unwrap_or(event.received_at);
        let call = event
            .call_id
            .as_deref()
            .map(|c| format!(", call {}", html_escape(c)))
            .unwrap_or_default();
        let reference = note_reference(ctx.idempotency_key());
        if ctx.attempt() > 1 {
            if let Some(id) = self.find_note(contact_id, &reference, ctx).await? {
                return Ok(id);
            }
        }
        let note_body = format!(
            "<p><strong>AI call summary</strong> ({}{call})</p><p>{}</p>{reference}",
            html_escape(&event.event_type),
            html_escape(summary)
        );
        let body = json!({
            "properties": {
                "hs_timestamp": at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "hs_note_body": note_body,
            },
            "associations": [{
                "to": {"id": contact_id},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_CONTACT}],
            }],
        });
        let answer = self
            .call(Method::POST, "/crm/v3/objects/notes", Some(&body), ctx)
            .await?;
        if answer.status == 409 {
            return Err(HubSpotError::Validation {
                status: 409,
                host: self.host.clone(),
            });
        }
        object_id(&answer.body).ok_or_else(|| self.bad("note id"))
    }

    /// The id of a note associated with `contact_id` whose body holds `reference`: the note an
    /// earlier attempt of this job created.
    async fn find_note(
        &self,
        contact_id: &str,
        reference: &str,
        ctx: &Context,
    ) -> Result<Option<String>, HubSpotError> {
        let base = format!(
            "/crm/v4/objects/contacts/{}/associations/notes",
            path_segment(contact_id).ok_or_else(|| self.bad("contact id"))?
        );
        let mut after: Option<String> = None;
        for _ in 0..NOTE_PAGES {
            let mut path = format!("{base}?limit=100");
            if let Some(a) = &after {
                path.push_str("&after=");
                path.push_str(&wardhook_sdk::template::percent_encode_component(a));
            }
            let page = self.call(Method::GET, &path, None, ctx).await?;
            let ids: Vec<Value> = page
                .body
                .get("results")
                .and_then(Value::as_array)
                .ok_or_else(|| self.bad("note associations"))?
                .iter()
                .filter_map(|r| match r.get("toObjectId")? {
                    Value::Number(n) => Some(json!({"id": n.to_string()})),
                    Value::String(s) => Some(json!({"id": s})),
                    _ => None,
                })
                .collect();
            if !ids.is_empty() {
                let notes = self
                    .call(
                        Method::POST,
                        "/crm/v3/objects/notes/batch/read",
                        Some(&json!({"properties": ["hs_note_body"], "inputs": ids})),
                        ctx,
                    )
                    .await?;
                let found = notes
                    .body
                    .get("results")
                    .and_then(Value::as_array)
                    .ok_or_else(|| self.bad("notes"))?
                    .iter()
                    .find(|n| {
                        n.pointer("/properties/hs_note_body")
                            .and_then(Value::as_str)
                            .is_some_and(|b| b.contains(reference))
                    })
                    .and_then(object_id);
                if found.is_some() {
                    return Ok(found);
                }
            }
            after = page
                .body
                .pointer("/paging/next/after")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if after.is_none() {
                break;
            }
        }
        Ok(None)
    }

    fn bad(&self, what: &'static str) -> HubSpotError {
        HubSpotError::BadResponse {
            host: self.host.clone(),
            what,
        }
    }

    async fn upsert(&self, event: &Event, ctx: &Context) -> Result<Outcome, HubSpotError> {
        let props = self.contact_properties(event, ctx)?;
        let (key, value) = match (props.get("email"), props.get("phone")) {
            (Some(email), _) => ("email", email.clone()),
            (None, Some(phone)) => ("phone", phone.clone()),
            (None, None) => return Err(HubSpotError::NoIdentity),
        };
        let properties = Value::Object(
            props
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect::<Map<_, _>>(),
        );
        let (contact_id, created) = match self.search(key, &value, ctx).await? {
            Some(id) => {
                self.update(&id, &properties, ctx).await?;
                (id, false)
            }
            None => self.create(&properties, ctx).await?,
        };
        let mut note_id = Value::Null;
        if self.note {
            if let Some(summary) = summary(&event.data) {
                note_id = Value::String(self.add_note(&contact_id, summary, event, ctx).await?);
            }
        }
        Ok(Outcome::done()
            .with_status(if created { 201 } else { 200 })
            .with_destination(self.host.clone())
            .with_data(json!({
                "contact_id": contact_id,
                "created": created,
                "matched_by": key,
                "note_id": note_id,
            })))
    }
}

#[async_trait]
impl Handler for HubSpot {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError> {
        self.upsert(event, ctx).await.map_err(HandlerError::from)
    }
}

/// The company the caller named, from NextPhone-style custom fields or the payload's top level.
fn company(data: &Value) -> Option<&str> {
    let custom = data.get("custom_fields");
    ["company_name", "company"]
        .iter()
        .find_map(|k| {
            custom
                .and_then(|c| c.get(*k))
                .or_else(|| data.get(*k))
                .and_then(Value::as_str)
        })
        .filter(|s| !s.trim().is_empty())
}

/// The AI summary: `data.ai_summary` (NextPhone), else `data.summary`.
fn summary(data: &Value) -> Option<&str> {
    ["ai_summary", "summary"]
        .iter()
        .find_map(|k| data.get(*k).and_then(Value::as_str))
        .filter(|s| !s.trim().is_empty())
}

/// HubSpot ids are strings of digits in JSON (`"id": "512"`), numbers in some older answers.
fn object_id(v: &Value) -> Option<String> {
    match v.get("id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `Contact already exists. Existing ID: 12345` → `12345`.
fn existing_id(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("Existing ID:")?;
    let id: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!id.is_empty()).then_some(id)
}

/// The last line of every note: ties it to its job, so a retry can recognize it.
fn note_reference(idempotency_key: &str) -> String {
    format!("<p>wardhook ref {}</p>", html_escape(idempotency_key))
}

/// An id as one path segment: HubSpot ids are digits, anything else is encoded, and an id that
/// would be empty, `.` or `..` (climbing the API's path) is not used at all.
fn path_segment(id: &str) -> Option<String> {
    wardhook_sdk::template::path_segment(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_id_is_read_from_hubspots_conflict_message() {
        assert_eq!(
            existing_id("Contact already exists. Existing ID: 12345").as_deref(),
            Some("12345")
        );
        assert_eq!(existing_id("Contact already exists."), None);
    }
}

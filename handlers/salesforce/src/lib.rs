//! `kind = "salesforce"`: every call becomes a Salesforce Lead, without duplicates.
//!
//! Built only on `wardhook-sdk`, so it doubles as an example of an adapter with OAuth2. For
//! each event:
//!
//! 1. The Lead's fields: `FirstName`/`LastName` split from `caller.name` (a single word is the
//!    `LastName`), `Phone`, `Email`, `Company` from the sender's `company_name`/`company`,
//!    `Description` from the AI summary, `LeadSource`; then the configured `fields` templates.
//! 2. Duplicate check: a SOQL query for an unconverted Lead with the same e-mail or phone
//!    (Salesforce has no upsert on those). A match is PATCHed — without the placeholder
//!    `LastName`/`Company`, which would overwrite real values; otherwise a Lead is created,
//!    with the configured fallbacks for the two fields Salesforce requires. Because a retry
//!    finds the Lead an earlier attempt created, repeats are harmless.
//! 3. Authentication: OAuth2 client-credentials or refresh-token flow; the access token is
//!    cached, and a 401 / `INVALID_SESSION_ID` fetches one new token and repeats the request
//!    once.
//!
//! Outcomes: 429, 5xx and `REQUEST_LIMIT_EXCEEDED` are retryable; 400 (validation, required
//! field, duplicate rule) and other 4xx are permanent, with Salesforce's `errorCode` in the
//! reason (never its message, which can quote field values). Nothing from the payload is
//! logged.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
pub mod config;
pub mod error;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Map, Value};
use wardhook_sdk::http::{outbound, Outbound, Unreachable};
use wardhook_sdk::template::{Escape, Template};
use wardhook_sdk::{
    async_trait, BuildContext, ConfigProblem, Context, Event, Handler, HandlerError,
    HandlerFactory, Outcome, Problems,
};

use crate::auth::TokenSource;
pub use crate::config::{AuthConfig, SalesforceConfig};
pub use crate::error::SalesforceError;

/// Fields read in code (not through templates), declared to the minimum-necessary check: the
/// adapter therefore needs `phi = "full"` and `baa = true`.
const FIELDS_READ: &[&str] = &[
    "caller.name",
    "caller.phone",
    "caller.email",
    "data.custom_fields.company_name",
    "data.ai_summary",
];

/// Registers `kind = "salesforce"`.
#[derive(Debug)]
pub struct SalesforceFactory;

impl HandlerFactory for SalesforceFactory {
    type Config = SalesforceConfig;

    fn build(
        config: SalesforceConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>> {
        let mut p = Problems::new();
        p.take(ctx.check_phi("", FIELDS_READ.iter().copied()));
        let instance = p.take(wardhook_sdk::http::api_url(
            "instance_url",
            &config.instance_url,
        ));
        if !is_api_version(&config.api_version) {
            p.push(ConfigProblem::new(
                "api_version",
                "must look like v60.0 (the REST API version)",
            ));
        }
        for (key, value) in [
            ("fallback_last_name", &config.fallback_last_name),
            ("fallback_company", &config.fallback_company),
        ] {
            if value.trim().is_empty() {
                p.push(ConfigProblem::new(
                    key,
                    "must not be empty: Salesforce requires the field on every Lead",
                ));
            }
        }
        let mut fields = Vec::new();
        for (name, source) in &config.fields {
            let key = format!("fields.{name}");
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.is_empty() {
                p.push(ConfigProblem::new(&key, "not a Salesforce field API name"));
                continue;
            }
            if let Some(t) = p.take(ctx.template(&key, source, Escape::None)) {
                fields.push((name.clone(), t));
            }
        }
        let timeout = p.timeout_secs("timeout_secs", config.timeout_secs);
        let tokens = TokenSource::build(config.auth, ctx, &mut p);
        let outbound = match (&instance, &tokens) {
            (Some(instance), Some(tokens)) => outbound(
                [instance, tokens.url()],
                &config.allow_hosts,
                None,
                ctx,
                &mut p,
            ),
            _ => None,
        };
        p.check()?;
        let (Some(instance), Some(tokens), Some(outbound)) = (instance, tokens, outbound) else {
            return Err(ConfigProblem::incomplete());
        };
        let host = instance.host_str().unwrap_or("Salesforce").to_owned();
        let api_root = format!(
            "{}/services/data/{}",
            instance.as_str().trim_end_matches('/'),
            config.api_version
        );
        Ok(Arc::new(Salesforce {
            name: ctx.name().to_owned(),
            api_root,
            host,
            tokens,
            fields,
            fallback_last_name: config.fallback_last_name,
            fallback_company: config.fallback_company,
            lead_source: config.lead_source,
            timeout,
            outbound,
        }))
    }
}

fn is_api_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let Some((major, minor)) = rest.split_once('.') else {
        return false;
    };
    !major.is_empty()
        && !minor.is_empty()
        && major.chars().all(|c| c.is_ascii_digit())
        && minor.chars().all(|c| c.is_ascii_digit())
}

/// `Retry-After`, in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| wardhook_sdk::parse_retry_after(v, wardhook_sdk::chrono::Utc::now()))
}

/// A code from Salesforce's fixed vocabulary (`REQUIRED_FIELD_MISSING`, `invalid_grant`), or
/// `None` when the text could be anything else (and so might carry data).
pub(crate) fn plain_code(text: &str) -> Option<String> {
    (!text.is_empty()
        && text.len() <= 64
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    .then(|| text.to_owned())
}

/// The first `errorCode` of a Salesforce error array (`[{"errorCode": …, "message": …}]`).
fn error_code(body: &Value) -> Option<String> {
    body.as_array()?
        .first()?
        .get("errorCode")?
        .as_str()
        .and_then(plain_code)
}

/// A configured Salesforce adapter.
#[derive(Debug)]
pub struct Salesforce {
    name: String,
    /// `https://instance/services/data/v60.0`.
    api_root: String,
    host: String,
    tokens: TokenSource,
    fields: Vec<(String, Template)>,
    fallback_last_name: String,
    fallback_company: String,
    lead_source: String,
    timeout: Duration,
    outbound: Outbound,
}

/// A request to the REST API, rebuildable for the one retry after a token refresh.
struct Call<'a> {
    method: Method,
    path: String,
    query: Option<(&'static str, String)>,
    body: Option<&'a Value>,
}

impl Salesforce {
    /// Send `call` with the cached token; on 401 / `INVALID_SESSION_ID` fetch a new token and
    /// send it once more. Returns the status and JSON body of a 2xx; classifies everything else.
    async fn api(&self, call: &Call<'_>, ctx: &Context) -> Result<(u16, Value), SalesforceError> {
        let timeout = ctx.time_left(self.timeout);
        let mut token = self.tokens.token(&self.outbound, timeout).await?;
        let mut refreshed = false;
        loop {
            let mut request = self
                .outbound
                .client()
                .request(
                    call.method.clone(),
                    format!("{}{}", self.api_root, call.path),
                )
                .bearer_auth(token.expose())
                .header(reqwest::header::ACCEPT, "application/json")
                .timeout(ctx.time_left(self.timeout));
            if let Some((k, v)) = &call.query {
                request = request.query(&[(k, v)]);
            }
            if let Some(body) = call.body {
                request = request.json(body);
            }
            let response = self
                .outbound
                .send::<SalesforceError>(request, &self.host)
                .await?;
            let status = response.status().as_u16();
            let retry_after = retry_after(response.headers());
            let bytes = response
                .bytes()
                .await
                .map_err(|e| Unreachable::new(&self.host, &e))?;
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if (200..300).contains(&status) {
                return Ok((status, body));
            }
            let code = error_code(&body);
            let expired = status == 401 || code.as_deref() == Some("INVALID_SESSION_ID");
            if expired {
                if refreshed {
                    return Err(SalesforceError::SessionRefused {
                        host: self.host.clone(),
                    });
                }
                token = self
                    .tokens
                    .refresh(&self.outbound, ctx.time_left(self.timeout), &token)
                    .await?;
                refreshed = true;
                continue;
            }
            let host = self.host.clone();
            let transient = status == 408
                || status == 429
                || status >= 500
                || code.as_deref() == Some("REQUEST_LIMIT_EXCEEDED");
            return Err(if transient {
                SalesforceError::Unavailable {
                    status,
                    host,
                    code,
                    retry_after,
                }
            } else {
                SalesforceError::Rejected { status, host, code }
            });
        }
    }

    /// The Lead fields for `event`, before fallbacks.
    fn lead_fields(
        &self,
        event: &Event,
        ctx: &Context,
    ) -> Result<BTreeMap<String, String>, SalesforceError> {
        let mut f = BTreeMap::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) {
                f.insert(k.to_owned(), v.to_owned());
            }
        };
        if let Some(name) = event.caller.name.as_deref() {
            let words: Vec<&str> = name.split_whitespace().collect();
            match words.as_slice() {
                [] => {}
                [only] => put("LastName", Some(only)),
                [first, rest @ ..] => {
                    put("FirstName", Some(first));
                    put("LastName", Some(&rest.join(" ")));
                }
            }
        }
        put("Phone", event.caller.phone.as_deref());
        put("Email", event.caller.email.as_deref());
        put(
            "Company",
            text_field(&event.data, &["company_name", "company"]),
        );
        put(
            "Description",
            text_field(&event.data, &["ai_summary", "summary"]),
        );
        put("LeadSource", Some(&self.lead_source));
        if !self.fields.is_empty() {
            wardhook_sdk::template::render_fields(&self.fields, &ctx.template_vars(event), &mut f)
                .map_err(|(field, source)| SalesforceError::Template { field, source })?;
        }
        Ok(f)
    }

    /// The newest unconverted Lead with this e-mail or phone.
    async fn find_duplicate(
        &self,
        email: Option<&str>,
        phone: Option<&str>,
        ctx: &Context,
    ) -> Result<Option<String>, SalesforceError> {
        let mut clauses = Vec::new();
        if let Some(e) = email {
            clauses.push(format!("Email = '{}'", soql_escape(e)));
        }
        if let Some(p) = phone {
            clauses.push(format!("Phone = '{}'", soql_escape(p)));
        }
        if clauses.is_empty() {
            return Ok(None);
        }
        let soql = format!(
            "SELECT Id FROM Lead WHERE IsConverted = false AND ({}) ORDER BY LastModifiedDate DESC LIMIT 1",
            clauses.join(" OR ")
        );
        let call = Call {
            method: Method::GET,
            path: "/query".into(),
            query: Some(("q", soql)),
            body: None,
        };
        let (_, body) = self.api(&call, ctx).await?;
        let records = body
            .get("records")
            .and_then(Value::as_array)
            .ok_or_else(|| self.bad("query records"))?;
        Ok(records
            .first()
            .and_then(|r| r.get("Id"))
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    fn bad(&self, what: &'static str) -> SalesforceError {
        SalesforceError::BadResponse {
            host: self.host.clone(),
            what,
        }
    }

    async fn deliver(&self, event: &Event, ctx: &Context) -> Result<Outcome, SalesforceError> {
        let mut fields = self.lead_fields(event, ctx)?;
        let existing = self
            .find_duplicate(
                fields.get("Email").map(String::as_str),
                fields.get("Phone").map(String::as_str),
                ctx,
            )
            .await?;
        let (lead_id, created, status) = match existing {
            Some(id) => {
                let body = to_json(fields);
                let call = Call {
                    method: Method::PATCH,
                    path: format!(
                        "/sobjects/Lead/{}",
                        wardhook_sdk::template::path_segment(&id)
                            .ok_or_else(|| self.bad("Lead id"))?
                    ),
                    query: None,
                    body: Some(&body),
                };
                let (status, _) = self.api(&call, ctx).await?;
                (id, false, status)
            }
            None => {
                fields
                    .entry("LastName".into())
                    .or_insert_with(|| self.fallback_last_name.clone());
                fields
                    .entry("Company".into())
                    .or_insert_with(|| self.fallback_company.clone());
                let body = to_json(fields);
                let call = Call {
                    method: Method::POST,
                    path: "/sobjects/Lead".into(),
                    query: None,
                    body: Some(&body),
                };
                let (status, answer) = self.api(&call, ctx).await?;
                let id = answer
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| self.bad("created Lead id"))?
                    .to_owned();
                (id, true, status)
            }
        };
        Ok(Outcome::done()
            .with_status(status)
            .with_destination(self.host.clone())
            .with_data(json!({"lead_id": lead_id, "created": created})))
    }
}

#[async_trait]
impl Handler for Salesforce {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError> {
        self.deliver(event, ctx).await.map_err(HandlerError::from)
    }
}

fn to_json(fields: BTreeMap<String, String>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect::<Map<_, _>>(),
    )
}

/// A text field the sender put in `custom_fields` (NextPhone) or at the top of `data`.
fn text_field<'a>(data: &'a Value, keys: &[&str]) -> Option<&'a str> {
    let custom = data.get("custom_fields");
    keys.iter()
        .find_map(|k| {
            data.get(*k)
                .or_else(|| custom.and_then(|c| c.get(*k)))
                .and_then(Value::as_str)
        })
        .filter(|s| !s.trim().is_empty())
}

/// A value inside a SOQL string literal: backslash, quotes and control characters escaped,
/// so a caller's "e-mail" cannot change the query.
fn soql_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soql_literals_cannot_be_escaped_from() {
        assert_eq!(soql_escape(r"x' OR Name != '\"), r"x\' OR Name != \'\\");
    }

    #[test]
    fn api_versions_are_checked() {
        assert!(is_api_version("v60.0"));
        assert!(!is_api_version("60.0"));
        assert!(!is_api_version("v60"));
    }
}

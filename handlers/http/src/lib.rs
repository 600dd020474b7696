//! `kind = "http"`: send each event to any REST API.
//!
//! Templated URL, query, headers and body (JSON, form or text) rendered with the SDK's one
//! template engine (the URL's scheme and host are literal config text, and a value in a path
//! segment stays in that segment: [`wardhook_sdk::template::UrlTemplate`]); auth none / basic /
//! bearer / API-key header / OAuth2 client credentials; requests only to the configured hosts
//! and `allow_hosts` ([`wardhook_sdk::http::Egress`]); a timeout; certificate verification always on (an extra CA may be added); an
//! `Idempotency-Key` header on every request; a JSON response captured for later handlers
//! (`app_data.<name>.data`). Failures are classified once, here: network errors, timeouts, 408,
//! 429 (with `Retry-After`) and 5xx are retryable, every other status is permanent, and so is a
//! template that cannot be rendered for the event.
//!
//! ```toml
//! [[handlers]]
//! name = "crm"
//! kind = "http"
//! phi = "full"
//! baa = true
//! url = "https://crm.internal/api/leads"
//! auth = { type = "bearer", token = "env:CRM_TOKEN" }
//! body = '{"phone": "{{ caller.phone }}", "notes": "{{ data.ai_summary }}"}'
//! ```
#![forbid(unsafe_code)]

mod auth;
pub mod config;
mod error;

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};
use url::Url;
use wardhook_sdk::http::{outbound, Outbound, Unreachable};
use wardhook_sdk::template::{Escape, Template, UrlTemplate, Vars};
use wardhook_sdk::{
    async_trait, BuildContext, ConfigProblem, Context, Event, Handler, HandlerError,
    HandlerFactory, Outcome, Problems,
};

use crate::auth::{Auth, OAuth2};
pub use crate::config::{AuthConfig, BodyFormat, HttpConfig};
pub use crate::error::HttpError;

/// The largest response body read (and captured); the rest is ignored.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Registers `kind = "http"`.
#[derive(Debug)]
pub struct HttpFactory;

impl HandlerFactory for HttpFactory {
    type Config = HttpConfig;

    fn build(
        config: HttpConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>> {
        let mut p = Problems::new();
        let method = p.take(
            Method::from_bytes(config.method.to_ascii_uppercase().as_bytes())
                .map_err(|_| ConfigProblem::new("method", "not an HTTP method")),
        );
        let url = p.take(ctx.url_template("url", &config.url));
        if let Some(url) = &url {
            p.take(wardhook_sdk::http::api_url("url", url.origin().as_str()));
        }
        let mut query = Vec::new();
        for (k, v) in &config.query {
            if let Some(t) = p.take(ctx.template(&format!("query.{k}"), v, Escape::None)) {
                query.push((k.clone(), t));
            }
        }
        let mut headers = Vec::new();
        for (k, v) in &config.headers {
            let path = format!("headers.{k}");
            let name = p.take(
                HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| ConfigProblem::new(&path, "not a valid header name")),
            );
            let t = p.take(ctx.template(&path, v, Escape::None));
            if let (Some(name), Some(t)) = (name, t) {
                headers.push((name, t));
            }
        }
        let body = p.take(build_body(&config, ctx)).unwrap_or(Body::None);
        let content_type = match &config.content_type {
            Some(ct) => p.take(
                HeaderValue::from_str(ct)
                    .map(Some)
                    .map_err(|_| ConfigProblem::new("content_type", "not a valid header value")),
            ),
            None => Some(body.default_content_type().map(HeaderValue::from_static)),
        }
        .flatten();
        let auth = p.take(Auth::build(config.auth, ctx));
        let configured = url
            .iter()
            .map(UrlTemplate::origin)
            .chain(auth.iter().filter_map(Auth::token_url));
        let outbound = outbound(
            configured,
            &config.allow_hosts,
            config.ca_file.as_deref(),
            ctx,
            &mut p,
        );
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        p.check()?;
        let (Some(method), Some(url), Some(auth), Some(outbound)) = (method, url, auth, outbound)
        else {
            return Err(ConfigProblem::incomplete());
        };
        Ok(Arc::new(HttpHandler {
            name: ctx.name().to_owned(),
            method,
            url,
            query,
            headers,
            body,
            content_type,
            timeout,
            auth,
            capture_response: config.capture_response,
            outbound,
        }))
    }
}

fn build_body(config: &HttpConfig, ctx: &BuildContext) -> Result<Body, ConfigProblem> {
    let format = match (config.body_format, &config.body, config.form.is_empty()) {
        (Some(f), _, _) => Some(f),
        (None, Some(_), _) => Some(BodyFormat::Json),
        (None, None, false) => Some(BodyFormat::Form),
        (None, None, true) => None,
    };
    match format {
        None => Ok(Body::None),
        Some(BodyFormat::Form) => {
            if config.body.is_some() {
                return Err(ConfigProblem::new(
                    "body",
                    "body_format = \"form\" takes its fields from `form`, not `body`",
                ));
            }
            let mut fields = Vec::new();
            for (k, v) in &config.form {
                fields.push((
                    k.clone(),
                    ctx.template(&format!("form.{k}"), v, Escape::None)?,
                ));
            }
            Ok(Body::Form(fields))
        }
        Some(f) => {
            if !config.form.is_empty() {
                return Err(ConfigProblem::new(
                    "form",
                    "form fields are only used with body_format = \"form\"",
                ));
            }
            let Some(src) = &config.body else {
                return Err(ConfigProblem::new(
                    "body",
                    "a body template is required for this body_format",
                ));
            };
            Ok(if f == BodyFormat::Json {
                Body::Json(ctx.template("body", src, Escape::JsonString)?)
            } else {
                Body::Text(ctx.template("body", src, Escape::None)?)
            })
        }
    }
}

/// How the body is built.
#[derive(Debug)]
enum Body {
    None,
    Json(Template),
    Text(Template),
    Form(Vec<(String, Template)>),
}

impl Body {
    fn default_content_type(&self) -> Option<&'static str> {
        match self {
            Body::None => None,
            Body::Json(_) => Some("application/json"),
            Body::Text(_) => Some("text/plain; charset=utf-8"),
            Body::Form(_) => Some("application/x-www-form-urlencoded"),
        }
    }
}

/// A configured http handler.
#[derive(Debug)]
pub struct HttpHandler {
    name: String,
    method: Method,
    url: UrlTemplate,
    query: Vec<(String, Template)>,
    headers: Vec<(HeaderName, Template)>,
    body: Body,
    content_type: Option<HeaderValue>,
    timeout: Duration,
    auth: Auth,
    capture_response: bool,
    outbound: Outbound,
}

/// One request, rendered for one event.
struct Prepared {
    url: Url,
    host: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<String>,
}

fn render(what: &str, template: &Template, vars: &Vars) -> Result<String, HttpError> {
    template.render(vars).map_err(|source| HttpError::Template {
        what: what.to_owned(),
        source,
    })
}

impl HttpHandler {
    fn prepare(&self, vars: &Vars) -> Result<Prepared, HttpError> {
        let mut url = self
            .url
            .render(vars)
            .map_err(|source| HttpError::Template {
                what: "url".to_owned(),
                source,
            })?;
        if !self.query.is_empty() {
            let mut q = url.query().map(str::to_owned).unwrap_or_default();
            for (k, t) in &self.query {
                let v = render(&format!("query.{k}"), t, vars)?;
                if !q.is_empty() {
                    q.push('&');
                }
                q.push_str(&wardhook_sdk::template::percent_encode_component(k));
                q.push('=');
                q.push_str(&wardhook_sdk::template::percent_encode_component(&v));
            }
            url.set_query(Some(&q));
        }
        let host = url.host_str().unwrap_or("destination").to_owned();
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, t) in &self.headers {
            let v = render(&format!("headers.{name}"), t, vars)?;
            let value =
                HeaderValue::from_str(&v).map_err(|_| HttpError::BadHeader(name.to_string()))?;
            headers.push((name.clone(), value));
        }
        let body = match &self.body {
            Body::None => None,
            Body::Json(t) => {
                let b = render("body", t, vars)?;
                if serde_json::from_str::<serde_json::Value>(&b).is_err() {
                    return Err(HttpError::BodyNotJson);
                }
                Some(b)
            }
            Body::Text(t) => Some(render("body", t, vars)?),
            Body::Form(fields) => {
                let mut rendered = Vec::with_capacity(fields.len());
                for (k, t) in fields {
                    rendered.push((k, render(&format!("form.{k}"), t, vars)?));
                }
                let mut ser = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in &rendered {
                    ser.append_pair(k, v);
                }
                Some(ser.finish())
            }
        };
        Ok(Prepared {
            url,
            host,
            headers,
            body,
        })
    }

    async fn send(
        &self,
        req: &Prepared,
        ctx: &Context,
        deadline: Instant,
        auth: Option<(HeaderName, HeaderValue)>,
    ) -> Result<Response, HttpError> {
        let mut builder = self
            .outbound
            .client()
            .request(self.method.clone(), req.url.clone())
            .timeout(remaining(deadline))
            .header("Idempotency-Key", ctx.idempotency_key());
        if let Some(ct) = &self.content_type {
            builder = builder.header(CONTENT_TYPE, ct.clone());
        }
        for (k, v) in &req.headers {
            builder = builder.header(k.clone(), v.clone());
        }
        if let Some((name, value)) = auth {
            builder = builder.header(name, value);
        }
        if let Some(b) = &req.body {
            builder = builder.body(b.clone());
        }
        self.outbound.send(builder, &req.host).await
    }

    async fn finish(&self, response: Response, host: &str) -> Result<Outcome, HttpError> {
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| wardhook_sdk::parse_retry_after(v, wardhook_sdk::chrono::Utc::now()));
            return Err(HttpError::Status {
                status: status.as_u16(),
                host: host.to_owned(),
                retry_after,
            });
        }
        let mut outcome = Outcome::done()
            .with_status(status.as_u16())
            .with_destination(host);
        if self.capture_response {
            let body = read_capped(response, host).await?;
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) {
                outcome = outcome.with_data(json);
            }
        }
        Ok(outcome)
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

async fn read_capped(mut response: Response, host: &str) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    // Too large to capture; the delivery itself succeeded.
                    return Ok(Vec::new());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(Unreachable::new(host, &e).into()),
        }
    }
}

#[async_trait]
impl Handler for HttpHandler {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError> {
        let vars = ctx.template_vars(event);
        let req = self.prepare(&vars)?;
        let deadline = Instant::now() + ctx.time_left(self.timeout);
        let (mut response, used_token) = match &self.auth {
            Auth::None => (self.send(&req, ctx, deadline, None).await?, None),
            Auth::Header(name, value) => {
                let auth = Some((name.clone(), value.clone()));
                (self.send(&req, ctx, deadline, auth).await?, None)
            }
            Auth::OAuth2(o) => {
                let token = o.token(&self.outbound, deadline).await?;
                let auth = Some((AUTHORIZATION, OAuth2::header(&token)?));
                (
                    self.send(&req, ctx, deadline, auth).await?,
                    Some((o, token)),
                )
            }
        };
        if response.status() == StatusCode::UNAUTHORIZED {
            if let Some((o, rejected)) = used_token {
                // The token may have been revoked or rotated early: fetch a new one, once.
                let token = o.refresh(&self.outbound, deadline, &rejected).await?;
                let auth = Some((AUTHORIZATION, OAuth2::header(&token)?));
                response = self.send(&req, ctx, deadline, auth).await?;
            }
        }
        Ok(self.finish(response, &req.host).await?)
    }
}

//! `kind = "slack"`: a message in a Slack channel per call, through an incoming webhook.
//!
//! The message is Block Kit: a header (the `title` template), a section with the caller and
//! the event type, the AI summary, a context line (source, call id, duration, status) and a
//! link back to the delivery in wardhook's admin UI (`admin_url` + `/deliveries/<id>`).
//!
//! A Slack workspace is not a HIPAA system, so by default (`minimal_phi = true`) the message
//! carries only non-identifying fields: the caller and the summary are replaced by "withheld"
//! and the link, and the handler is usable with `phi = "none"` (wardhook then hands it a
//! redacted event anyway). With `minimal_phi = false` the handler reads the caller and the
//! summary, which the SDK's minimum-necessary check only allows with `phi = "full"` and
//! `baa = true`.
//!
//! Outcomes: 429 (`Retry-After` honoured), 408 and 5xx are retryable; Slack's refusals
//! (`invalid_payload`, `no_service`, `channel_is_archived`, …) are permanent. The webhook URL
//! is a credential: it is a secret reference and never appears in reasons — only its host.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod error;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde_json::{json, Value};
use wardhook_sdk::http::{outbound, Outbound};
use wardhook_sdk::template::{Escape, Template};
use wardhook_sdk::{
    async_trait, BuildContext, ConfigProblem, Context, Event, Handler, HandlerError,
    HandlerFactory, Outcome, Problems,
};

pub use crate::config::SlackConfig;
pub use crate::error::SlackError;

/// What `minimal_phi = false` reads in code, declared to the minimum-necessary check.
const FULL_FIELDS_READ: &[&str] = &[
    "caller.name",
    "caller.phone",
    "caller.email",
    "data.call_type",
    "data.ai_summary",
];

/// Registers `kind = "slack"`.
#[derive(Debug)]
pub struct SlackFactory;

impl HandlerFactory for SlackFactory {
    type Config = SlackConfig;

    fn build(
        config: SlackConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>> {
        let mut p = Problems::new();
        if !config.minimal_phi {
            p.take(ctx.check_phi("minimal_phi", FULL_FIELDS_READ.iter().copied()));
        }
        let webhook = p
            .take(ctx.secret_str("webhook_url", &config.webhook_url))
            .and_then(|secret| {
                // The message names the key, never the URL: the URL is the credential.
                p.take(wardhook_sdk::http::api_url("webhook_url", secret.expose()))
            });
        let admin_url = config.admin_url.as_deref().and_then(|raw| {
            p.take(wardhook_sdk::http::api_url("admin_url", raw))
                .map(|u| u.as_str().trim_end_matches('/').to_owned())
        });
        let title = p.take(ctx.template("title", &config.title, Escape::None));
        let timeout = p.timeout_secs("timeout_secs", config.timeout_secs);
        let outbound = webhook
            .as_ref()
            .and_then(|url| outbound([url], &config.allow_hosts, None, ctx, &mut p));
        p.check()?;
        let (Some(webhook), Some(title), Some(outbound)) = (webhook, title, outbound) else {
            return Err(ConfigProblem::incomplete());
        };
        let host = webhook.host_str().unwrap_or("Slack").to_owned();
        Ok(Arc::new(Slack {
            name: ctx.name().to_owned(),
            webhook,
            host,
            admin_url,
            minimal_phi: config.minimal_phi,
            title,
            timeout,
            outbound,
        }))
    }
}

/// A configured Slack adapter.
pub struct Slack {
    name: String,
    webhook: Url,
    host: String,
    admin_url: Option<String>,
    minimal_phi: bool,
    title: Template,
    timeout: Duration,
    /// Where requests may go: the webhook URL's host and `allow_hosts`.
    outbound: Outbound,
}

impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the webhook URL: it is the credential.
        f.debug_struct("Slack")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("minimal_phi", &self.minimal_phi)
            .finish_non_exhaustive()
    }
}

impl Slack {
    /// The Block Kit message for `event`.
    pub fn message(&self, event: &Event, ctx: &Context) -> Result<Value, SlackError> {
        let title = self
            .title
            .render(&ctx.template_vars(event))
            .map_err(SlackError::Template)?;
        let title = title.trim().to_owned();
        let data = &event.data;
        let (caller, summary, kind) = if self.minimal_phi {
            (
                "_withheld (minimum necessary)_".to_owned(),
                "_Details withheld from Slack: open the delivery in wardhook._".to_owned(),
                mrkdwn_escape(&event.event_type),
            )
        } else {
            let c = &event.caller;
            let parts: Vec<String> = [&c.name, &c.phone, &c.email]
                .into_iter()
                .flatten()
                .map(|s| mrkdwn_escape(s))
                .collect();
            let caller = if parts.is_empty() {
                "_unknown_".to_owned()
            } else {
                parts.join(" · ")
            };
            let summary = ["ai_summary", "summary"]
                .iter()
                .find_map(|k| data.get(*k).and_then(Value::as_str))
                .map_or_else(|| "_no summary_".to_owned(), mrkdwn_escape);
            let kind = match data.get("call_type").and_then(Value::as_str) {
                Some(t) => format!(
                    "{} ({})",
                    mrkdwn_escape(&event.event_type),
                    mrkdwn_escape(t)
                ),
                None => mrkdwn_escape(&event.event_type),
            };
            (caller, summary, kind)
        };
        let mut context = vec![format!("source `{}`", mrkdwn_escape(&event.source))];
        if let Some(call) = &event.call_id {
            context.push(format!("call `{}`", mrkdwn_escape(call)));
        }
        for (key, label, unit) in [
            ("duration_seconds", "duration", " s"),
            ("status", "status", ""),
            ("direction", "direction", ""),
        ] {
            match data.get(key) {
                Some(Value::String(s)) => {
                    context.push(format!("{label} {}{unit}", mrkdwn_escape(s)))
                }
                Some(Value::Number(n)) => context.push(format!("{label} {n}{unit}")),
                _ => {}
            }
        }
        let link = match &self.admin_url {
            Some(admin) => format!(
                "<{admin}/deliveries/{}|Open delivery {}> in wardhook",
                wardhook_sdk::template::percent_encode_component(&event.delivery_id),
                mrkdwn_escape(&event.delivery_id)
            ),
            None => format!("Delivery `{}`", mrkdwn_escape(&event.delivery_id)),
        };
        Ok(json!({
            "text": title,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": truncate(&title, 150)}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": format!("*Caller*\n{caller}")},
                    {"type": "mrkdwn", "text": format!("*Event*\n{kind}")},
                ]},
                {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&format!("*Summary*\n{summary}"), 3000)}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": context.join(" · ")}]},
                {"type": "section", "text": {"type": "mrkdwn", "text": link}},
            ],
        }))
    }

    async fn post(&self, event: &Event, ctx: &Context) -> Result<Outcome, SlackError> {
        let message = self.message(event, ctx)?;
        let host = self.host.clone();
        let request = self
            .outbound
            .client()
            .post(self.webhook.clone())
            .timeout(ctx.time_left(self.timeout))
            .json(&message);
        let response = self
            .outbound
            .send::<SlackError>(request, &self.host)
            .await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| wardhook_sdk::parse_retry_after(v, wardhook_sdk::chrono::Utc::now()));
        if (200..300).contains(&status) {
            return Ok(Outcome::done().with_status(status).with_destination(host));
        }
        if status == 408 || status == 429 || status >= 500 {
            return Err(SlackError::Unavailable {
                status,
                host,
                retry_after,
            });
        }
        let text = response.text().await.unwrap_or_default();
        let text = text.trim();
        let code = (!text.is_empty()
            && text.len() <= 64
            && text.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .then(|| text.to_owned());
        Err(SlackError::Rejected { status, host, code })
    }
}

#[async_trait]
impl Handler for Slack {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError> {
        self.post(event, ctx).await.map_err(HandlerError::from)
    }
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters: a caller's words must not
/// become links or mentions.
fn mrkdwn_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Block Kit text limits, cut on a character boundary.
fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max_chars - 1).collect();
        out.push('…');
        out
    }
}

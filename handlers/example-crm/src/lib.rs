//! An example CRM adapter: creates a lead for each call, the way `docs/HANDLERS.md` walks
//! through. Copy this folder to start a real adapter.
//!
//! It reads caller fields directly (no templates), so it declares them to the minimum-necessary
//! check: it can only be configured with `phi = "full"` and `baa = true`.
#![forbid(unsafe_code)]

pub mod config;

use std::sync::Arc;
use std::time::Duration;

use wardhook_sdk::{
    async_trait, BuildContext, ConfigProblem, Context, Event, Handler, HandlerError,
    HandlerFactory, Outcome, Problems, SecretValue,
};

pub use crate::config::ExampleCrmConfig;

/// The event fields this adapter sends (checked against the handler's `phi` level).
const FIELDS_READ: &[&str] = &["caller.phone", "caller.name", "call_id", "event_type"];

/// Registers `kind = "example-crm"`.
#[derive(Debug)]
pub struct ExampleCrmFactory;

impl HandlerFactory for ExampleCrmFactory {
    type Config = ExampleCrmConfig;

    fn build(
        config: ExampleCrmConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>> {
        let mut p = Problems::new();
        p.take(ctx.check_phi("", FIELDS_READ.iter().copied()));
        if !config.base_url.starts_with("https://") && !config.base_url.starts_with("http://127.") {
            p.push(ConfigProblem::new("base_url", "must be an https:// URL"));
        }
        let api_key = p.take(ctx.secret_str("api_key", &config.api_key));
        let client = p.take(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(config.timeout_secs.max(1)))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|_| ConfigProblem::new("", "HTTP client could not be set up")),
        );
        let name = ctx.name().to_owned();
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        p.check()?;
        let (Some(api_key), Some(client)) = (api_key, client) else {
            return Err(vec![ConfigProblem::new("", "incomplete configuration")]);
        };
        Ok(Arc::new(ExampleCrm {
            name,
            base_url,
            api_key,
            client,
        }))
    }
}

/// A configured example CRM adapter.
#[derive(Debug)]
pub struct ExampleCrm {
    name: String,
    base_url: String,
    api_key: SecretValue,
    client: reqwest::Client,
}

#[async_trait]
impl Handler for ExampleCrm {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError> {
        let host = "example CRM";
        let lead = serde_json::json!({
            "phone": event.caller.phone,
            "name": event.caller.name,
            "call_id": event.call_id,
            "reason": event.event_type,
        });
        let response = self
            .client
            .post(format!("{}/leads", self.base_url))
            .header("X-Api-Key", self.api_key.expose())
            .header("Idempotency-Key", ctx.idempotency_key())
            .timeout(ctx.time_left(Duration::from_secs(10)))
            .json(&lead)
            .send()
            .await
            .map_err(|e| HandlerError::network(host, e.is_timeout()))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Retryable vs permanent, decided once, here.
        if let Some(err) = HandlerError::from_http_status(status, retry_after.as_deref(), host) {
            return Err(err);
        }
        let created: serde_json::Value = response.json().await.unwrap_or_default();
        Ok(Outcome::done()
            .with_status(status)
            .with_destination(host)
            .with_data(serde_json::json!({"lead_id": created["id"]})))
    }
}

//! An example CRM adapter: creates a lead for each call, the way `docs/HANDLERS.md` walks
//! through. Copy this folder to start a real adapter.
//!
//! It reads caller fields directly (no templates), so it declares them to the minimum-necessary
//! check: it can only be configured with `phi = "full"` and `baa = true`.
#![forbid(unsafe_code)]

pub mod config;

use std::sync::Arc;
use std::time::Duration;

use wardhook_sdk::http::{outbound, Outbound};
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
        // https:// (plain http:// only to loopback), a client that refuses redirects and TLS
        // older than 1.2, and an egress allowlist (the base URL's host plus `allow_hosts`) in
        // its resolver: the SDK's `http` feature (`api_url`, `outbound`), shared by every
        // bundled adapter. `timeout_secs` must be 1 to 300, as for every adapter.
        let base_url = p.take(wardhook_sdk::http::api_url("base_url", &config.base_url));
        let timeout = p.timeout_secs("timeout_secs", config.timeout_secs);
        let outbound = base_url
            .as_ref()
            .and_then(|url| outbound([url], &config.allow_hosts, None, ctx, &mut p));
        let api_key = p.take(ctx.secret_str("api_key", &config.api_key));
        p.check()?;
        let (Some(base_url), Some(api_key), Some(outbound)) = (base_url, api_key, outbound) else {
            return Err(ConfigProblem::incomplete());
        };
        Ok(Arc::new(ExampleCrm {
            name: ctx.name().to_owned(),
            base_url: base_url.as_str().trim_end_matches('/').to_owned(),
            api_key,
            timeout,
            outbound,
        }))
    }
}

/// A configured example CRM adapter.
#[derive(Debug)]
pub struct ExampleCrm {
    name: String,
    base_url: String,
    api_key: SecretValue,
    timeout: Duration,
    outbound: Outbound,
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
        let request = self
            .outbound
            .client()
            .post(format!("{}/leads", self.base_url))
            .header("X-Api-Key", self.api_key.expose())
            .header("Idempotency-Key", ctx.idempotency_key())
            .timeout(ctx.time_left(self.timeout))
            .json(&lead);
        // A destination the allowlist refuses is permanent; the network is worth a retry.
        let response = self.outbound.send::<HandlerError>(request, host).await?;
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

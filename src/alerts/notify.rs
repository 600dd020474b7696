//! Telling people: every transition of an alert (opened, acknowledged, resolved) goes to the
//! handlers named in `[alerts] notify` — any configured handler: e-mail, Slack, http — as an
//! event of its own, not through the delivery queue, with a per-notifier hourly budget.
//!
//! The event is PHI-free by construction: its text comes from the rules (configured names and
//! numbers). Its fields are ones a `phi = "none"` handler may use in templates:
//!
//! - `source` = `wardhook`, `event_type` = `alert.opened` / `alert.acknowledged` /
//!   `alert.resolved`, `delivery_id` = the alert id (`alr_…`);
//! - `data.status` = one line for people, e.g. `Opened: Handler crm: the last 5 attempts
//!   failed.`; `data.event_id` = the alert id.
//!
//! A `phi = "full"` handler also sees `data.alert` (id, rule, subject, state, summary, times).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use wardhook_sdk::{Caller, Context, Event};

use crate::dispatch::worker::SharedPlan;
use crate::store::alerts::Alert;

/// A transition worth telling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The condition began to hold.
    Opened,
    /// Someone took it.
    Acknowledged,
    /// The condition cleared.
    Resolved,
}

impl Transition {
    /// The word in `event_type` and in the text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Self::Opened => "Opened",
            Self::Acknowledged => "Acknowledged",
            Self::Resolved => "Resolved",
        }
    }
}

/// The line people read: `Opened: <summary>`.
pub fn text(alert: &Alert, transition: Transition) -> String {
    format!("{}: {}", transition.title(), alert.summary)
}

/// The event a notifier handler receives for `transition` of `alert`.
pub fn event(alert: &Alert, transition: Transition) -> Event {
    Event {
        delivery_id: alert.id.clone(),
        source: "wardhook".to_owned(),
        event_type: format!("alert.{}", transition.as_str()),
        call_id: None,
        occurred_at: Some(Utc::now()),
        received_at: Utc::now(),
        caller: Caller::default(),
        data: json!({
            "status": text(alert, transition),
            "event_id": alert.id,
            "alert": alert,
        }),
    }
}

/// The handlers told of transitions, each with an hourly budget.
#[derive(Debug)]
pub struct Notifier {
    names: Vec<String>,
    plan: SharedPlan,
    per_hour: usize,
    timeout: Duration,
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// How one notification ended, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The handler took it.
    Delivered(String),
    /// The handler failed (its reason has no content: the event has none).
    Failed(String),
    /// Over the hourly budget: not sent.
    RateLimited(String),
    /// The handler is no longer configured.
    Unknown(String),
}

impl Notifier {
    /// Tell `names` (handlers of `plan`), at most `per_hour` times each per hour, each call
    /// bounded by `timeout`.
    pub fn new(names: Vec<String>, plan: SharedPlan, per_hour: u32, timeout: Duration) -> Self {
        Self {
            names,
            plan,
            per_hour: per_hour as usize,
            timeout,
            sent: Mutex::new(HashMap::new()),
        }
    }

    /// Take one from `name`'s hourly budget; false when it is spent.
    fn take(&self, name: &str) -> bool {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let times = sent.entry(name.to_owned()).or_default();
        let now = Instant::now();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(3600))
        {
            times.pop_front();
        }
        if times.len() >= self.per_hour {
            return false;
        }
        times.push_back(now);
        true
    }

    /// Send `transition` of `alert` to every notifier, one after the other.
    pub async fn send(&self, alert: &Alert, transition: Transition) -> Vec<Sent> {
        let event = event(alert, transition);
        let mut out = Vec::new();
        for name in &self.names {
            let handler = {
                let plan = self.plan.read().unwrap_or_else(|p| p.into_inner());
                plan.handler(name)
            };
            let Some(handler) = handler else {
                tracing::warn!(handler = %name, "alert notifier is not a configured handler");
                out.push(Sent::Unknown(name.clone()));
                continue;
            };
            if !self.take(name) {
                tracing::warn!(
                    handler = %name,
                    alert = %alert.id,
                    "alert notification not sent: over the notifier's hourly budget"
                );
                out.push(Sent::RateLimited(name.clone()));
                continue;
            }
            let deadline = Instant::now() + self.timeout;
            let ctx = Context::new(
                &format!("{}.{}", alert.id, transition.as_str()),
                handler.name(),
                1,
            )
            .with_deadline(deadline);
            match crate::dispatch::invoke_in_context(&*handler, &event, ctx, deadline).await {
                Ok(_) => {
                    tracing::info!(handler = %name, alert = %alert.id, transition = transition.as_str(), "alert notification sent");
                    out.push(Sent::Delivered(name.clone()));
                }
                Err(e) => {
                    tracing::warn!(handler = %name, alert = %alert.id, error = %e, "alert notification failed");
                    out.push(Sent::Failed(name.clone()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::alerts::AlertState;

    fn alert() -> Alert {
        Alert {
            id: "alr_1".into(),
            rule: "handler_failing".into(),
            subject: "crm".into(),
            summary: "Handler crm: the last 5 attempts failed.".into(),
            state: AlertState::Open,
            opened_at: Utc::now(),
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
        }
    }

    #[test]
    fn the_event_carries_its_text_in_fields_a_phi_none_handler_may_use() {
        let e = event(&alert(), Transition::Opened);
        assert_eq!(e.event_type, "alert.opened");
        assert_eq!(e.source, "wardhook");
        let redacted = wardhook_sdk::phi::redact(&e);
        assert_eq!(
            redacted.data["status"],
            "Opened: Handler crm: the last 5 attempts failed."
        );
        assert_eq!(redacted.data["event_id"], "alr_1");
        for var in ["data.status", "data.event_id", "event_type", "delivery_id"] {
            assert_eq!(wardhook_sdk::phi::phi_field(var), None, "{var}");
        }
    }

    #[test]
    fn each_notifier_has_an_hourly_budget() {
        let plan: SharedPlan = std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(
            crate::dispatch::worker::Plan::default(),
        )));
        let n = Notifier::new(vec!["ops".into()], plan, 2, Duration::from_secs(1));
        assert!(n.take("ops") && n.take("ops"));
        assert!(!n.take("ops"), "third in the hour");
        assert!(n.take("other"), "budgets are per notifier");
    }
}

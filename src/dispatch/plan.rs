//! The route plan: the configured routes compiled (filters, real-time replies) and the handlers
//! built, and the one question the hook handler asks of it — which jobs does this event make,
//! and which real-time route (if any) answers the sender.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use wardhook_sdk::template::Tz;
use wardhook_sdk::{Event, Handler};

use super::filter::Filter;
use super::realtime::Realtime;
use super::worker::Plan;
use crate::config::{Config, Problem, RealtimeSettings, Route};
use crate::store::JobSpec;

/// A route ready to match events: its settings with the `when` filter compiled and, for a
/// real-time route, its reply compiled.
#[derive(Debug, Clone)]
pub struct RouteRule {
    /// Source name.
    pub source: String,
    /// Event type globs; empty matches all.
    pub events: Vec<String>,
    /// The compiled `when` filter.
    pub when: Option<Arc<Filter>>,
    /// Handler names in order.
    pub handlers: Vec<String>,
    /// This route's retry schedule, if it overrides the default.
    pub retry_schedule: Option<Vec<std::time::Duration>>,
    /// Set for `mode = "realtime"`: the handlers run inline and the sender gets a reply.
    pub realtime: Option<Arc<Realtime>>,
}

impl RouteRule {
    /// Compile one route's settings in the clinic's time zone.
    pub fn build(route: &Route, time_zone: Tz) -> Result<Self, (String, String)> {
        let when = match route.when.as_deref().map(Filter::compile) {
            None => None,
            Some(Ok(f)) => Some(Arc::new(f.with_time_zone(time_zone))),
            Some(Err(e)) => return Err(("when".into(), e.to_string())),
        };
        let realtime = match &route.realtime {
            None => None,
            Some(settings) => Some(Arc::new(Realtime::from_settings(settings)?)),
        };
        Ok(Self {
            source: route.source.clone(),
            events: route.events.clone(),
            when,
            handlers: route.handlers.clone(),
            retry_schedule: route.retry_schedule.clone(),
            realtime,
        })
    }

    /// Whether this route takes events of `event_type` from `source` (ignoring `when`).
    pub fn matches(&self, source: &str, event_type: &str) -> bool {
        self.source == source
            && (self.events.is_empty() || self.events.iter().any(|g| glob_match(g, event_type)))
    }

    /// Whether this route takes `event` at `now`, `when` included. A filter that cannot be
    /// evaluated on this event (a field it names is missing) does not match; the reason names
    /// the field, never a value.
    pub fn accepts(&self, event: &Event, now: DateTime<Utc>) -> Result<bool, String> {
        if !self.matches(&event.source, &event.event_type) {
            return Ok(false);
        }
        match &self.when {
            None => Ok(true),
            Some(f) => f.matches(event, now).map_err(|e| e.to_string()),
        }
    }
}

impl Realtime {
    /// Compile a real-time route's reply settings.
    pub fn from_settings(s: &RealtimeSettings) -> Result<Self, (String, String)> {
        let respond =
            super::realtime::compile_respond(&s.respond).map_err(|e| ("respond".to_owned(), e))?;
        let cache = match &s.cache {
            None => None,
            Some(c) => {
                let key = super::realtime::compile_key(&c.key)
                    .map_err(|e| ("cache.key".to_owned(), e))?;
                Some(super::realtime::LookupCache::new(key, c.ttl, c.max_entries))
            }
        };
        Ok(Self {
            respond,
            status: s.status,
            content_type: s.content_type.clone(),
            deadline: s.deadline,
            fallback: s.fallback.clone(),
            fallback_status: s.fallback_status,
            cache,
        })
    }
}

/// Build the dispatch plan from the settings: every handler (`handlers[i]…` problems) and every
/// route (`routes[i]…` problems). `serve`, `reload` and `check-config` build through here.
pub fn build_plan(config: &Config) -> Result<Plan, Vec<Problem>> {
    let mut problems = Vec::new();
    let built = match super::registry::build_handlers(&config.handlers, &config.base) {
        Ok(h) => h,
        Err(list) => {
            problems.extend(
                list.into_iter()
                    .map(|(path, message)| Problem { path, message }),
            );
            super::registry::BuiltHandlers::default()
        }
    };
    let time_zone = config.dispatch.time_zone;
    let mut routes = Vec::with_capacity(config.routes.len());
    for (i, route) in config.routes.iter().enumerate() {
        match RouteRule::build(route, time_zone) {
            Ok(r) => routes.push(r),
            Err((key, message)) => problems.push(Problem {
                path: format!("routes[{i}].{key}"),
                message,
            }),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Plan::new(built.handlers, routes)
        .with_time_zone(time_zone)
        .with_caller_phones(built.caller_phone_from))
}

/// A real-time route chosen to answer the sender, with its handlers as built.
#[derive(Debug, Clone)]
pub struct RealtimeRoute {
    /// The reply settings.
    pub reply: Arc<Realtime>,
    /// The route's handlers, in order; `None` if one is not configured (the fallback is sent).
    pub handlers: Option<Vec<Arc<dyn Handler>>>,
}

/// What one event makes: jobs for the asynchronous routes' handlers (each handler once), and
/// the first real-time route that takes it, whose handlers run inline instead.
#[derive(Debug, Default)]
pub struct Routing {
    /// Jobs to commit with the delivery.
    pub jobs: Vec<JobSpec>,
    /// The real-time route answering the sender, if any.
    pub realtime: Option<RealtimeRoute>,
}

impl Plan {
    /// Route `event` at `now`: the jobs and the real-time route, if any. A route whose filter
    /// cannot be evaluated on this event is skipped, with the reason (a field name) logged.
    pub fn route(&self, event: &Event, now: DateTime<Utc>) -> Routing {
        let mut routing = Routing::default();
        for (index, route) in self.routes().iter().enumerate() {
            match route.accepts(event, now) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(reason) => {
                    tracing::warn!(route = index, reason = %reason, "route filter not applicable; route skipped");
                    continue;
                }
            }
            if let Some(reply) = &route.realtime {
                if routing.realtime.is_none() {
                    let handlers: Vec<Arc<dyn Handler>> = route
                        .handlers
                        .iter()
                        .filter_map(|h| self.handler(h))
                        .collect();
                    routing.realtime = Some(RealtimeRoute {
                        reply: reply.clone(),
                        handlers: (handlers.len() == route.handlers.len()).then_some(handlers),
                    });
                }
                continue;
            }
            for handler in &route.handlers {
                if !routing.jobs.iter().any(|j| &j.handler == handler) {
                    routing.jobs.push(JobSpec::new(handler.clone()));
                }
            }
        }
        routing
    }
}

/// `*` matches any run of characters; everything else literally.
fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| glob_match(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_globs_match_as_documented() {
        assert!(glob_match("call.*", "call.ended"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("call.ended", "call.ended"));
        assert!(!glob_match("call.*", "lead.created"));
        assert!(glob_match("*.ended", "call.ended"));
        assert!(!glob_match("call.ended", "call.ended.x"));
    }
}

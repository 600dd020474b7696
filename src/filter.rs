//! Route filters: which events a route takes.
//!
//! A route names event types (globs: `call.*`) and an optional `when` expression in the SDK's
//! template language, compiled once at start-up. Expressions see the same variables as
//! templates (the full event: filters run inside wardhook and send nothing anywhere), with
//! `and`/`or`/`not`, comparisons, `in` (list membership and substring), tests such as
//! `is startingwith`, filters such as `| lower`, and time windows in the route's time zone:
//! `hour_between(9, 17)`, `time_between("08:30", "17:45")`, `weekday in ["sat", "sun"]`,
//! `now.hour >= 18`. PhoneShield's examples, for instance "call.completed over 2 minutes that
//! mentioned pricing or quote":
//!
//! ```text
//! event_type == "call.completed" and data.duration_seconds > 120
//!     and ("pricing" in data.transcript | lower or "quote" in data.transcript | lower)
//! ```
//!
//! A field the event lacks is an error, not `false`: write `data.urgency is defined and …`
//! where a sender may leave it out. The dispatcher treats an evaluation error as "route does
//! not match" and records the reason (which names the variable, never a value).

use chrono::{DateTime, Utc};
use wardhook_sdk::template::{Expression, TemplateError, Tz, Vars};
use wardhook_sdk::{AppData, Event};

/// Why a filter could not be compiled or evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The expression is not valid or names a variable that cannot exist.
    #[error("invalid filter: {0}")]
    Compile(TemplateError),
    /// The expression failed on this event (a missing field, a type mismatch).
    #[error("filter could not be evaluated: {0}")]
    Eval(TemplateError),
}

/// A compiled `when` expression.
#[derive(Debug)]
pub struct Filter {
    expression: Expression,
    time_zone: Tz,
}

impl Filter {
    /// Compile `source`; time windows are in UTC until [`Filter::with_time_zone`].
    pub fn compile(source: &str) -> Result<Self, FilterError> {
        Ok(Self {
            expression: Expression::compile(source).map_err(FilterError::Compile)?,
            time_zone: Tz::UTC,
        })
    }

    /// Evaluate time windows (`hour_between`, `weekday`, `now`) in `time_zone`, e.g. the
    /// clinic's `America/Chicago`.
    pub fn with_time_zone(mut self, time_zone: Tz) -> Self {
        self.time_zone = time_zone;
        self
    }

    /// Whether `event` passes, at time `now`.
    pub fn matches(&self, event: &Event, now: DateTime<Utc>) -> Result<bool, FilterError> {
        let vars = Vars::new(event, &AppData::new(), now, self.time_zone);
        self.expression.eval_bool(&vars).map_err(FilterError::Eval)
    }
}

/// Parse an IANA time zone name (`America/New_York`) for [`Filter::with_time_zone`].
pub fn parse_time_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("unknown time zone {name:?} (use an IANA name like America/New_York)"))
}

/// Whether `event_type` matches one of a route's `events` patterns (`*` matches any run of
/// characters, so `call.*` takes `call.ended`); an empty list matches everything.
pub fn event_type_matches(patterns: &[String], event_type: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| glob_match(p, event_type))
}

fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardhook_sdk::Caller;

    fn at(ts: &str) -> DateTime<Utc> {
        ts.parse().expect("timestamp")
    }

    /// A PhoneShield `call.completed`, as normalized.
    fn completed() -> Event {
        Event {
            delivery_id: "dlv_1".into(),
            source: "phoneshield".into(),
            event_type: "call.completed".into(),
            call_id: Some("call_9876543210".into()),
            occurred_at: Some(at("2025-04-30T15:23:47Z")),
            received_at: at("2025-04-30T15:23:48Z"),
            caller: Caller {
                phone: Some("+15559876543".into()),
                name: Some("John Smith".into()),
                email: None,
            },
            data: serde_json::json!({
                "duration_seconds": 135,
                "direction": "inbound",
                "status": "completed",
                "ai_handled": true,
                "forwarded": false,
                "summary": "Asked about Pricing for a new crown and wants a quote.",
                "topics": ["pricing", "insurance"],
                "sentiment": "neutral",
                "urgency": "medium",
                "metadata": {"account_type": "premium"}
            }),
        }
    }

    fn voicemail() -> Event {
        Event {
            event_type: "voicemail.recorded".into(),
            caller: Caller {
                phone: Some("+442071234567".into()),
                ..Caller::default()
            },
            data: serde_json::json!({"duration_seconds": 40, "urgency": "high"}),
            ..completed()
        }
    }

    #[test]
    fn filters_select_the_right_events() {
        // Wednesday 2026-11-18 14:30 in New York (19:30 UTC); Saturday 2026-11-21 03:00 there.
        let weekday_afternoon = at("2026-11-18T19:30:00Z");
        let saturday_night = at("2026-11-21T08:00:00Z");
        type Case = (&'static str, fn() -> Event, DateTime<Utc>, bool);
        let cases: &[Case] = &[
            // PhoneShield: completed, over 2 minutes, AND pricing OR quote mentioned.
            (
                r#"event_type == "call.completed" and data.duration_seconds > 120 and ("pricing" in data.summary | lower or "quote" in data.summary | lower)"#,
                completed,
                weekday_afternoon,
                true,
            ),
            (
                r#"event_type == "call.completed" and data.duration_seconds > 120 and ("pricing" in data.summary | lower or "quote" in data.summary | lower)"#,
                voicemail,
                weekday_afternoon,
                false,
            ),
            // Duration comparisons.
            (
                "data.duration_seconds >= 60",
                voicemail,
                weekday_afternoon,
                false,
            ),
            (
                "data.duration_seconds < 60",
                voicemail,
                weekday_afternoon,
                true,
            ),
            // Caller phone: area code and country.
            (
                r#"caller.phone is startingwith "+1555""#,
                completed,
                weekday_afternoon,
                true,
            ),
            (
                r#"caller.phone[2:5] == "555""#,
                completed,
                weekday_afternoon,
                true,
            ),
            (
                r#"caller.phone is startingwith "+44""#,
                voicemail,
                weekday_afternoon,
                true,
            ),
            // AI analysis: topics, sentiment, urgency.
            (
                r#""insurance" in data.topics"#,
                completed,
                weekday_afternoon,
                true,
            ),
            (
                r#"data.sentiment == "negative" or data.urgency in ["high", "critical"]"#,
                completed,
                weekday_afternoon,
                false,
            ),
            (
                r#"data.urgency in ["high", "critical"]"#,
                voicemail,
                weekday_afternoon,
                true,
            ),
            // Optional fields guarded with `is defined`.
            (
                r#"data.sentiment is defined and data.sentiment == "neutral""#,
                voicemail,
                weekday_afternoon,
                false,
            ),
            // Booleans and not.
            (
                "data.ai_handled and not data.forwarded",
                completed,
                weekday_afternoon,
                true,
            ),
            // Nested sender fields.
            (
                r#"data.metadata.account_type == "premium""#,
                completed,
                weekday_afternoon,
                true,
            ),
            // Event type families.
            (
                r#"event_type is startingwith "voicemail.""#,
                voicemail,
                weekday_afternoon,
                true,
            ),
            // Time windows in the clinic's zone (America/New_York).
            (
                r#"hour_between(9, 17) and weekday in ["mon", "tue", "wed", "thu", "fri"]"#,
                completed,
                weekday_afternoon,
                true,
            ),
            (
                r#"hour_between(9, 17) and weekday in ["mon", "tue", "wed", "thu", "fri"]"#,
                completed,
                saturday_night,
                false,
            ),
            (
                r#"not hour_between(8, 18) or weekday in ["sat", "sun"]"#,
                completed,
                saturday_night,
                true,
            ),
            ("hour_between(22, 6)", completed, saturday_night, true),
            (
                r#"time_between("14:00", "14:45")"#,
                completed,
                weekday_afternoon,
                true,
            ),
            (
                "now.hour == 14 and now.minute == 30",
                completed,
                weekday_afternoon,
                true,
            ),
            // Plain fields and the caller's name.
            (
                r#"source == "phoneshield" and "smith" in caller.name | lower"#,
                completed,
                weekday_afternoon,
                true,
            ),
        ];
        for (i, (expr, event, now, want)) in cases.iter().enumerate() {
            let filter = Filter::compile(expr)
                .unwrap_or_else(|e| panic!("case {i} `{expr}` does not compile: {e}"))
                .with_time_zone(Tz::America__New_York);
            let got = filter
                .matches(&event(), *now)
                .unwrap_or_else(|e| panic!("case {i} `{expr}` failed: {e}"));
            assert_eq!(got, *want, "case {i}: `{expr}`");
        }
    }

    #[test]
    fn a_missing_field_is_an_error_naming_it() {
        let f = Filter::compile(r#"data.sentiment == "neutral""#).expect("compile");
        let err = f.matches(&voicemail(), Utc::now()).expect_err("missing");
        assert!(err.to_string().contains("data.sentiment"), "{err}");
        assert!(!err.to_string().contains("+44"), "{err}");
    }

    #[test]
    fn bad_expressions_fail_at_compile_time() {
        for bad in [
            "data.duration_seconds >",
            "caller.fone == \"x\"",
            "now.hours > 3",
        ] {
            assert!(
                matches!(Filter::compile(bad), Err(FilterError::Compile(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn event_type_globs() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(event_type_matches(&[], "call.ended"));
        assert!(event_type_matches(&p(&["call.*"]), "call.ended"));
        assert!(!event_type_matches(&p(&["call.*"]), "voicemail.recorded"));
        assert!(event_type_matches(
            &p(&["*.recorded"]),
            "voicemail.recorded"
        ));
        assert!(event_type_matches(&p(&["call.ended"]), "call.ended"));
        assert!(!event_type_matches(&p(&["call.ended"]), "call.ended.late"));
        assert!(event_type_matches(&p(&["*"]), "anything"));
    }

    #[test]
    fn time_zones_are_parsed_by_iana_name() {
        assert_eq!(parse_time_zone("America/Chicago"), Ok(Tz::America__Chicago));
        assert!(parse_time_zone("Mars/Olympus").is_err());
    }
}

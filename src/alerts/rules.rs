//! The built-in rules: pure functions from facts and thresholds to the conditions that hold
//! now. No I/O here, so each rule's thresholds are unit-tested with made-up facts.
//!
//! A [`Finding`]'s summary is built from configured names (handlers, sources), node ids and
//! numbers only — never from anything a sender sent — so it may be shown, stored and sent to
//! a notifier as it is.

use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::config::alerts::{AlertsSettings, BusinessHours};
use crate::store::alerts::{AttemptFact, SourceFact};

/// The rules, by the names alerts, audit records and notifications carry.
pub const HANDLER_FAILING: &str = "handler_failing";
/// Dead letters waiting for an operator.
pub const DEAD_LETTERS: &str = "dead_letters";
/// A source silent for longer than usual in its business hours.
pub const SOURCE_SILENT: &str = "source_silent";
/// The listener's certificate expires soon.
pub const CERTIFICATE_EXPIRY: &str = "certificate_expiry";
/// The data volume is almost full.
pub const DISK_SPACE: &str = "disk_space";
/// The audit log failed verification.
pub const AUDIT_VERIFICATION: &str = "audit_verification";
/// Deliveries wait at the DMZ relay.
pub const RELAY_BACKLOG: &str = "relay_backlog";

/// Every rule: the cluster-wide ones (evaluated by the node holding the lease) first.
pub const CLUSTER_RULES: &[&str] = &[
    HANDLER_FAILING,
    DEAD_LETTERS,
    SOURCE_SILENT,
    AUDIT_VERIFICATION,
];
/// Rules about this node's own files and volume (evaluated by every node, subject = node).
pub const NODE_RULES: &[&str] = &[CERTIFICATE_EXPIRY, DISK_SPACE, RELAY_BACKLOG];

/// The history the silent-source rule learns "usual" from.
pub const SILENCE_HISTORY: Duration = Duration::from_secs(7 * 86_400);
/// Deliveries the history must hold before a source's silence means anything.
pub const SILENCE_MIN_HISTORY: u64 = 10;

/// A condition that holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: &'static str,
    /// What it is about (handler, source, node, `audit`).
    pub subject: String,
    /// One line for people.
    pub summary: String,
}

fn finding(rule: &'static str, subject: &str, summary: String) -> Finding {
    Finding {
        rule,
        subject: subject.to_owned(),
        summary,
    }
}

/// A duration for people: `2 h 10 min`, `12 min`, `40 s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ if s % 3600 / 60 == 0 => format!("{} h", s / 3600),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// A handler failing: `handler_failures_in_a_row` failed attempts in a row, or more than
/// `handler_failure_rate` of at least `handler_min_attempts` attempts in the window.
/// `attempts` are oldest first.
pub fn handler_failing(
    attempts: &[AttemptFact],
    settings: &AlertsSettings,
    now: DateTime<Utc>,
) -> Vec<Finding> {
    let since = now
        - chrono::Duration::from_std(settings.handler_failure_window)
            .unwrap_or(chrono::Duration::zero());
    let mut handlers: Vec<&str> = attempts.iter().map(|a| a.handler.as_str()).collect();
    handlers.sort_unstable();
    handlers.dedup();
    let mut out = Vec::new();
    for h in handlers {
        let mine: Vec<&AttemptFact> = attempts.iter().filter(|a| a.handler == h).collect();
        let in_a_row = mine.iter().rev().take_while(|a| !a.ok).count();
        let window: Vec<&&AttemptFact> = mine.iter().filter(|a| a.started_at >= since).collect();
        let failed = window.iter().filter(|a| !a.ok).count();
        let total = window.len();
        if in_a_row >= settings.handler_failures_in_a_row as usize {
            out.push(finding(
                HANDLER_FAILING,
                h,
                format!("Handler {h}: the last {in_a_row} attempts failed."),
            ));
        } else if total >= settings.handler_min_attempts as usize
            && failed as f64 / total as f64 > settings.handler_failure_rate
        {
            out.push(finding(
                HANDLER_FAILING,
                h,
                format!(
                    "Handler {h}: {failed} of {total} attempts failed in the last {}.",
                    human(settings.handler_failure_window)
                ),
            ));
        }
    }
    out
}

/// Dead letters waiting: at least `dead_letters` for a handler.
pub fn dead_letters(dead: &[(String, u64)], settings: &AlertsSettings) -> Vec<Finding> {
    dead.iter()
        .filter(|(_, n)| *n >= settings.dead_letters)
        .map(|(h, n)| {
            let s = if *n == 1 { "" } else { "s" };
            finding(
                DEAD_LETTERS,
                h,
                format!("Handler {h}: {n} dead letter{s} waiting for an operator."),
            )
        })
        .collect()
}

/// Whether `at` falls in `hours`, in `tz`.
pub fn in_business_hours(hours: &BusinessHours, tz: Tz, at: DateTime<Utc>) -> bool {
    let local = at.with_timezone(&tz);
    let day = local.weekday().num_days_from_monday() as usize;
    let minute = local.hour() * 60 + local.minute();
    hours.days[day] && minute >= hours.start_minute && minute < hours.end_minute
}

/// Business time between `from` and `to` (at most the last 8 days of it).
pub fn business_time(
    hours: &BusinessHours,
    tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Duration {
    let from = from.max(to - chrono::Duration::days(8));
    if from >= to {
        return Duration::ZERO;
    }
    let mut total = chrono::Duration::zero();
    let mut day = from.with_timezone(&tz).date_naive();
    let last = to.with_timezone(&tz).date_naive();
    while day <= last {
        if hours.days[day.weekday().num_days_from_monday() as usize] {
            let at = |minute: u32| {
                let start =
                    day.and_hms_opt(0, 0, 0)? + chrono::Duration::minutes(i64::from(minute));
                tz.from_local_datetime(&start)
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
            };
            if let (Some(open), Some(close)) = (at(hours.start_minute), at(hours.end_minute)) {
                let (a, b) = (open.max(from), close.min(to));
                if b > a {
                    total += b - a;
                }
            }
        }
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    total.to_std().unwrap_or_default()
}

/// A source silent for longer than usual during its business hours: now is in its hours, it
/// received at least [`SILENCE_MIN_HISTORY`] deliveries over the last 7 days, and the business
/// time since its last delivery exceeds `silence_factor` usual gaps (business time of the
/// week over deliveries) and `min_silence`. `traffic` covers [`SILENCE_HISTORY`].
pub fn source_silent(
    sources: &[String],
    traffic: &[SourceFact],
    settings: &AlertsSettings,
    tz: Tz,
    now: DateTime<Utc>,
) -> Vec<Finding> {
    let week_start =
        now - chrono::Duration::from_std(SILENCE_HISTORY).unwrap_or(chrono::Duration::zero());
    let mut out = Vec::new();
    for source in sources {
        let Some(hours) = settings.hours_of(source) else {
            continue;
        };
        let Some(fact) = traffic.iter().find(|f| &f.source == source) else {
            continue;
        };
        let Some(last) = fact.last_received else {
            continue;
        };
        if fact.received < SILENCE_MIN_HISTORY || !in_business_hours(&hours, tz, now) {
            continue;
        }
        let week = business_time(&hours, tz, week_start, now);
        let usual = week / u32::try_from(fact.received).unwrap_or(u32::MAX);
        let limit = (usual * settings.silence_factor).max(settings.min_silence);
        let silent = business_time(&hours, tz, last, now);
        if silent > limit {
            out.push(finding(
                SOURCE_SILENT,
                source,
                format!(
                    "Source {source}: nothing received for {} of business hours (usually one every {}).",
                    human(silent),
                    human(usual.max(Duration::from_secs(1)))
                ),
            ));
        }
    }
    out
}

/// The listener's certificate expires in fewer than `certificate_days` days.
pub fn certificate_expiry(
    node: &str,
    days_left: Option<f64>,
    settings: &AlertsSettings,
) -> Vec<Finding> {
    match days_left {
        Some(d) if d < f64::from(settings.certificate_days) => {
            let text = if d <= 0.0 {
                "has expired".to_owned()
            } else {
                format!("expires in {} days", d.floor())
            };
            vec![finding(
                CERTIFICATE_EXPIRY,
                node,
                format!("Node {node}: the listener's TLS certificate {text}."),
            )]
        }
        _ => Vec::new(),
    }
}

/// The data volume is more than `disk_used_percent` full.
pub fn disk_space(
    node: &str,
    used_percent: Option<f64>,
    settings: &AlertsSettings,
) -> Vec<Finding> {
    match used_percent {
        Some(p) if p > f64::from(settings.disk_used_percent) => vec![finding(
            DISK_SPACE,
            node,
            format!(
                "Node {node}: the data volume is {p:.0} % full (alert above {} %).",
                settings.disk_used_percent
            ),
        )],
        _ => Vec::new(),
    }
}

/// The audit log failed its last verification (`Some(false)`); `None` = not checked.
pub fn audit_verification(verified: Option<bool>) -> Vec<Finding> {
    match verified {
        Some(false) => vec![finding(
            AUDIT_VERIFICATION,
            "audit",
            "The audit log failed verification: run `wardhook audit verify` for where.".to_owned(),
        )],
        _ => Vec::new(),
    }
}

/// What the DMZ relay reported with the last pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayFact {
    /// Age of the oldest delivery waiting at the relay.
    pub oldest_age: Duration,
    /// Time since the last successful pull (`None`: none yet).
    pub since_pull: Option<Duration>,
}

/// Deliveries wait at the relay longer than `relay_oldest_age`, or no pull succeeded for
/// `relay_not_pulled`.
pub fn relay_backlog(
    node: &str,
    fact: Option<RelayFact>,
    settings: &AlertsSettings,
) -> Vec<Finding> {
    let Some(f) = fact else {
        return Vec::new();
    };
    let text = if f.oldest_age > settings.relay_oldest_age {
        format!(
            "the oldest delivery has waited at the relay for {}",
            human(f.oldest_age)
        )
    } else {
        match f.since_pull {
            Some(s) if s > settings.relay_not_pulled => {
                format!("no successful pull from the relay for {}", human(s))
            }
            _ => return Vec::new(),
        }
    };
    vec![finding(
        RELAY_BACKLOG,
        node,
        format!("Node {node}: {text}."),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn attempt(handler: &str, ok: bool, started_at: DateTime<Utc>) -> AttemptFact {
        AttemptFact {
            handler: handler.into(),
            ok,
            started_at,
        }
    }

    #[test]
    fn a_handler_failing_n_times_in_a_row_is_found_and_one_success_clears_it() {
        let s = AlertsSettings {
            handler_failures_in_a_row: 3,
            handler_min_attempts: 1000,
            ..AlertsSettings::default()
        };
        let now = Utc::now();
        let mut attempts = vec![
            attempt("crm", true, now),
            attempt("crm", false, now),
            attempt("crm", false, now),
        ];
        assert!(
            handler_failing(&attempts, &s, now).is_empty(),
            "two in a row"
        );
        attempts.push(attempt("crm", false, now));
        let found = handler_failing(&attempts, &s, now);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].rule, found[0].subject.as_str()),
            (HANDLER_FAILING, "crm")
        );
        assert!(
            found[0].summary.contains("last 3 attempts"),
            "{}",
            found[0].summary
        );
        attempts.push(attempt("crm", true, now));
        assert!(handler_failing(&attempts, &s, now).is_empty(), "recovered");
    }

    #[test]
    fn a_failure_rate_over_the_threshold_in_the_window_is_found_once_enough_attempts() {
        let s = AlertsSettings::default(); // > 5 % of at least 5 attempts in 15 min
        let now = Utc::now();
        let old = now - chrono::Duration::minutes(20);
        // 1 failure of 20 = 5 %: not over the threshold.
        let mut attempts: Vec<AttemptFact> = (0..19).map(|_| attempt("mail", true, now)).collect();
        attempts.insert(0, attempt("mail", false, now));
        assert!(
            handler_failing(&attempts, &s, now).is_empty(),
            "exactly 5 %"
        );
        attempts.insert(0, attempt("mail", false, now));
        let found = handler_failing(&attempts, &s, now);
        assert_eq!(found.len(), 1, "2 of 21 is over 5 %");
        assert!(found[0].summary.contains("2 of 21"), "{}", found[0].summary);
        // Failures outside the window do not count; too few attempts do not count.
        let stale: Vec<AttemptFact> = (0..10)
            .map(|i| attempt("mail", i % 2 == 0 || i == 9, old))
            .collect();
        assert!(handler_failing(&stale, &s, now).is_empty());
        let few = vec![attempt("mail", false, now), attempt("mail", true, now)];
        assert!(handler_failing(&few, &s, now).is_empty());
    }

    #[test]
    fn dead_letters_are_found_at_the_threshold_per_handler() {
        let s = AlertsSettings {
            dead_letters: 3,
            ..AlertsSettings::default()
        };
        let found = dead_letters(&[("crm".into(), 2), ("mail".into(), 3)], &s);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].subject, "mail");
        assert!(found[0].summary.contains("3 dead letters"));
        let d = AlertsSettings::default();
        assert_eq!(
            dead_letters(&[("crm".into(), 1)], &d).len(),
            1,
            "default: any"
        );
    }

    fn weekdays() -> BusinessHours {
        BusinessHours::parse("mon-fri 08:00-18:00")
            .expect("parses")
            .expect("on")
    }

    #[test]
    fn business_time_counts_only_the_open_hours_in_the_time_zone() {
        let tz: Tz = "Europe/Berlin".parse().expect("tz");
        // Friday 17:00 Berlin (16:00 UTC) to Monday 09:00 Berlin (08:00 UTC): 1 h + 1 h.
        let t = business_time(
            &weekdays(),
            tz,
            at("2026-11-27T16:00:00Z"),
            at("2026-11-30T08:00:00Z"),
        );
        assert_eq!(t, Duration::from_secs(2 * 3600));
        assert!(in_business_hours(
            &weekdays(),
            tz,
            at("2026-11-30T08:00:00Z")
        ));
        assert!(
            !in_business_hours(&weekdays(), tz, at("2026-11-28T10:00:00Z")),
            "saturday"
        );
        assert!(
            !in_business_hours(&weekdays(), tz, at("2026-11-30T17:30:00Z")),
            "18:30 local"
        );
    }

    #[test]
    fn a_source_silent_beyond_its_usual_gap_in_business_hours_is_found() {
        let tz: Tz = "UTC".parse().expect("tz");
        let s = AlertsSettings::default(); // factor 4, at least 1 h, mon-fri 08-18
        let sources = vec!["nextphone".to_owned()];
        // 250 deliveries over a week of 50 business hours: one every 12 min; limit 1 h.
        let monday_noon = at("2026-11-30T12:00:00Z");
        let traffic = |last: &str| {
            vec![SourceFact {
                source: "nextphone".into(),
                received: 250,
                last_received: Some(at(last)),
            }]
        };
        assert!(source_silent(
            &sources,
            &traffic("2026-11-30T11:30:00Z"),
            &s,
            tz,
            monday_noon
        )
        .is_empty());
        let found = source_silent(
            &sources,
            &traffic("2026-11-30T10:30:00Z"),
            &s,
            tz,
            monday_noon,
        );
        assert_eq!(found.len(), 1);
        assert!(
            found[0].summary.contains("1 h 30 min"),
            "{}",
            found[0].summary
        );
        // Friday 17:50 to Monday 08:20 is 30 min of business time: not silent.
        assert!(source_silent(
            &sources,
            &traffic("2026-11-27T17:50:00Z"),
            &s,
            tz,
            at("2026-11-30T08:20:00Z")
        )
        .is_empty());
        // Outside business hours nothing is found, however long the silence.
        assert!(source_silent(
            &sources,
            &traffic("2026-11-27T10:00:00Z"),
            &s,
            tz,
            at("2026-11-28T12:00:00Z")
        )
        .is_empty());
        // Too little history: no "usual" to compare with.
        let sparse = vec![SourceFact {
            source: "nextphone".into(),
            received: SILENCE_MIN_HISTORY - 1,
            last_received: Some(at("2026-11-25T10:00:00Z")),
        }];
        assert!(source_silent(&sources, &sparse, &s, tz, monday_noon).is_empty());
        // A source whose hours are off is not watched.
        let mut off = s.clone();
        off.source_hours.insert("nextphone".into(), None);
        assert!(source_silent(
            &sources,
            &traffic("2026-11-30T08:00:00Z"),
            &off,
            tz,
            monday_noon
        )
        .is_empty());
    }

    #[test]
    fn a_certificate_is_found_under_the_days_threshold() {
        let s = AlertsSettings::default(); // 21 days
        assert!(certificate_expiry("local", Some(21.5), &s).is_empty());
        let found = certificate_expiry("local", Some(20.9), &s);
        assert_eq!(found.len(), 1);
        assert!(found[0].summary.contains("expires in 20 days"));
        assert!(certificate_expiry("local", Some(-1.0), &s)[0]
            .summary
            .contains("has expired"));
        assert!(
            certificate_expiry("local", None, &s).is_empty(),
            "plain HTTP"
        );
    }

    #[test]
    fn a_disk_is_found_above_the_percent_threshold() {
        let s = AlertsSettings::default(); // 90 %
        assert!(disk_space("node-a", Some(90.0), &s).is_empty());
        let found = disk_space("node-a", Some(90.5), &s);
        assert_eq!((found.len(), found[0].subject.as_str()), (1, "node-a"));
        assert!(disk_space("node-a", None, &s).is_empty());
    }

    #[test]
    fn a_failed_audit_verification_is_found_and_an_unchecked_round_finds_nothing() {
        assert_eq!(audit_verification(Some(false)).len(), 1);
        assert!(audit_verification(Some(true)).is_empty());
        assert!(audit_verification(None).is_empty());
    }

    #[test]
    fn a_relay_backlog_is_found_by_age_or_by_missing_pulls() {
        let s = AlertsSettings::default(); // 15 min, 5 min
        let fact = |age: u64, pull: Option<u64>| {
            Some(RelayFact {
                oldest_age: Duration::from_secs(age),
                since_pull: pull.map(Duration::from_secs),
            })
        };
        assert!(relay_backlog("n", fact(900, Some(300)), &s).is_empty());
        assert!(relay_backlog("n", fact(901, Some(10)), &s)[0]
            .summary
            .contains("waited"));
        assert!(relay_backlog("n", fact(0, Some(301)), &s)[0]
            .summary
            .contains("no successful pull"));
        assert!(relay_backlog("n", None, &s).is_empty(), "no [relay]");
    }
}

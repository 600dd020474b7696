//! `[alerts]`: the console's built-in alert rules, their thresholds and who is told.
//!
//! ```toml
//! [alerts]
//! notify = ["ops-mail", "ops-webhook"]   # any configured [[handlers]] (email, slack, http…)
//! # notify_per_hour = 20                 # per notifier; transitions beyond it are not sent
//! # interval = "30s"                     # how often the rules are evaluated
//! # handler_failures_in_a_row = 5
//! # handler_failure_rate = 0.05          # failed share of attempts over the window…
//! # handler_failure_window = "15m"
//! # handler_min_attempts = 5             # …counted once the window holds this many
//! # dead_letters = 1                     # dead letters waiting, per handler
//! # certificate_days = 21                # the listener's certificate expires within
//! # disk_used_percent = 90               # the data folder's volume
//! # audit_verify_every = "1h"            # verify the audit log this often
//! # relay_oldest_age = "15m"             # oldest delivery waiting at the DMZ relay
//! # relay_not_pulled = "5m"              # no successful pull for this long
//! # business_hours = "mon-fri 08:00-18:00"   # in [dispatch] time_zone; "off" to not watch
//! # silence_factor = 4                   # silent for this many usual gaps…
//! # min_silence = "1h"                   # …and at least this long
//!
//! # [alerts.source_hours]                # per-source business hours
//! # nextphone = "mon-sun 07:00-19:00"
//! # fax-gateway = "off"
//! ```
//!
//! Every key has a default, so a file without `[alerts]` gets the rules with their defaults
//! and no notifier (alerts show in the console only). The defaults are the thresholds of the
//! Prometheus rules in `deploy/alerts/wardhook.rules.yml` where both watch the same condition;
//! a test keeps them equal. Numbers are bounded here, once; every problem is reported with its
//! key path.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Default evaluation period.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default: a handler failing this many attempts in a row.
pub const DEFAULT_FAILURES_IN_A_ROW: u32 = 5;
/// Default failed share over the window (the Prometheus rule: success under 95 %).
pub const DEFAULT_FAILURE_RATE: f64 = 0.05;
/// Default window of the failure rate (the Prometheus rule's `[15m]`).
pub const DEFAULT_FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Default attempts in the window before the rate counts.
pub const DEFAULT_MIN_ATTEMPTS: u32 = 5;
/// Default dead letters waiting (the Prometheus rule: `wardhook_dead_letters > 0`).
pub const DEFAULT_DEAD_LETTERS: u64 = 1;
/// Default certificate expiry warning (the Prometheus rule: under 21 days).
pub const DEFAULT_CERTIFICATE_DAYS: u32 = 21;
/// Default disk threshold, percent used.
pub const DEFAULT_DISK_USED_PERCENT: u8 = 90;
/// Default audit verification period.
pub const DEFAULT_AUDIT_VERIFY_EVERY: Duration = Duration::from_secs(3600);
/// Default oldest age at the relay (the Prometheus rule: over 900 s).
pub const DEFAULT_RELAY_OLDEST_AGE: Duration = Duration::from_secs(900);
/// Default time without a successful pull (the Prometheus rule: over 300 s).
pub const DEFAULT_RELAY_NOT_PULLED: Duration = Duration::from_secs(300);
/// Default business hours of every source.
pub const DEFAULT_BUSINESS_HOURS: &str = "mon-fri 08:00-18:00";
/// Default multiple of the usual gap between deliveries.
pub const DEFAULT_SILENCE_FACTOR: u32 = 4;
/// Default shortest silence that counts.
pub const DEFAULT_MIN_SILENCE: Duration = Duration::from_secs(3600);
/// Default notifications per notifier per hour.
pub const DEFAULT_NOTIFY_PER_HOUR: u32 = 20;

/// `[alerts]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// Turn the built-in rules off entirely (default on).
    pub enabled: Option<bool>,
    /// Handler names told of every transition.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Notifications per notifier per hour.
    pub notify_per_hour: Option<u32>,
    /// Evaluation period.
    pub interval: Option<String>,
    /// Failed attempts in a row.
    pub handler_failures_in_a_row: Option<u32>,
    /// Failed share of attempts over the window.
    pub handler_failure_rate: Option<f64>,
    /// The window.
    pub handler_failure_window: Option<String>,
    /// Attempts the window must hold.
    pub handler_min_attempts: Option<u32>,
    /// Dead letters waiting per handler.
    pub dead_letters: Option<u64>,
    /// Days before certificate expiry.
    pub certificate_days: Option<u32>,
    /// Percent of the data volume used.
    pub disk_used_percent: Option<u8>,
    /// Audit verification period.
    pub audit_verify_every: Option<String>,
    /// Oldest delivery waiting at the relay.
    pub relay_oldest_age: Option<String>,
    /// Time without a successful relay pull.
    pub relay_not_pulled: Option<String>,
    /// Business hours of every source.
    pub business_hours: Option<String>,
    /// Multiple of the usual gap.
    pub silence_factor: Option<u32>,
    /// Shortest silence that counts.
    pub min_silence: Option<String>,
    /// Per-source business hours.
    #[serde(default)]
    pub source_hours: BTreeMap<String, String>,
}

/// When a source is expected to send: some weekdays, one daily span (local time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusinessHours {
    /// Monday first.
    pub days: [bool; 7],
    /// Minutes after midnight the span starts.
    pub start_minute: u32,
    /// Minutes after midnight it ends (up to 1440).
    pub end_minute: u32,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn parse_clock(t: &str) -> Option<u32> {
    let (h, m) = t.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

impl BusinessHours {
    /// Parse `mon-fri 08:00-18:00`, `mon,wed,fri 09:00-12:00`, `mon-sun 00:00-24:00`; `off`
    /// is `None`.
    pub fn parse(text: &str) -> Result<Option<Self>, String> {
        let t = text.trim().to_ascii_lowercase();
        if t == "off" {
            return Ok(None);
        }
        let bad = || format!("{text:?} is not like \"mon-fri 08:00-18:00\" or \"off\"");
        let (days_text, span) = t.split_once(' ').ok_or_else(bad)?;
        let mut days = [false; 7];
        for part in days_text.split(',') {
            let index = |d: &str| DAYS.iter().position(|x| *x == d);
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (index(a).ok_or_else(bad)?, index(b).ok_or_else(bad)?);
                    if a > b {
                        return Err(bad());
                    }
                    days[a..=b].iter_mut().for_each(|d| *d = true);
                }
                None => days[index(part).ok_or_else(bad)?] = true,
            }
        }
        let (start, end) = span.trim().split_once('-').ok_or_else(bad)?;
        let (start_minute, end_minute) = (
            parse_clock(start).ok_or_else(bad)?,
            parse_clock(end).ok_or_else(bad)?,
        );
        if start_minute >= end_minute {
            return Err(format!("{text:?}: the span must end after it starts"));
        }
        Ok(Some(Self {
            days,
            start_minute,
            end_minute,
        }))
    }
}

/// Checked `[alerts]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsSettings {
    /// Whether the rules run.
    pub enabled: bool,
    /// Handler names told of every transition.
    pub notify: Vec<String>,
    /// Notifications per notifier per hour.
    pub notify_per_hour: u32,
    /// Evaluation period.
    pub interval: Duration,
    /// Failed attempts in a row.
    pub handler_failures_in_a_row: u32,
    /// Failed share over the window, in (0, 1].
    pub handler_failure_rate: f64,
    /// The window.
    pub handler_failure_window: Duration,
    /// Attempts the window must hold.
    pub handler_min_attempts: u32,
    /// Dead letters waiting per handler.
    pub dead_letters: u64,
    /// Days before certificate expiry.
    pub certificate_days: u32,
    /// Percent of the data volume used.
    pub disk_used_percent: u8,
    /// Audit verification period.
    pub audit_verify_every: Duration,
    /// Oldest delivery waiting at the relay.
    pub relay_oldest_age: Duration,
    /// Time without a successful pull.
    pub relay_not_pulled: Duration,
    /// Business hours of sources not listed in `source_hours` (`None`: not watched).
    pub business_hours: Option<BusinessHours>,
    /// Multiple of the usual gap.
    pub silence_factor: u32,
    /// Shortest silence that counts.
    pub min_silence: Duration,
    /// Per-source business hours (`None`: not watched).
    pub source_hours: BTreeMap<String, Option<BusinessHours>>,
}

impl Default for AlertsSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            notify: Vec::new(),
            notify_per_hour: DEFAULT_NOTIFY_PER_HOUR,
            interval: DEFAULT_INTERVAL,
            handler_failures_in_a_row: DEFAULT_FAILURES_IN_A_ROW,
            handler_failure_rate: DEFAULT_FAILURE_RATE,
            handler_failure_window: DEFAULT_FAILURE_WINDOW,
            handler_min_attempts: DEFAULT_MIN_ATTEMPTS,
            dead_letters: DEFAULT_DEAD_LETTERS,
            certificate_days: DEFAULT_CERTIFICATE_DAYS,
            disk_used_percent: DEFAULT_DISK_USED_PERCENT,
            audit_verify_every: DEFAULT_AUDIT_VERIFY_EVERY,
            relay_oldest_age: DEFAULT_RELAY_OLDEST_AGE,
            relay_not_pulled: DEFAULT_RELAY_NOT_PULLED,
            business_hours: BusinessHours::parse(DEFAULT_BUSINESS_HOURS).ok().flatten(),
            silence_factor: DEFAULT_SILENCE_FACTOR,
            min_silence: DEFAULT_MIN_SILENCE,
            source_hours: BTreeMap::new(),
        }
    }
}

impl AlertsSettings {
    /// The business hours of `source`.
    pub fn hours_of(&self, source: &str) -> Option<BusinessHours> {
        match self.source_hours.get(source) {
            Some(h) => *h,
            None => self.business_hours,
        }
    }
}

/// Check `[alerts]` against the configured `sources` and `handlers`; every problem goes to
/// `problem(path, message)`.
pub(super) fn check(
    section: &AlertsSection,
    sources: &[String],
    handlers: &[String],
    problem: &mut dyn FnMut(String, String),
) -> Option<AlertsSettings> {
    let mut ok = true;
    let mut fail = |p: &str, m: String| {
        ok = false;
        problem(format!("alerts.{p}"), m);
    };
    let d = AlertsSettings::default();
    fn duration(
        key: &str,
        text: &Option<String>,
        default: Duration,
        min: Duration,
        max: Duration,
        fail: &mut dyn FnMut(&str, String),
    ) -> Duration {
        let Some(text) = text else { return default };
        match super::parse_duration(text) {
            Ok(v) if v >= min && v <= max => v,
            Ok(_) => {
                let message = format!("must be between {}s and {}s", min.as_secs(), max.as_secs());
                fail(key, message);
                default
            }
            Err(e) => {
                fail(key, e);
                default
            }
        }
    }
    let (sec, hour, week) = (
        Duration::from_secs(1),
        Duration::from_secs(3600),
        Duration::from_secs(7 * 86_400),
    );
    let interval = duration(
        "interval",
        &section.interval,
        d.interval,
        sec,
        hour,
        &mut fail,
    );
    let handler_failure_window = duration(
        "handler_failure_window",
        &section.handler_failure_window,
        d.handler_failure_window,
        Duration::from_secs(60),
        Duration::from_secs(86_400),
        &mut fail,
    );
    let audit_verify_every = duration(
        "audit_verify_every",
        &section.audit_verify_every,
        d.audit_verify_every,
        sec,
        week,
        &mut fail,
    );
    let relay_oldest_age = duration(
        "relay_oldest_age",
        &section.relay_oldest_age,
        d.relay_oldest_age,
        sec,
        week,
        &mut fail,
    );
    let relay_not_pulled = duration(
        "relay_not_pulled",
        &section.relay_not_pulled,
        d.relay_not_pulled,
        sec,
        week,
        &mut fail,
    );
    let min_silence = duration(
        "min_silence",
        &section.min_silence,
        d.min_silence,
        Duration::from_secs(60),
        week,
        &mut fail,
    );
    let mut bounded = |key: &str, v: Option<u64>, default: u64, min: u64, max: u64| match v {
        None => default,
        Some(v) if (min..=max).contains(&v) => v,
        Some(_) => {
            fail(key, format!("must be between {min} and {max}"));
            default
        }
    };
    let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    let handler_failures_in_a_row = narrow(bounded(
        "handler_failures_in_a_row",
        section.handler_failures_in_a_row.map(u64::from),
        u64::from(d.handler_failures_in_a_row),
        1,
        1000,
    ));
    let handler_min_attempts = narrow(bounded(
        "handler_min_attempts",
        section.handler_min_attempts.map(u64::from),
        u64::from(d.handler_min_attempts),
        1,
        10_000,
    ));
    let dead_letters = bounded(
        "dead_letters",
        section.dead_letters,
        d.dead_letters,
        1,
        1_000_000,
    );
    let certificate_days = narrow(bounded(
        "certificate_days",
        section.certificate_days.map(u64::from),
        u64::from(d.certificate_days),
        1,
        365,
    ));
    let disk_used_percent = u8::try_from(bounded(
        "disk_used_percent",
        section.disk_used_percent.map(u64::from),
        u64::from(d.disk_used_percent),
        1,
        100,
    ))
    .unwrap_or(d.disk_used_percent);
    let silence_factor = narrow(bounded(
        "silence_factor",
        section.silence_factor.map(u64::from),
        u64::from(d.silence_factor),
        1,
        100,
    ));
    let notify_per_hour = narrow(bounded(
        "notify_per_hour",
        section.notify_per_hour.map(u64::from),
        u64::from(d.notify_per_hour),
        1,
        3600,
    ));
    let handler_failure_rate = match section.handler_failure_rate {
        None => d.handler_failure_rate,
        Some(r) if r > 0.0 && r <= 1.0 => r,
        Some(_) => {
            fail(
                "handler_failure_rate",
                "must be a share above 0 and at most 1 (0.05 = 5 %)".into(),
            );
            d.handler_failure_rate
        }
    };
    let business_hours = match &section.business_hours {
        None => d.business_hours,
        Some(t) => BusinessHours::parse(t).unwrap_or_else(|e| {
            fail("business_hours", e);
            None
        }),
    };
    let mut source_hours = BTreeMap::new();
    for (source, text) in &section.source_hours {
        let key = format!("source_hours.{source}");
        if !sources.iter().any(|s| s == source) {
            fail(&key, format!("no source is named {source:?}"));
        }
        match BusinessHours::parse(text) {
            Ok(h) => {
                source_hours.insert(source.clone(), h);
            }
            Err(e) => fail(&key, e),
        }
    }
    for (i, name) in section.notify.iter().enumerate() {
        if !handlers.iter().any(|h| h == name) {
            fail(
                &format!("notify[{i}]"),
                format!("no handler is named {name:?}"),
            );
        }
    }
    ok.then(|| AlertsSettings {
        enabled: section.enabled.unwrap_or(true),
        notify: section.notify.clone(),
        notify_per_hour,
        interval,
        handler_failures_in_a_row,
        handler_failure_rate,
        handler_failure_window,
        handler_min_attempts,
        dead_letters,
        certificate_days,
        disk_used_percent,
        audit_verify_every,
        relay_oldest_age,
        relay_not_pulled,
        business_hours,
        silence_factor,
        min_silence,
        source_hours,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(toml_text: &str) -> (Option<AlertsSettings>, Vec<String>) {
        let section: AlertsSection = toml::from_str(toml_text).expect("parses");
        let mut problems = Vec::new();
        let settings = check(
            &section,
            &["nextphone".to_owned()],
            &["ops-mail".to_owned()],
            &mut |p, m| problems.push(format!("{p}: {m}")),
        );
        (settings, problems)
    }

    #[test]
    fn an_empty_section_gives_the_documented_defaults() {
        let (settings, problems) = checked("");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.expect("settings"), AlertsSettings::default());
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key_path() {
        let (settings, problems) = checked(
            r#"
            notify = ["nobody"]
            interval = "0s"
            handler_failure_rate = 1.5
            handler_failures_in_a_row = 0
            disk_used_percent = 101
            business_hours = "weekdays"
            [source_hours]
            fax = "mon-fri 09:00-17:00"
            nextphone = "mon-fri 18:00-08:00"
            "#,
        );
        assert!(settings.is_none());
        for key in [
            "alerts.notify[0]",
            "alerts.interval",
            "alerts.handler_failure_rate",
            "alerts.handler_failures_in_a_row",
            "alerts.disk_used_percent",
            "alerts.business_hours",
            "alerts.source_hours.fax",
            "alerts.source_hours.nextphone",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(&format!("{key}:"))),
                "{key} missing from {problems:?}"
            );
        }
    }

    #[test]
    fn business_hours_parse_day_ranges_lists_and_off() {
        let h = BusinessHours::parse("mon-fri 08:00-18:00")
            .expect("parses")
            .expect("on");
        assert_eq!(h.days, [true, true, true, true, true, false, false]);
        assert_eq!((h.start_minute, h.end_minute), (480, 1080));
        let h = BusinessHours::parse("sat,sun 00:00-24:00")
            .expect("parses")
            .expect("on");
        assert_eq!(h.days, [false, false, false, false, false, true, true]);
        assert_eq!(h.end_minute, 1440);
        assert_eq!(BusinessHours::parse("off").expect("parses"), None);
        for bad in [
            "fri-mon 08:00-18:00",
            "mon 25:00-26:00",
            "mon 08:00",
            "daily",
        ] {
            assert!(BusinessHours::parse(bad).is_err(), "{bad} accepted");
        }
    }
}

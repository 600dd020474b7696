//! Durations that come from outside — a destination's `Retry-After`, an OAuth2 token's
//! `expires_in` — parsed in one place and clamped to documented bounds before anyone adds them
//! to a clock.
//!
//! A destination is not trusted to pick how long wardhook waits: `Retry-After:
//! 99999999999999` once overflowed `DateTime + Duration` in a dispatch worker and killed it, and
//! `expires_in: 18446744073709551615` did the same to `Instant + Duration` in the token cache.
//! Every parser here accepts any text or JSON value, never panics, and returns a duration within
//! its bound; negative values and dates in the past mean zero.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

/// The longest delay a `Retry-After` can ask for: one day. A destination asking for more gets
/// this; the route's retry schedule still applies when its own step is longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest an OAuth2 access token is cached, whatever its `expires_in` says: one day.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// `Retry-After` as delta-seconds (`120`) or an HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`, and
/// the obsolete RFC 850 and asctime forms), relative to `now`, clamped to
/// [`MAX_RETRY_AFTER`]. A date in the past and a negative number mean "now" (zero); a number
/// too large for any integer type means the maximum. `None` when the value is neither.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Some(secs) = parse_seconds(value) {
        return Some(clamp_seconds(secs, MAX_RETRY_AFTER));
    }
    let at = parse_http_date(value)?;
    let delta = at.signed_duration_since(now);
    Some(
        delta
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// An OAuth2 token response's `expires_in` (seconds, RFC 6749 §5.1) as a cache lifetime,
/// clamped to [`MAX_TOKEN_LIFETIME`]. Accepts a JSON integer, a float or a numeric string (some
/// providers quote it); negative values mean zero (do not cache). `None` for anything else, so
/// the caller can fall back to its default.
pub fn parse_expires_in(value: &serde_json::Value) -> Option<Duration> {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Some(Seconds::Whole(u))
            } else if n.as_i64().is_some() {
                // A negative integer (as_u64 failed).
                Some(Seconds::Whole(0))
            } else {
                n.as_f64().map(Seconds::Fraction)
            }
        }
        serde_json::Value::String(s) => parse_seconds(s.trim()),
        _ => None,
    }
    .map(|secs| clamp_seconds(secs, MAX_TOKEN_LIFETIME))
}

/// A number of seconds as a destination wrote it, before clamping.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seconds {
    /// A whole non-negative number (negative ones are already zero).
    Whole(u64),
    /// A fraction; may be negative, huge or not finite.
    Fraction(f64),
}

/// `120`, `-5` (zero) or a run of digits too long for `u64` (the maximum); `None` for
/// anything else. Fractions only through [`parse_expires_in`]'s JSON numbers and strings.
fn parse_seconds(text: &str) -> Option<Seconds> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if negative {
        return Some(Seconds::Whole(0));
    }
    Some(Seconds::Whole(digits.parse::<u64>().unwrap_or(u64::MAX)))
}

fn clamp_seconds(secs: Seconds, max: Duration) -> Duration {
    match secs {
        Seconds::Whole(s) => Duration::from_secs(s).min(max),
        Seconds::Fraction(f) if f.is_nan() || f <= 0.0 => Duration::ZERO,
        Seconds::Fraction(f) => Duration::try_from_secs_f64(f).map_or(max, |d| d.min(max)),
    }
}

/// The three HTTP date forms of RFC 9110 §5.6.7, read as UTC.
fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc2822(value) {
        return Some(at.with_timezone(&Utc));
    }
    // RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`; asctime: `Sun Nov  6 08:49:37 1994`.
    for format in ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(value, format) {
            return Some(naive.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .expect("ts")
            .with_timezone(&Utc)
    }

    #[test]
    fn retry_after_reads_seconds_and_the_three_http_date_forms() {
        let cases: &[(&str, Option<u64>)] = &[
            ("120", Some(120)),
            (" 7 ", Some(7)),
            ("0", Some(0)),
            ("Sun, 22 Nov 2026 10:01:30 GMT", Some(90)),
            ("Sunday, 22-Nov-26 10:02:00 GMT", Some(120)),
            ("Sun Nov 22 10:00:05 2026", Some(5)),
            ("soon", None),
            ("", None),
            ("1.5", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse_retry_after(value, now()),
                want.map(Duration::from_secs),
                "{value:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_clamped_to_a_day_and_the_past_or_negative_is_now() {
        let day = Some(MAX_RETRY_AFTER);
        assert_eq!(parse_retry_after("99999999999999", now()), day);
        assert_eq!(parse_retry_after("18446744073709551615", now()), day);
        assert_eq!(
            parse_retry_after("999999999999999999999999999999", now()),
            day
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now()),
            day
        );
        assert_eq!(
            parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now()), Some(Duration::ZERO));
    }

    #[test]
    fn expires_in_is_clamped_to_a_day_and_negative_means_do_not_cache() {
        use serde_json::json;
        let day = Some(MAX_TOKEN_LIFETIME);
        let cases: &[(serde_json::Value, Option<Duration>)] = &[
            (json!(3600), Some(Duration::from_secs(3600))),
            (json!("3600"), Some(Duration::from_secs(3600))),
            (json!(18_446_744_073_709_551_615_u64), day),
            (json!("18446744073709551616"), day),
            (json!(1e300), day),
            (json!(2.5), Some(Duration::from_millis(2500))),
            (json!(-1), Some(Duration::ZERO)),
            (json!(-1e300), Some(Duration::ZERO)),
            (json!("-30"), Some(Duration::ZERO)),
            (json!(null), None),
            (json!("soon"), None),
            (json!([3600]), None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_expires_in(value), *want, "{value}");
        }
    }

    proptest! {
        #[test]
        fn retry_after_never_panics_on_any_text_and_stays_within_a_day(value in ".*") {
            if let Some(d) = parse_retry_after(&value, now()) {
                prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn retry_after_of_any_number_stays_within_a_day(secs in any::<u64>(), extra in "[0-9]{0,30}") {
            let d = parse_retry_after(&format!("{secs}{extra}"), now());
            prop_assert!(d.is_some_and(|d| d <= MAX_RETRY_AFTER));
        }

        #[test]
        fn retry_after_of_any_http_date_stays_within_a_day(
            secs in -8_000_000_000_000_i64..250_000_000_000_i64,
            now_secs in 0_i64..4_000_000_000_i64,
        ) {
            let Some(at) = DateTime::from_timestamp(secs, 0) else { return Ok(()) };
            let Some(now) = DateTime::from_timestamp(now_secs, 0) else { return Ok(()) };
            let text = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            if let Some(d) = parse_retry_after(&text, now) {
                prop_assert!(d <= MAX_RETRY_AFTER);
            }
        }

        #[test]
        fn expires_in_of_any_number_stays_within_a_day(
            u in any::<u64>(), i in any::<i64>(), f in any::<f64>(), s in ".*",
        ) {
            for value in [
                serde_json::json!(u),
                serde_json::json!(i),
                serde_json::json!(f),
                serde_json::json!(s),
                serde_json::json!(u.to_string()),
                serde_json::json!(f.to_string()),
            ] {
                if let Some(d) = parse_expires_in(&value) {
                    prop_assert!(d <= MAX_TOKEN_LIFETIME);
                }
            }
        }
    }
}

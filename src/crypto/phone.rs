//! Caller phone numbers as the blind index sees them: one spelling per number, so "(555)
//! 010-1234" typed by an operator and "+15550101234" sent by a telephony vendor index the same.
//!
//! The rule (README "Find a call" repeats it):
//! - `tel:` is dropped; spaces, `(`, `)`, `-`, `.` and `/` are ignored. Anything else (letters,
//!   `*`, `#`, SIP addresses, "anonymous", an extension) makes the value not a phone number,
//!   and it gets no index.
//! - A number beginning with `+` or `00` is international: `+` and its digits (7 to 15, E.164).
//! - Any other number is national. With a configured country calling code (`[storage]
//!   phone_country`), one trunk `0` is dropped and the code put in front (`+44` `020 7946 0000`
//!   → `+442079460000`); under code 1 (North America) an 11-digit number already beginning with
//!   1 keeps it. Without a configured code a national number keeps its digits and no `+`, so it
//!   matches only the same national digits.

use crate::config::PhoneCountry;

/// The fewest digits of an international number (short national plans reach 7 with the code).
const MIN_INTERNATIONAL: usize = 7;
/// E.164's most digits.
const MAX_DIGITS: usize = 15;
/// The fewest digits of a national number.
const MIN_NATIONAL: usize = 4;

/// The one spelling of `raw` (see the module docs), or `None` if it is not a phone number.
pub fn normalize(raw: &str, country: Option<&PhoneCountry>) -> Option<String> {
    let text = raw.trim();
    let text = text
        .strip_prefix("tel:")
        .or_else(|| text.strip_prefix("TEL:"))
        .unwrap_or(text)
        .trim();
    if text.len() > 64 {
        return None;
    }
    let (plus, rest) = match text.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '(' | ')' | '-' | '.' | '/' => {}
            _ => return None,
        }
    }
    if plus || digits.starts_with("00") {
        let digits = if plus { &digits[..] } else { &digits[2..] };
        let ok =
            (MIN_INTERNATIONAL..=MAX_DIGITS).contains(&digits.len()) && !digits.starts_with('0');
        return ok.then(|| format!("+{digits}"));
    }
    if !(MIN_NATIONAL..=MAX_DIGITS).contains(&digits.len()) {
        return None;
    }
    match country {
        None => Some(digits),
        Some(c) if c.as_str() == "1" && digits.len() == 11 && digits.starts_with('1') => {
            Some(format!("+{digits}"))
        }
        Some(c) => {
            let national = digits.strip_prefix('0').unwrap_or(&digits);
            let full = format!("{}{national}", c.as_str());
            (full.len() <= MAX_DIGITS).then(|| format!("+{full}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> PhoneCountry {
        PhoneCountry::parse("1").expect("code 1")
    }

    #[test]
    fn national_and_international_spellings_meet_under_a_configured_code() {
        let want = Some("+15550101234".to_owned());
        for raw in [
            "(555) 010-1234",
            "555.010.1234",
            "+1 555 010 1234",
            "+15550101234",
            "1-555-010-1234",
            "001 555 010 1234",
            "tel:+1-555-010-1234",
        ] {
            assert_eq!(normalize(raw, Some(&us())), want, "{raw}");
        }
        let uk = PhoneCountry::parse("+44").expect("code 44");
        assert_eq!(
            normalize("020 7946 0000", Some(&uk)),
            Some("+442079460000".to_owned())
        );
        assert_eq!(
            normalize("+44 20 7946 0000", None),
            Some("+442079460000".to_owned())
        );
    }

    #[test]
    fn without_a_code_a_national_number_matches_only_itself() {
        assert_eq!(
            normalize("(555) 010-1234", None),
            Some("5550101234".to_owned())
        );
        assert_ne!(
            normalize("(555) 010-1234", None),
            normalize("+15550101234", None)
        );
    }

    #[test]
    fn what_is_not_a_number_gets_no_spelling() {
        for raw in [
            "",
            "anonymous",
            "client:alice",
            "sip:alice@example.org",
            "555-0101 x12",
            "*67 555 010 1234",
            "+12",
            "+1234567890123456",
            "+0 555 010 1234",
            "12",
        ] {
            assert_eq!(normalize(raw, Some(&us())), None, "{raw}");
        }
    }

    #[test]
    fn country_codes_are_short_digit_strings() {
        assert_eq!(PhoneCountry::parse("+353").expect("353").as_str(), "353");
        for bad in ["", "0", "01", "1234", "us", "+"] {
            assert!(PhoneCountry::parse(bad).is_err(), "{bad}");
        }
    }
}

//! A caller's phone number that a handler's output names (`caller_phone_from`), for "find a
//! call" on events that carry no usable number themselves (a CRM lookup answers with the
//! patient's number, say).
//!
//! The dispatcher reads the string at the handler's configured JSON pointer in its output entry
//! (`{"data": …, "status": …}`); the value travels with the attempt record only so the store can
//! compute its blind index ([`crate::crypto::Keyring::caller_ref`]) in the transaction that
//! records the successful attempt. It is zeroized when dropped and never prints: no column,
//! log line or error holds the number.

use std::fmt;

use zeroize::Zeroizing;

use super::types::AttemptResult;
use crate::crypto::Keyring;

/// The longest value taken from an output; longer than any spelling
/// [`crate::crypto::phone::normalize`] accepts, so nothing indexable is lost.
const MAX_PHONE_LEN: usize = 64;

/// A phone number read from a handler's output: zeroized on drop, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct CallerPhone(Zeroizing<String>);

impl CallerPhone {
    /// Wrap a number already in memory.
    pub fn new(phone: &str) -> Self {
        Self(Zeroizing::new(phone.to_owned()))
    }

    /// The number, for its blind index only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CallerPhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallerPhone(redacted)")
    }
}

/// Where a handler's output entry names the caller's phone: a checked RFC 6901 JSON pointer
/// such as `/data/contact/phone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhonePointer(String);

impl PhonePointer {
    /// Check `text` as a JSON pointer into the output entry: empty or `/`-separated tokens in
    /// which `~` is only ever `~0` or `~1`. The empty pointer (the whole entry, an object) can
    /// never be a number, so it is refused too.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "{text:?} is not a JSON pointer into the handler's output: it must start with \
                 \"/\" (e.g. \"/data/contact/phone\")"
            ));
        }
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                return Err(format!(
                    "{text:?} is not a JSON pointer: \"~\" must be written \"~0\" and \"/\" \
                     inside a key \"~1\""
                ));
            }
        }
        Ok(Self(text.to_owned()))
    }

    /// The string at this pointer in `output`; nothing when it is missing, not a string, or
    /// longer than any phone number.
    pub fn read(&self, output: &serde_json::Value) -> Option<CallerPhone> {
        let text = output.pointer(&self.0)?.as_str()?;
        (text.len() <= MAX_PHONE_LEN).then(|| CallerPhone::new(text))
    }
}

/// The blind index of the caller's phone a successful attempt's output named, if it names a
/// phone number at all.
pub(crate) fn caller_ref_of(result: &AttemptResult, keyring: &Keyring) -> Option<String> {
    match result {
        AttemptResult::Ok {
            caller_phone: Some(phone),
            ..
        } => keyring.caller_ref(phone.expose()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pointer_must_parse_and_reads_only_a_string() {
        for bad in ["", "data/phone", "/data/~2", "/a~"] {
            assert!(PhonePointer::parse(bad).is_err(), "{bad:?}");
        }
        let output = serde_json::json!({
            "data": { "contact": { "phone": "+15550101234", "ext": 12 }, "a/b": "555 0100" },
            "status": 200
        });
        let read = |p: &str| {
            PhonePointer::parse(p)
                .expect("a pointer")
                .read(&output)
                .map(|c| c.expose().to_owned())
        };
        assert_eq!(read("/data/contact/phone").as_deref(), Some("+15550101234"));
        assert_eq!(read("/data/a~1b").as_deref(), Some("555 0100"));
        assert_eq!(read("/data/contact/ext"), None, "a number is not a string");
        assert_eq!(read("/status"), None);
        assert_eq!(read("/data/contact/missing"), None);
        let long = serde_json::json!({ "data": { "phone": "5".repeat(65) } });
        let pointer = PhonePointer::parse("/data/phone").expect("a pointer");
        assert!(pointer.read(&long).is_none(), "longer than any number");
        let phone = CallerPhone::new("+15550101234");
        assert!(!format!("{phone:?}").contains("555"));
    }
}

//! Every sender envelope on arbitrary bodies: normalization never panics, and whatever it
//! accepts as an event type is an identifier (the column it is stored in is plaintext).
#![no_main]

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use wardhook::normalize::{normalize_body, Envelope};

const PRESETS: &[&str] = &[
    "nextphone",
    "phoneshield",
    "standard-webhooks",
    "retell",
    "vapi",
    "telnyx",
    "twilio",
    "generic",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let envelope = Envelope::for_preset_name(PRESETS[usize::from(selector) % PRESETS.len()]);
    let content_type = if selector & 0x80 != 0 {
        Some("application/x-www-form-urlencoded")
    } else {
        Some(envelope.default_content_type())
    };
    match normalize_body(envelope, body, content_type, DateTime::UNIX_EPOCH) {
        Ok(n) => {
            let t = n.event_type.as_str();
            assert!(!t.is_empty() && t.len() <= 128, "event type length");
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-_:/~".contains(&b)),
                "event type is not an identifier"
            );
        }
        Err(e) => {
            // Reasons name envelope paths, never content: bounded and printable.
            let reason = e.to_string();
            assert!(reason.len() < 200, "reason too long");
        }
    }
});

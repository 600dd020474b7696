//! HL7 v2 escaping (v2.5.1 chapter 2.7): every value taken from an event is escaped before it
//! reaches a segment template, so caller-supplied text can never add a field, a component, a
//! repetition, a sub-component or a segment, nor end the MLLP frame.
//!
//! With the standard encoding characters (`MSH|^~\&`):
//!
//! | in the value | written as |
//! | --- | --- |
//! | `\|` field separator | `\F\` |
//! | `^` component separator | `\S\` |
//! | `~` repetition separator | `\R\` |
//! | `&` sub-component separator | `\T\` |
//! | `\` escape character | `\E\` |
//! | carriage return (segment separator) | `\X0D\` |
//! | line feed | `\X0A\` |
//! | any other control character (MLLP's `0x0B`, `0x1C` included) and DEL | `\Xhh\` |
//!
//! Everything else (printable ASCII and non-ASCII text, sent as UTF-8 with
//! `MSH-18 = UNICODE UTF-8`) passes unchanged.

use serde_json::Value;
use wardhook_sdk::{Caller, Event};

/// `text` escaped for use inside any HL7 field, component or sub-component.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '~' => out.push_str("\\R\\"),
            '&' => out.push_str("\\T\\"),
            '\\' => out.push_str("\\E\\"),
            c if c.is_ascii_control() => {
                // `is_ascii_control` covers 0x00–0x1F and DEL (0x7F).
                out.push_str(&format!("\\X{:02X}\\", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether `text` can appear in a rendered segment without changing its structure beyond what
/// the template author wrote: no segment break and no MLLP framing byte.
pub fn is_single_segment(text: &str) -> bool {
    !text
        .chars()
        .any(|c| matches!(c, '\r' | '\n' | '\u{0b}' | '\u{1c}'))
}

/// `value` with every string (and every object key) escaped, numbers and booleans unchanged.
pub fn escape_value(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(escape(s)),
        Value::Array(a) => Value::Array(a.iter().map(escape_value).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (escape(k), escape_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The event as segment templates see it: every string escaped, so a template never needs a
/// filter to be safe and cannot forget one.
pub fn escape_event(event: &Event) -> Event {
    let esc = |s: &Option<String>| s.as_deref().map(escape);
    Event {
        delivery_id: escape(&event.delivery_id),
        source: escape(&event.source),
        event_type: escape(&event.event_type),
        call_id: esc(&event.call_id),
        caller: Caller {
            phone: esc(&event.caller.phone),
            name: esc(&event.caller.name),
            email: esc(&event.caller.email),
        },
        data: escape_value(&event.data),
        ..event.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_delimiter_and_line_break_is_escaped() {
        assert_eq!(escape("Smith|^~\\&"), "Smith\\F\\\\S\\\\R\\\\E\\\\T\\");
        assert_eq!(escape("a\r\nb"), "a\\X0D\\\\X0A\\b");
        assert_eq!(escape("\u{0b}x\u{1c}\u{7f}"), "\\X0B\\x\\X1C\\\\X7F\\");
        assert_eq!(escape("Zoë Müller, 555-0100"), "Zoë Müller, 555-0100");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn escaped_text_holds_no_structural_character() {
        let nasty = "x|y^z~w&v\\u\rSEG|1\nOBX|\u{1c}\r\u{0b}";
        let e = escape(nasty);
        assert!(!e.contains(['|', '^', '~', '&']), "{e}");
        assert!(is_single_segment(&e), "{e}");
        // Every backslash in the output opens or closes an escape sequence.
        assert_eq!(e.matches('\\').count() % 2, 0);
    }

    #[test]
    fn values_and_keys_of_the_payload_are_escaped_numbers_are_not() {
        let v = serde_json::json!({"a|b": ["x^y", 3, true], "n": {"k": "l&m"}});
        assert_eq!(
            escape_value(&v),
            serde_json::json!({"a\\F\\b": ["x\\S\\y", 3, true], "n": {"k": "l\\T\\m"}})
        );
    }
}

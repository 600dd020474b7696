//! What destinations send back and how URL templates are rendered, on arbitrary input: the
//! `Retry-After` and `expires_in` parsers never panic and stay within their documented bounds,
//! URL templates never panic on any source text, and a value in a path segment either keeps
//! the configured segments (and decodes back to itself) or is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardhook_sdk::limits::{parse_expires_in, parse_retry_after, MAX_RETRY_AFTER, MAX_TOKEN_LIFETIME};
use wardhook_sdk::template::{TemplateError, UrlTemplate, Vars};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = chrono::DateTime::from_timestamp(1_795_359_600, 0).unwrap_or_default();

    if let Some(d) = parse_retry_after(text, now) {
        assert!(d <= MAX_RETRY_AFTER);
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        if let Some(d) = parse_expires_in(&value) {
            assert!(d <= MAX_TOKEN_LIFETIME);
        }
    }
    if let Some(d) = parse_expires_in(&serde_json::Value::String(text.to_owned())) {
        assert!(d <= MAX_TOKEN_LIFETIME);
    }

    // Any text as a URL template: compiles or not, never panics.
    let _ = UrlTemplate::compile(text);

    // Any text as a value in a path segment.
    let Ok(template) = UrlTemplate::compile("https://crm.example/api/{{ data.id }}/notes") else {
        return;
    };
    let event: wardhook_sdk::Event = match serde_json::from_value(serde_json::json!({
        "delivery_id": "dlv_fuzz",
        "source": "fuzz",
        "event_type": "call.ended",
        "received_at": now,
        "caller": {},
        "data": {"id": text},
    })) {
        Ok(e) => e,
        Err(_) => return,
    };
    let vars = Vars::new(&event, &serde_json::Map::new(), now, chrono_tz::Tz::UTC);
    match template.render(&vars) {
        Ok(url) => {
            assert_eq!(url.host_str(), Some("crm.example"));
            let segments: Vec<&str> = url.path_segments().map(Iterator::collect).unwrap_or_default();
            assert_eq!(segments.len(), 3);
            assert_eq!(segments[0], "api");
            assert_eq!(segments[2], "notes");
        }
        Err(TemplateError::PathSegment { .. }) => assert!(matches!(text, "" | "." | "..")),
        Err(e) => panic!("unexpected render error: {e}"),
    }
});

//! Every header parser of the verify stage on arbitrary input: none may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardhook::verify::parsers;

fuzz_target!(|data: &[u8]| {
    let _ = parsers::parse_telnyx_public_key(data);
    let _ = parsers::zoom_url_validation_token(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parsers::parse_stripe_header(text);
    let _ = parsers::parse_retell_header(text);
    let _ = parsers::parse_standard_webhooks_signatures(text);
    let _ = parsers::parse_plivo_signatures(text);
    let _ = parsers::parse_vonage_jwt(text);
    let _ = parsers::parse_basic(text);
    let _ = parsers::parse_forwarded_entry(text);
});

//! Property tests: any single-bit change to body, signature, timestamp or id is rejected; the
//! replay window's edges behave as documented; no input makes a parser or verifier panic.

use proptest::prelude::*;

use super::roundtrip::{preset_spec, URL};
use super::*;
use crate::verify::parsers;
use crate::verify::sign::sign_request;

const NOW: i64 = 1_795_000_000;
const EMPTY_OBJ: &[u8] = b"{ }";

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let i = (bit / 8) % out.len();
    out[i] ^= 1 << (bit % 8);
    out
}

/// Headers with one value's bit flipped; `None` when the result is not a legal header value
/// (the HTTP layer would have refused the request before us).
fn flip_header(hs: &[(String, String)], name: &str, bit: usize) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (k, v) in hs {
        let value = if k.eq_ignore_ascii_case(name) {
            flip(v.as_bytes(), bit)
        } else {
            v.as_bytes().to_vec()
        };
        map.append(
            HeaderName::from_bytes(k.as_bytes()).ok()?,
            HeaderValue::from_bytes(&value).ok()?,
        );
    }
    Some(map)
}

fn sw_signed(body: &[u8]) -> (VerifierSpec, Vec<(String, String)>) {
    let s = preset_spec(Preset::StandardWebhooks);
    let hs = sign_request(&s, body, at(NOW), URL).expect("sign");
    (s, hs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn flipping_any_body_bit_is_rejected(body in proptest::collection::vec(any::<u8>(), 1..200), bit in any::<usize>()) {
        let (s, hs) = sw_signed(&body);
        let map = owned_headers(&hs);
        prop_assert!(check(&s, &map, &body, "/", at(NOW)).is_ok());
        prop_assert!(check(&s, &map, &flip(&body, bit), "/", at(NOW)).is_err());
    }

    #[test]
    fn flipping_any_signature_timestamp_or_id_bit_is_rejected(
        body in proptest::collection::vec(any::<u8>(), 0..100),
        which in 0usize..3,
        bit in any::<usize>(),
    ) {
        let (s, hs) = sw_signed(&body);
        let name = ["webhook-signature", "webhook-timestamp", "webhook-id"][which];
        let map = flip_header(&hs, name, bit);
        prop_assume!(map.is_some());
        let map = map.expect("checked");
        prop_assert!(check(&s, &map, &body, "/", at(NOW)).is_err(), "flipped {}", name);
    }

    #[test]
    fn flipping_any_bit_of_a_stripe_slack_zoom_or_retell_header_is_rejected(
        which in 0usize..4,
        bit in any::<usize>(),
    ) {
        let preset = [Preset::Stripe, Preset::Slack, Preset::Zoom, Preset::Retell][which];
        let s = preset_spec(preset);
        let body = sample_body(preset);
        let hs = sign_request(&s, &body, at(NOW), URL).expect("sign");
        for (name, _) in hs.iter().filter(|(k, _)| k != "Content-Type") {
            if let Some(map) = flip_header(&hs, name, bit) {
                prop_assert!(check(&s, &map, &body, "/", at(NOW)).is_err(), "{} {}", preset.name(), name);
            }
        }
    }

    #[test]
    fn tolerance_edges_accept_exactly_at_and_reject_one_second_past(
        tolerance in 1u64..100_000,
        ahead in any::<bool>(),
    ) {
        let mut s = preset_spec(Preset::StandardWebhooks);
        s.tolerance = tol(tolerance);
        let hs = sign_request(&s, EMPTY_OBJ, at(NOW), URL).expect("sign");
        let map = owned_headers(&hs);
        let t = i64::try_from(tolerance).expect("small");
        let (edge, past, why) = if ahead {
            (NOW - t, NOW - t - 1, Rejection::FutureTimestamp)
        } else {
            (NOW + t, NOW + t + 1, Rejection::StaleTimestamp)
        };
        prop_assert!(check(&s, &map, EMPTY_OBJ, "/", at(edge)).is_ok());
        prop_assert_eq!(check(&s, &map, EMPTY_OBJ, "/", at(past)).err(), Some(why));
    }

    #[test]
    fn millisecond_schemes_have_the_same_edges_in_milliseconds(tolerance in 1u64..10_000) {
        let mut s = preset_spec(Preset::Retell);
        s.tolerance = tol(tolerance);
        let now_ms = NOW * 1000 + 123;
        let hs = sign_request(&s, EMPTY_OBJ, at_ms(now_ms), URL).expect("sign");
        let map = owned_headers(&hs);
        let t = i64::try_from(tolerance).expect("small") * 1000;
        prop_assert!(check(&s, &map, EMPTY_OBJ, "/", at_ms(now_ms + t)).is_ok());
        prop_assert_eq!(check(&s, &map, EMPTY_OBJ, "/", at_ms(now_ms + t + 1)).err(), Some(Rejection::StaleTimestamp));
        prop_assert!(check(&s, &map, EMPTY_OBJ, "/", at_ms(now_ms - t)).is_ok());
        prop_assert_eq!(check(&s, &map, EMPTY_OBJ, "/", at_ms(now_ms - t - 1)).err(), Some(Rejection::FutureTimestamp));
    }

    /// The parsers the fuzz targets drive, over arbitrary text: they must return, not panic.
    #[test]
    fn parsers_never_panic(text in ".{0,300}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parsers::parse_stripe_header(&text);
        let _ = parsers::parse_retell_header(&text);
        let _ = parsers::parse_standard_webhooks_signatures(&text);
        let _ = parsers::parse_plivo_signatures(&text);
        let _ = parsers::parse_vonage_jwt(&text);
        let _ = parsers::parse_basic(&text);
        let _ = parsers::parse_forwarded_entry(&text);
        let _ = parsers::parse_telnyx_public_key(&bytes);
        let _ = parsers::zoom_url_validation_token(&bytes);
        let _ = parsers::Template::parse(&text);
    }

    /// Arbitrary header values through every preset's verifier: always a rejection, never a
    /// panic (a panic would be a 500 to the sender).
    #[test]
    fn arbitrary_headers_are_rejected_by_every_preset(
        values in proptest::collection::vec(proptest::collection::vec(32u8..127, 0..120), 8),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let names = [
            "authorization", "webhook-signature", "webhook-timestamp", "webhook-id",
            "stripe-signature", "x-retell-signature", "x-twilio-signature", "telnyx-signature-ed25519",
        ];
        let mut map = HeaderMap::new();
        for (n, v) in names.iter().zip(&values) {
            if let Ok(hv) = HeaderValue::from_bytes(v) {
                map.insert(HeaderName::from_static(n), hv);
            }
        }
        for preset in Preset::ALL {
            let s = preset_spec(*preset);
            prop_assert!(check(&s, &map, &body, "/hooks/src?x=1", at(NOW)).is_err(), "{}", preset.name());
        }
    }

    #[test]
    fn templates_that_parse_render_their_literals(lit in "[a-z.:|]{0,10}") {
        let t = parsers::Template::parse(&format!("{lit}{{timestamp}}{lit}{{body}}")).expect("parses");
        prop_assert!(t.parts().contains(&parsers::Part::Body));
    }
}

//! Every preset's sample (from `shared/reference/`) normalizes to the expected canonical fields;
//! malformed authentic bodies give a reason that names no payload content.

use chrono::TimeZone;
use serde_json::json;

use super::*;
use wardhook_sdk::Caller;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
        .single()
        .expect("time")
}

fn run(envelope: Envelope, body: &str) -> Result<Normalized, NormalizeError> {
    normalize(
        &IntakeInput::for_test("src", envelope, body.as_bytes()),
        now(),
    )
}

pub(crate) const NEXTPHONE_SAMPLE: &str = r#"{"event":"call.ended","timestamp":"2026-01-02T15:30:00Z","data":{"call_id":"call_abc123","caller":{"phone":"+15551234567","name":"John Doe","email":"john@example.com"},"call_type":"quote_request","duration_seconds":180,"transcript":"Full conversation transcript...","ai_summary":"Customer requested quote for kitchen remodel...","custom_fields":{"service_type":"remodeling","budget":"$15,000-$20,000","timeline":"next 3 months"}}}"#;

#[test]
fn nextphone_sample_normalizes_to_canonical_fields() {
    let n = run(Envelope::NextPhone, NEXTPHONE_SAMPLE).expect("normalizes");
    assert_eq!(n.event_type.as_str(), "call.ended");
    assert_eq!(n.call_id.as_deref(), Some("call_abc123"));
    assert_eq!(n.caller.phone.as_deref(), Some("+15551234567"));
    assert_eq!(n.caller.name.as_deref(), Some("John Doe"));
    assert_eq!(n.caller.email.as_deref(), Some("john@example.com"));
    assert_eq!(
        n.occurred_at,
        Utc.with_ymd_and_hms(2026, 1, 2, 15, 30, 0).single()
    );
    assert_eq!(n.data["custom_fields"]["budget"], "$15,000-$20,000");
    assert_eq!(
        n.dedup,
        DedupKey::EventOfCall {
            event_type: "call.ended".into(),
            call_id: "call_abc123".into()
        }
    );
    assert_eq!(n.received_at, now());
}

#[test]
fn phoneshield_sample_normalizes_and_does_not_dedup_on_the_configuration_id() {
    let body = r#"{ "event_type": "call.completed", "timestamp": "2025-04-30T15:23:47Z", "version": "1.0", "environment": "production", "webhook_id": "whk_12345abcdef", "data": { "call_id": "call_9876543210", "phone_number": "+15551234567", "caller_number": "+15559876543", "caller_name": "John Smith", "duration_seconds": 135, "summary": "John called about his order", "metadata": { "customer_id": "cust_987654" } } }"#;
    let n = run(Envelope::PhoneShield, body).expect("normalizes");
    assert_eq!(n.event_type.as_str(), "call.completed");
    assert_eq!(n.call_id.as_deref(), Some("call_9876543210"));
    assert_eq!(n.caller.phone.as_deref(), Some("+15559876543"));
    assert_eq!(n.caller.name.as_deref(), Some("John Smith"));
    assert_eq!(
        n.occurred_at,
        Utc.with_ymd_and_hms(2025, 4, 30, 15, 23, 47).single()
    );
    assert!(matches!(n.dedup, DedupKey::EventOfCall { .. }));
}

#[test]
fn retell_sample_normalizes_with_millisecond_timestamps() {
    let body = r#"{"event":"call_ended","call":{"call_type":"phone_call","from_number":"+12137771234","to_number":"+12137771235","direction":"inbound","call_id":"Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6","agent_id":"oBeDLoLOeuAbiuaMFXRtDOLriTJ5tSxD","call_status":"registered","metadata":{},"retell_llm_dynamic_variables":{"customer_name":"John Doe"},"start_timestamp":1714608475945,"end_timestamp":1714608491736,"disconnection_reason":"user_hangup","transcript":"..."}}"#;
    let n = run(Envelope::Retell, body).expect("normalizes");
    assert_eq!(n.event_type.as_str(), "call_ended");
    assert_eq!(
        n.call_id.as_deref(),
        Some("Jabr9TXYYJHfvl6Syypi88rdAHYHmcq6")
    );
    assert_eq!(n.caller.phone.as_deref(), Some("+12137771234"));
    assert_eq!(n.caller.name.as_deref(), Some("John Doe"));
    assert_eq!(
        n.occurred_at,
        Utc.timestamp_millis_opt(1714608491736).single()
    );
    assert_eq!(n.data["disconnection_reason"], "user_hangup");
}

#[test]
fn vapi_sample_normalizes_from_the_message_envelope() {
    let body = r#"{"message":{"type":"end-of-call-report","endedReason":"customer-ended-call","call":{"id":"call-7f3a"},"customer":{"number":"+14155550100"},"phoneNumber":{"number":"+18005550199"},"artifact":{"transcript":"hi","messages":[]},"analysis":{"summary":"s","structuredData":{}},"startedAt":"2026-11-22T10:00:00Z","endedAt":"2026-11-22T10:05:00Z","cost":0.12,"timestamp":"2026-11-22T10:05:01Z"}}"#;
    let n = run(Envelope::Vapi, body).expect("normalizes");
    assert_eq!(n.event_type.as_str(), "end-of-call-report");
    assert_eq!(n.call_id.as_deref(), Some("call-7f3a"));
    assert_eq!(n.caller.phone.as_deref(), Some("+14155550100"));
    assert_eq!(
        n.occurred_at,
        Utc.with_ymd_and_hms(2026, 11, 22, 10, 5, 1).single()
    );
}

#[test]
fn telnyx_sample_normalizes_and_dedups_on_the_event_id() {
    let body = r#"{"data":{"record_type":"event","event_type":"call.hangup","id":"0ccc7b54-4df3-4bca-a65a-3da1ecc777f0","occurred_at":"2018-02-02T22:25:27.521992Z","payload":{"call_control_id":"v3:MdI91X4","call_leg_id":"428c31b6-1","call_session_id":"428c31b6-2","client_state":"aGF2ZSBhIG5pY2UgZGF5ID1d","from":"+35319605860","to":"+35319605861","hangup_cause":"call_rejected","hangup_source":"caller","sip_hangup_cause":"603"}}}"#;
    let n = run(Envelope::Telnyx, body).expect("normalizes");
    assert_eq!(n.event_type.as_str(), "call.hangup");
    assert_eq!(n.call_id.as_deref(), Some("428c31b6-2"));
    assert_eq!(n.caller.phone.as_deref(), Some("+35319605860"));
    assert_eq!(
        n.dedup,
        DedupKey::SenderDeliveryId("0ccc7b54-4df3-4bca-a65a-3da1ecc777f0".into())
    );
    assert_eq!(n.data["hangup_cause"], "call_rejected");
}

#[test]
fn twilio_form_encoded_status_callback_normalizes() {
    let body = "CallSid=CA1234567890ABCDE&AccountSid=AC1&From=%2B14158675309&To=%2B18005551212&CallStatus=completed&CallDuration=2&Timestamp=Tue%2C%2010%20Jan%202023%2018%3A33%3A19%20%2B0000&CallbackSource=call-progress-events&SequenceNumber=0";
    let n = run(Envelope::Twilio, body).expect("normalizes");
    assert_eq!(n.event_type.as_str(), "completed");
    assert_eq!(n.call_id.as_deref(), Some("CA1234567890ABCDE"));
    assert_eq!(n.caller.phone.as_deref(), Some("+14158675309"));
    assert_eq!(
        n.occurred_at,
        Utc.with_ymd_and_hms(2023, 1, 10, 18, 33, 19).single()
    );
    assert_eq!(n.data["CallDuration"], "2");
}

#[test]
fn standard_webhooks_dedups_on_the_webhook_id_header() {
    let body = r#"{"type":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{"call_id":"c-1","caller":{"phone":"+1555"}}}"#;
    let input = IntakeInput::for_test("sw", Envelope::StandardWebhooks, body.as_bytes())
        .with_sender_delivery_id("msg_p5jXN8AQM9LWM0D4loKWxJek");
    let n = normalize(&input, now()).expect("normalizes");
    assert_eq!(n.event_type.as_str(), "call.ended");
    assert_eq!(n.call_id.as_deref(), Some("c-1"));
    assert_eq!(n.caller.phone.as_deref(), Some("+1555"));
    assert_eq!(
        n.dedup,
        DedupKey::SenderDeliveryId("msg_p5jXN8AQM9LWM0D4loKWxJek".into())
    );
}

#[test]
fn generic_envelope_falls_back_to_a_body_hash_and_a_default_event_type() {
    let n = run(Envelope::Generic, r#"{"anything":1}"#).expect("normalizes");
    assert_eq!(n.event_type.as_str(), "webhook");
    assert!(matches!(n.dedup, DedupKey::BodySha256(_)));
    assert_eq!(n.data, json!({"anything": 1}));
}

#[test]
fn unknown_preset_names_map_to_the_generic_envelope() {
    assert_eq!(Envelope::for_preset_name("zoom"), Envelope::Generic);
    assert_eq!(Envelope::for_preset_name("nextphone"), Envelope::NextPhone);
    assert_eq!(
        Envelope::for_preset_name("standard-webhooks"),
        Envelope::StandardWebhooks
    );
}

#[test]
fn extra_fields_are_tolerated_and_optional_ones_may_be_missing() {
    let n = run(
        Envelope::NextPhone,
        r#"{"event":"message.collected","extra":[1,2],"data":{"unknown":{"deep":true}}}"#,
    )
    .expect("normalizes");
    assert_eq!(n.call_id, None);
    assert_eq!(n.caller, Caller::default());
    assert!(matches!(n.dedup, DedupKey::BodySha256(_)));
}

#[test]
fn malformed_authentic_bodies_are_refused_with_a_reason_that_quotes_nothing() {
    let secret = "SECRET-PHI-John-Doe";
    let cases: &[(Envelope, String, &str)] = &[
        (
            Envelope::NextPhone,
            format!("{{\"event\": \"{secret}"),
            "truncated JSON",
        ),
        (Envelope::NextPhone, format!("[\"{secret}\"]"), "array body"),
        (
            Envelope::NextPhone,
            format!("{{\"data\":{{\"n\":\"{secret}\"}}}}"),
            "no event",
        ),
        (
            Envelope::NextPhone,
            format!("{{\"event\":\"{secret} with spaces\u{e9}\",\"data\":{{}}}}"),
            "free-text event",
        ),
        (
            Envelope::NextPhone,
            "{\"event\":\"call.ended\"}".into(),
            "no data",
        ),
        (
            Envelope::PhoneShield,
            format!("{{\"event\":\"call.ended\",\"data\":{{\"x\":\"{secret}\"}}}}"),
            "wrong envelope",
        ),
        (
            Envelope::Vapi,
            "{\"message\":{\"type\":7}}".into(),
            "event type not a string",
        ),
        (
            Envelope::Retell,
            "{\"event\":\"call_ended\",\"call\":{}}".into(),
            "no call id",
        ),
        (Envelope::Twilio, format!("From={secret}"), "no CallSid"),
        (Envelope::Telnyx, "\u{fe}\u{ff}".into(), "not JSON"),
    ];
    for (envelope, body, case) in cases {
        let err = run(*envelope, body).expect_err(case);
        let text = err.to_string();
        assert!(
            !text.contains("SECRET"),
            "{case}: message quotes payload: {text}"
        );
        assert!(
            !text.contains("John"),
            "{case}: message quotes payload: {text}"
        );
    }
}

#[test]
fn two_events_of_one_call_have_different_dedup_keys() {
    let a = run(
        Envelope::NextPhone,
        r#"{"event":"call.answered","data":{"call_id":"c1"}}"#,
    )
    .expect("a");
    let b = run(
        Envelope::NextPhone,
        r#"{"event":"call.ended","data":{"call_id":"c1"}}"#,
    )
    .expect("b");
    assert_ne!(a.dedup.index_material(), b.dedup.index_material());
}

#[test]
fn event_types_that_are_not_identifiers_are_refused_with_a_reason_that_quotes_nothing() {
    let cases: &[(&str, &str)] = &[
        ("Jane Roe DOB 1980 positive", "a sentence (spaces)"),
        ("", "empty"),
        ("   ", "only white space"),
        (".hidden", "leading punctuation"),
        ("-x", "leading dash"),
        ("call.ended\n", "ok once trimmed, see below"),
        ("call\tended", "a tab inside"),
        ("call,ended", "a comma"),
        ("\"quoted\"", "quotes"),
        ("caller=jane", "an equals sign"),
        ("Zoë.call", "non-ASCII"),
        ("call<script>", "angle brackets"),
        ("a@b.example", "an e-mail address"),
        ("(555)0100", "brackets"),
    ];
    for (text, why) in cases {
        let result = EventType::parse(text);
        if *text == "call.ended\n" {
            assert_eq!(result.map(|e| e.0), Ok("call.ended".to_owned()), "{why}");
            continue;
        }
        let err = result.expect_err(why);
        assert_eq!(err.code(), "bad_event_type", "{why}");
        let message = err.to_string();
        assert!(
            text.trim().is_empty() || !message.contains(text.trim()),
            "{why}: the reason must not quote the value: {message}"
        );
    }
    let too_long = "a".repeat(EventType::MAX_LEN + 1);
    assert!(EventType::parse(&too_long).is_err());
    assert!(EventType::parse(&"a".repeat(EventType::MAX_LEN)).is_ok());
}

#[test]
fn every_preset_event_type_in_the_wild_is_an_identifier() {
    for text in [
        "call.ended",
        "call_ended",
        "end-of-call-report",
        "call.hangup",
        "completed",
        "in-progress",
        "invoice.paid",
        "urn:example:call/ended",
        "webhook",
        "CallCompleted",
        "v2/call.ended",
        "/restapi/v1.0/account/~/extension/~/telephony/sessions",
        "/restapi/v1.0/account/37439510/extension/2345678901/telephony/sessions",
    ] {
        assert!(EventType::parse(text).is_ok(), "{text}");
    }
}

#[test]
fn a_sentence_sent_as_the_event_type_is_quarantined_not_normalized() {
    let body = r#"{"event":"Jane Roe DOB 1980 positive","data":{"call_id":"c-1"}}"#;
    let err = run(Envelope::NextPhone, body).expect_err("must not normalize");
    assert_eq!(err.code(), "bad_event_type");
    assert!(!err.to_string().contains("Jane"));
}

#[test]
fn a_generic_chat_message_string_is_not_taken_as_the_event_type() {
    let n = run(
        Envelope::Generic,
        r#"{"message":"Hi, this is Jane Roe calling about my results"}"#,
    )
    .expect("normalizes");
    assert_eq!(n.event_type.as_str(), "webhook");
    let n = run(Envelope::Generic, r#"{"message":{"type":"status-update"}}"#).expect("object");
    assert_eq!(n.event_type.as_str(), "status-update");
}

#[test]
fn timestamps_at_the_ends_of_the_number_range_are_ignored_not_a_panic() {
    // Found by the normalize_bodies fuzz target: -1.1e19 saturates to i64::MIN, whose `abs`
    // overflowed.
    for body in [
        r#"{"created_at": -11111111111111111111}"#,
        r#"{"timestamp": -9223372036854775808}"#,
        r#"{"timestamp": 9223372036854775807}"#,
        r#"{"occurred_at": 1e308}"#,
        r#"{"timestamp": "-9223372036854775808"}"#,
    ] {
        let n = run(Envelope::Generic, body).expect("normalizes");
        assert_eq!(n.occurred_at, None, "{body}");
    }
}

/// Each envelope's data is the whole part of the body it names (moved out of the parsed body,
/// not rebuilt), and `null` where that part is absent.
#[test]
fn data_is_the_part_of_the_body_each_envelope_names() {
    let cases: [(Envelope, String, &str); 10] = [
        (Envelope::NextPhone, NEXTPHONE_SAMPLE.to_owned(), "/data"),
        (
            Envelope::PhoneShield,
            r#"{"event_type":"call.completed","timestamp":"2026-01-02T15:30:00Z","data":{"call_id":"p1","caller_number":"+1555","x":[1,{"y":null}]}}"#.to_owned(),
            "/data",
        ),
        (
            Envelope::Retell,
            r#"{"event":"call_ended","call":{"call_id":"r1","from_number":"+1555","direction":"inbound","n":1.5}}"#.to_owned(),
            "/call",
        ),
        (
            Envelope::Vapi,
            r#"{"message":{"type":"end-of-call-report","call":{"id":"v1"},"customer":{"number":"+1555"}},"other":1}"#.to_owned(),
            "/message",
        ),
        (
            Envelope::Telnyx,
            r#"{"data":{"event_type":"call.hangup","id":"t1","payload":{"call_session_id":"s1","from":"+1555","deep":{"a":[true]}}}}"#.to_owned(),
            "/data/payload",
        ),
        (
            Envelope::Telnyx,
            r#"{"data":{"event_type":"call.hangup","id":"t2"}}"#.to_owned(),
            "/data/payload",
        ),
        (
            Envelope::StandardWebhooks,
            r#"{"type":"call.ended","timestamp":"2026-01-02T15:30:00Z","data":{"call_id":"s1","k":"v"}}"#.to_owned(),
            "/data",
        ),
        (
            Envelope::StandardWebhooks,
            r#"{"type":"call.ended","data":"just text"}"#.to_owned(),
            "/data",
        ),
        (
            Envelope::Generic,
            r#"{"event":"x","data":{"call_id":"g1","k":[1,2]}}"#.to_owned(),
            "/data",
        ),
        (
            Envelope::Generic,
            r#"{"event":"x","data":"not an object","call_id":"g2"}"#.to_owned(),
            "",
        ),
    ];
    for (envelope, body, path) in cases {
        let n = run(envelope, &body).expect("normalizes");
        let whole: serde_json::Value = serde_json::from_str(&body).expect("json");
        let expected = whole
            .pointer(path)
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        assert_eq!(n.data, expected, "{envelope:?} {path}");
    }
}

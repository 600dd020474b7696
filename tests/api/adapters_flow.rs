//! The issue-6 flow end to end, with `config/clinic.toml`'s own handlers and routes: a NextPhone
//! `call.ended` quote request reaches HubSpot (contact + note), Slack (no PHI) and a
//! confirmation e-mail; an emergency call reaches the e-mail handler only. HubSpot and Slack
//! are local servers answering like the real APIs; e-mail goes to a real SMTP server
//! (aiosmtpd) on loopback.
#![allow(clippy::unwrap_used)]

#[path = "../../handlers/email/tests/support/sink.rs"]
pub(crate) mod sink;

use serde_json::{json, Value};
use wardhook::dispatch::worker::TaskOutcome;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;
use sink::{SinkTls, SmtpSink};

const SLACK_HOOK: &str = "/services/T0CLINIC/B0FRONT/XXXX";

/// `config/clinic.toml` from its first `[[handlers]]` on, pointed at the local stand-ins: the
/// HubSpot base URL, the SMTP relay (plain on loopback, no AUTH) and the `demo` source.
fn clinic_handlers_and_routes(hubspot: &str, smtp_port: u16) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/clinic.toml"))
        .unwrap();
    let start = text.find("[[handlers]]").unwrap();
    let mut tail = text[start..].to_owned();
    for (from, to) in [
        (
            "base_url = \"https://api.hubapi.com\"".to_owned(),
            format!("base_url = \"{hubspot}\""),
        ),
        (
            "host = \"smtp.clinic.example\"\nport = 587\nsecurity = \"starttls\"\nusername = \"wardhook@clinic.example\"\npassword = \"env:SMTP_PASSWORD\"".to_owned(),
            format!("host = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"plain\""),
        ),
        ("source = \"nextphone\"".to_owned(), "source = \"demo\"".to_owned()),
    ] {
        assert!(tail.contains(&from), "config/clinic.toml no longer has {from:?}");
        tail = tail.replace(&from, &to);
    }
    tail
}

async fn drain(app: &TestApp) -> Vec<TaskOutcome> {
    let mut out = Vec::new();
    for _ in 0..50 {
        match app.dispatcher.try_execute_task().await.unwrap() {
            TaskOutcome::Idle => return out,
            o => out.push(o),
        }
    }
    panic!("queue never went idle: {out:?}");
}

#[tokio::test]
async fn a_quote_request_reaches_hubspot_slack_and_email_and_an_emergency_only_email() {
    let hubspot = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts/search"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"total": 0, "results": []})))
        .mount(&hubspot)
        .await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/contacts"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "601"})))
        .mount(&hubspot)
        .await;
    Mock::given(method("POST"))
        .and(path("/crm/v3/objects/notes"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "701"})))
        .mount(&hubspot)
        .await;
    let slack = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SLACK_HOOK))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .mount(&slack)
        .await;
    let Some(smtp) = SmtpSink::start(SinkTls::None) else {
        return;
    };
    std::env::set_var("HUBSPOT_TOKEN", "pat-na1-clinic");
    std::env::set_var("SLACK_WEBHOOK_URL", format!("{}{SLACK_HOOK}", slack.uri()));
    let app = spawn_app_with(AppOptions {
        extra: format!(
            "[dispatch]\nworkers = 0\n{}",
            clinic_handlers_and_routes(&hubspot.uri(), smtp.port)
        ),
        ..AppOptions::default()
    })
    .await;

    let quote = r#"{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{"call_id":"call_quote_1","caller":{"phone":"+15551234567","name":"Dana Smith","email":"dana@example.com"},"call_type":"quote_request","duration_seconds":180,"transcript":"secret transcript","ai_summary":"Wants a quote for whitening","custom_fields":{"service_type":"teeth whitening","company_name":"Smith Family"}}}"#;
    let emergency = r#"{"event":"call.ended","timestamp":"2026-11-22T10:05:00Z","data":{"call_id":"call_emerg_1","caller":{"phone":"+15550199","name":"Sam Lee","email":"sam@example.com"},"call_type":"emergency","duration_seconds":60,"ai_summary":"Severe tooth pain and swelling"}}"#;
    let quote_id = deliver(&app, quote).await;
    let emergency_id = deliver(&app, emergency).await;

    let steps = drain(&app).await;
    assert_eq!(
        steps.len(),
        4,
        "3 handlers for the quote request, 1 for the emergency: {steps:?}"
    );
    assert!(
        steps.iter().all(|s| matches!(s, TaskOutcome::Done { .. })),
        "{steps:?}"
    );

    // HubSpot: search by e-mail, create, note — for the quote request only.
    let hs = hubspot.received_requests().await.unwrap();
    assert_eq!(hs.len(), 3, "the emergency call never reached HubSpot");
    let body = |i: usize| -> Value { serde_json::from_slice(&hs[i].body).unwrap() };
    assert_eq!(
        body(0)["filterGroups"][0]["filters"][0],
        json!({"propertyName": "email", "operator": "EQ", "value": "dana@example.com"})
    );
    assert_eq!(
        body(1),
        json!({"properties": {
            "firstname": "Dana", "lastname": "Smith", "phone": "+15551234567",
            "email": "dana@example.com", "company": "Smith Family", "lead_source": "AI Receptionist"
        }})
    );
    assert_eq!(
        hs[1].headers.get("authorization").unwrap(),
        "Bearer pat-na1-clinic"
    );
    assert_eq!(
        body(2)["properties"]["hs_note_body"],
        format!(
            "<p><strong>AI call summary</strong> (call.ended, call call_quote_1)</p>\
             <p>Wants a quote for whitening</p><p>wardhook ref {quote_id}:hubspot</p>"
        )
    );
    assert_eq!(body(2)["associations"][0]["to"]["id"], "601");

    // Slack: one message, the quote request's, without PHI, linking to the delivery.
    let sl = slack.received_requests().await.unwrap();
    assert_eq!(sl.len(), 1, "the emergency call never reached Slack");
    let msg: Value = serde_json::from_slice(&sl[0].body).unwrap();
    assert_eq!(msg["text"], "New quote request (call.ended)");
    assert_eq!(
        msg["blocks"][4]["text"]["text"],
        format!("<https://wardhook.clinic.example:9443/deliveries/{quote_id}|Open delivery {quote_id}> in wardhook")
    );
    assert_eq!(
        msg["blocks"][3]["elements"][0]["text"],
        "source `demo` · call `call_quote_1` · duration 180 s"
    );
    let text = msg.to_string();
    for phi in [
        "Dana",
        "+15551234567",
        "dana@example.com",
        "whitening",
        "secret transcript",
    ] {
        assert!(!text.contains(phi), "{phi} reached Slack");
    }

    // E-mail: the quote confirmation and the emergency confirmation, nothing else.
    let mails = smtp.wait_for(2);
    assert_eq!(mails.len(), 2);
    let quote_mail = mails
        .iter()
        .find(|m| m.headers["subject"] == "Thanks for your quote request")
        .unwrap();
    assert_eq!(quote_mail.mail_from, "frontdesk@clinic.example");
    assert_eq!(
        quote_mail.rcpt_tos,
        ["dana@example.com", "frontdesk@clinic.example"]
    );
    assert_eq!(quote_mail.headers["to"], "dana@example.com");
    assert_eq!(
        quote_mail.headers["from"],
        "Northside Dental <frontdesk@clinic.example>"
    );
    assert_eq!(
        quote_mail.headers["message-id"],
        format!("<{quote_id}.quote-confirmation@wardhook.invalid>")
    );
    let quote_text = quote_mail.text.as_deref().unwrap().replace("\r\n", "\n");
    assert!(
        quote_text.starts_with("Hi Dana Smith,\n\nThanks for calling about teeth whitening.\n"),
        "{quote_text}"
    );
    assert!(quote_mail
        .html
        .as_deref()
        .unwrap()
        .contains("<p>Hi Dana Smith,</p>"));

    let emergency_mail = mails
        .iter()
        .find(|m| m.headers["subject"] == "Emergency service confirmation")
        .unwrap();
    assert_eq!(
        emergency_mail.rcpt_tos,
        ["sam@example.com", "oncall@clinic.example"]
    );
    assert_eq!(emergency_mail.headers["to"], "sam@example.com");
    assert!(!emergency_mail.headers.contains_key("bcc"));
    assert_eq!(
        emergency_mail.headers["message-id"],
        format!("<{emergency_id}.emergency-email@wardhook.invalid>")
    );
    let emergency_text = emergency_mail
        .text
        .as_deref()
        .unwrap()
        .replace("\r\n", "\n");
    assert!(
        emergency_text.starts_with("We received your urgent call (call_emerg_1) and the on-call clinician has been alerted.\nThey will call you back at +15550199 within 20 minutes."),
        "{emergency_text}"
    );
}
